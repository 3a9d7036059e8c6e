//! Follows Docker's event stream: container start/die of the configured
//! services become [`Command::ContainerEvent`]s, daemon loss and return
//! become [`Command::DockerUnreachable`] / [`Command::DockerBack`],
//! network creation/removal is reported to a separate callback (so the
//! agent can attach to new bridges), and so is the creation or removal of
//! a container labelled `autostop.enable` (so the agent scans the labels
//! again at once).
//!
//! A `die` with exit code 0 that no `kill` preceded is a one-shot container
//! finishing (e.g. a migration job): it is not reported, so the service is
//! neither failed nor restarted in a loop. `docker stop` always sends `kill`
//! first, so stops by hand are still reported.
//!
//! The stream has no timeout (it is silent while nothing happens). Instead
//! it is reconnected: when it ends or fails, and when a ping during a quiet
//! spell ([`QUIET_CHECK`]) goes unanswered (a wedged or half-dead
//! connection). A reconnection asks for the events since the last one seen,
//! so a short gap loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::project::{trim_dir, ProjectId};
use super::resolve::LABEL_ONEOFF;
use super::runtime::DockerRuntime;
use crate::config::{labels::LABEL_ENABLE, ServiceConfig, Target};
use crate::service::{Command, ContainerEvent};

/// Receives `(service name, command)`; must not block (e.g. `try_send` on
/// the service's handle).
pub type EventSink = Arc<dyn Fn(&str, Command) + Send + Sync>;
/// Receives network events; must not block.
pub type NetworkSink = Arc<dyn Fn(NetworkEvent) + Send + Sync>;
/// Told that a container labelled `autostop.enable` was created, removed
/// or renamed, or that the daemon went away or came back (the labelled
/// services may have changed, or a scan will say Docker is gone); must not
/// block.
pub type LabelSink = Arc<dyn Fn() + Send + Sync>;

/// Longest wait between reconnection attempts.
pub const EVENT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First wait after the daemon stops answering.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// A `kill` this recent makes the following `die` a stop, not a completion.
const KILL_MEMORY: Duration = Duration::from_secs(120);
/// After this long without an event, the daemon is pinged; no answer
/// drops the stream and reconnects.
pub const QUIET_CHECK: Duration = Duration::from_secs(30);

/// A Docker network appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// A network was created.
    Created {
        /// Network id.
        id: String,
        /// Network name.
        name: String,
        /// Its bridge interface (bridge driver only).
        bridge: Option<String>,
    },
    /// A network was removed.
    Destroyed {
        /// Network id.
        id: String,
        /// Network name.
        name: String,
    },
}

/// The events API's `since` for "after `time_nano`" (seconds.nanoseconds).
fn since_param(time_nano: i64) -> String {
    format!(
        "{}.{:09}",
        time_nano.div_euclid(1_000_000_000),
        time_nano.rem_euclid(1_000_000_000)
    )
}

/// Services a container (by its event attributes, which carry its labels)
/// belongs to. A compose service's container must carry the labels of the
/// project the service was last resolved to (`projects`; before its first
/// resolution, any project compose made in its directory): an event of a
/// container that merely carries its working directory is not its.
pub fn services_of(
    services: &[ServiceConfig],
    projects: &HashMap<String, ProjectId>,
    id: &str,
    attrs: &HashMap<String, String>,
) -> Vec<String> {
    let name = attrs.get("name").map(String::as_str).unwrap_or_default();
    let oneoff = attrs.get(LABEL_ONEOFF).map(String::as_str) == Some("True");
    let claimed = ProjectId::of(attrs).ok();
    services
        .iter()
        .filter(|s| match &s.target {
            Target::Containers(names) => names.iter().any(|n| n == name || n == id),
            Target::ComposeDir(dir) => {
                let dir = dir.display().to_string();
                let Some(claimed) = claimed.as_ref().filter(|_| !oneoff) else {
                    return false;
                };
                match projects.get(&s.name) {
                    Some(project) => project.differs(claimed).is_none(),
                    None => claimed.working_dir == trim_dir(&dir),
                }
            }
        })
        .map(|s| s.name.clone())
        .collect()
}

/// Spawns the watcher; it ends when `shutdown` is cancelled.
pub fn spawn_event_watcher(
    runtime: Arc<DockerRuntime>,
    sink: EventSink,
    networks: Option<NetworkSink>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    spawn_watcher(runtime, sink, networks, None, shutdown)
}

/// Spawns the watcher, also telling `labelled` about labelled containers
/// created or removed; it ends when `shutdown` is cancelled.
pub fn spawn_watcher(
    runtime: Arc<DockerRuntime>,
    sink: EventSink,
    networks: Option<NetworkSink>,
    labelled: Option<LabelSink>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut w = Watcher {
            runtime,
            sink,
            networks,
            labelled,
            kills: HashMap::new(),
            last_event: None,
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = w.run() => {}
        }
    })
}

struct Watcher {
    runtime: Arc<DockerRuntime>,
    sink: EventSink,
    networks: Option<NetworkSink>,
    labelled: Option<LabelSink>,
    kills: HashMap<String, Instant>,
    /// `timeNano` of the newest event handled: a reconnection resumes
    /// after it.
    last_event: Option<i64>,
}

impl Watcher {
    fn labels_may_have_changed(&self) {
        if let Some(labelled) = &self.labelled {
            labelled();
        }
    }

    fn broadcast(&self, cmd: &Command) {
        for s in self.runtime.services() {
            (self.sink)(&s.name, cmd.clone());
        }
    }

    async fn run(&mut self) {
        let mut reachable = true;
        let mut backoff = BACKOFF_START;
        loop {
            if let Err(e) = self.runtime.client().ping().await {
                if reachable {
                    warn!(event = "docker_unreachable", error = %e);
                    self.broadcast(&Command::DockerUnreachable);
                    self.labels_may_have_changed();
                    reachable = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(EVENT_BACKOFF_MAX);
                continue;
            }
            let filters = HashMap::from([
                ("type", vec!["container", "network"]),
                (
                    "event",
                    vec!["start", "die", "kill", "create", "destroy", "rename"],
                ),
            ]);
            let mut opts = EventsOptionsBuilder::default().filters(&filters);
            let since = self.last_event.map(since_param);
            if let Some(since) = &since {
                opts = opts.since(since);
            }
            let mut stream = match self.runtime.client().events(opts.build()) {
                Ok(stream) => Box::pin(stream),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            if !reachable {
                info!(event = "docker_back");
                self.broadcast(&Command::DockerBack);
                self.labels_may_have_changed();
                reachable = true;
            }
            backoff = BACKOFF_START;
            loop {
                let item = match tokio::time::timeout(QUIET_CHECK, stream.next()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => {
                        debug!("docker event stream ended; reconnecting");
                        break;
                    }
                    Err(_) => match self.runtime.client().ping().await {
                        Ok(()) => continue,
                        Err(e) => {
                            debug!(error = %e, "docker quiet and not answering; reconnecting");
                            break;
                        }
                    },
                };
                match item {
                    Ok(ev) => self.handle(ev).await,
                    Err(e) => {
                        debug!(error = %e, "docker event stream failed; reconnecting");
                        break;
                    }
                }
            }
            // A stream the daemon keeps closing must not become a busy loop.
            tokio::time::sleep(BACKOFF_START).await;
        }
    }

    async fn handle(&mut self, ev: EventMessage) {
        // A resumed stream repeats events up to the resume point.
        if let (Some(at), Some(last)) = (ev.time_nano, self.last_event) {
            if at <= last {
                return;
            }
        }
        if ev.time_nano.is_some() {
            self.last_event = ev.time_nano;
        }
        let Some(actor) = ev.actor else { return };
        let id = actor.id.unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let action = ev.action.unwrap_or_default();
        match ev.typ {
            Some(EventMessageTypeEnum::CONTAINER) => self.container(&id, &attrs, &action),
            Some(EventMessageTypeEnum::NETWORK) => {
                let Some(sink) = &self.networks else { return };
                let name = attrs.get("name").cloned().unwrap_or_default();
                match action.as_str() {
                    "create" => {
                        let bridge = self.runtime.bridge(&id).await;
                        sink(NetworkEvent::Created { id, name, bridge });
                    }
                    "destroy" => sink(NetworkEvent::Destroyed { id, name }),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn container(&mut self, id: &str, attrs: &HashMap<String, String>, action: &str) {
        let now = Instant::now();
        self.kills
            .retain(|_, t| now.duration_since(*t) < KILL_MEMORY);
        let event = match action {
            "create" | "destroy" | "rename" => {
                if attrs.contains_key(LABEL_ENABLE) {
                    self.labels_may_have_changed();
                }
                return;
            }
            "kill" => {
                self.kills.insert(id.to_string(), now);
                return;
            }
            "start" => ContainerEvent::Started,
            "die" => {
                let code: Option<i64> = attrs.get("exitCode").and_then(|c| c.parse().ok());
                let killed = self.kills.remove(id).is_some();
                if code == Some(0) && !killed {
                    debug!(container = id, event = "container_completed");
                    return;
                }
                ContainerEvent::Died { exit_code: code }
            }
            _ => return,
        };
        let projects = self.runtime.projects();
        for svc in services_of(&self.runtime.services(), &projects, id, attrs) {
            (self.sink)(&svc, Command::ContainerEvent(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::since_param;

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            since_param(1_700_000_000_123_456_789),
            "1700000000.123456789"
        );
        assert_eq!(since_param(1_000_000_005), "1.000000005");
        assert_eq!(since_param(0), "0.000000000");
    }
}
