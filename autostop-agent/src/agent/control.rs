//! What the status API sees of the agent: [`AgentControl`] implements
//! [`Control`] (views, manual actions, health, metrics, problems) over the
//! published directory of services, what the state file's owner remembers
//! and the agent's health flags. It owns nothing the services need: every
//! value it shows has its own writer elsewhere.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use procfs::Current as _;
use tokio::sync::watch;

use super::{registry::DirectoryReader, registry::ServiceRecord, state_owner::StateHandle};
use crate::{
    api::{
        history, Action, Control, ControlError, Health, HibernationView, HistoryView,
        HostMemoryView, PrewarmView, ServiceView,
    },
    events::{EventHub, EventSender, Feed},
    metrics::Metrics,
    service::{ActivityProbe, Command, ManualCommand, ServiceState, StartBlock},
    state::unix_hour,
    supervisor::TaskBoard,
};

/// The agent's health, as its tasks last found it.
#[derive(Debug, Default)]
pub struct HealthFlags {
    /// Docker answered the last time the agent asked (endpoint refresher,
    /// Docker event stream).
    pub docker_reachable: AtomicBool,
    /// The kernel programs are attached (set once at start).
    pub datapath_attached: AtomicBool,
    /// Set once the endpoint refresher's first pass has asked Docker, so
    /// `docker_reachable` means something; [`Self::first_check`] waits
    /// for it.
    docker_checked: AtomicBool,
    /// Wakes [`Self::first_check`].
    checked: tokio::sync::Notify,
}

impl HealthFlags {
    /// Records what a pass over Docker found.
    pub fn docker_checked(&self, reachable: bool) {
        self.docker_reachable.store(reachable, Ordering::Relaxed);
        self.docker_checked.store(true, Ordering::Release);
        self.checked.notify_waiters();
    }

    /// Waits (at most `limit`) until Docker was asked once: before it,
    /// `/healthz` would say "unreachable" about a Docker nobody asked
    /// yet, so the API and the "running" line wait for it (issue #29).
    /// False when `limit` passed first.
    pub async fn first_check(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.checked.notified();
                if self.docker_checked.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// The status API's view of the agent.
pub struct AgentControl {
    /// The managed services.
    pub directory: DirectoryReader,
    /// What the state file remembers.
    pub state: StateHandle,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Docker and datapath health.
    pub health: Arc<HealthFlags>,
    /// Labelled services the last scan refused, and why.
    pub refusals: watch::Receiver<Vec<String>>,
    /// The long-lived tasks' states (`/healthz`).
    pub tasks: TaskBoard,
    /// The events stream: manual actions are told, subscribers served.
    pub events: (EventSender, EventHub),
    /// The kernel's activity stamps: a state machine reads them only at its
    /// idle deadline, so the view reads the latest itself.
    pub activity: Arc<dyn ActivityProbe>,
}

impl AgentControl {
    fn view(&self, record: &ServiceRecord) -> ServiceView {
        let status = record.handle.status();
        let config = &record.config;
        let now_wall = SystemTime::now();
        let kernel = (status.state == ServiceState::Ready)
            .then(|| self.activity.last_activity(&config.name))
            .flatten();
        let last_activity = status.last_activity.map(|at| at.into_std()).max(kernel);
        let idle_for = last_activity.map(|at| at.elapsed());
        let until_stop = match (&status.state, status.hold || !status.keep_awake.is_empty()) {
            (ServiceState::Ready, false) => {
                let idle = idle_for.unwrap_or_else(|| status.since.elapsed());
                Some(status.idle_timeout.saturating_sub(idle).as_secs())
            }
            _ => None,
        };
        let (starts_24h, last_start) = {
            let history = record.cells.history.borrow();
            (history.starts_24h(now_wall), history.last_start)
        };
        let memory = self.state.service(&config.name);
        let live = (status.state == ServiceState::Ready)
            .then(|| *record.cells.memory.borrow())
            .flatten();
        // `+ 0.0` turns a negative zero (rounding of tiny credits) into 0.
        let to_gb_h = |byte_seconds: f64| byte_seconds / 1e9 / 3600.0 + 0.0;
        let (start_block, retry_in) = start_block(status.start_block);
        let awake = record.cells.awake.borrow().clone();
        let max_held = u64::from(config.max_held_connections);
        let available = u64::try_from(record.held.available_permits()).unwrap_or(max_held);
        ServiceView {
            name: config.name.clone(),
            state: status.state.name(),
            state_for_s: status.since.elapsed().as_secs(),
            mode: config.mode.as_str().to_owned(),
            port: config.ports.first().map_or(0, |p| p.port),
            ports: config.ports.iter().map(ToString::to_string).collect(),
            idle_timeout_s: status.idle_timeout.as_secs(),
            held: max_held.saturating_sub(available),
            hold: status.hold,
            last_activity: last_activity
                .and_then(|at| now_wall.checked_sub(at.elapsed()))
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            idle_for_s: idle_for.map(|d| d.as_secs()),
            seconds_until_stop: until_stop,
            memory_bytes: live.map(|m| m.used_bytes),
            memory_limit_bytes: live.map(|m| m.limit_bytes),
            last_start_duration_s: last_start.map(|d| d.as_secs_f64()),
            average_start_duration_s: status.start_estimate.map(|d| d.as_secs_f64()),
            starts_24h,
            last_error: status.last_error.clone(),
            start_block: start_block.map(str::to_owned),
            retry_in_s: retry_in.map(|d| d.as_secs()),
            ram_saved_gb_h: to_gb_h(memory.memory_saved_byte_seconds),
            ram_saved_gb_h_24h: to_gb_h(memory.saved_last_24h(unix_hour(now_wall))),
            problems: record
                .cells
                .problems
                .borrow()
                .iter()
                .chain(record.cells.ports.borrow().iter())
                .cloned()
                .collect(),
            keep_awake: status.keep_awake.clone(),
            requires: config.wake.requires.clone(),
            needed_by: self
                .directory
                .snapshot()
                .iter()
                .filter(|r| r.config.wake.requires.contains(&config.name))
                .map(|r| r.name().to_owned())
                .collect(),
            keep_warm: config
                .wake
                .keep_warm
                .iter()
                .map(ToString::to_string)
                .collect(),
            keep_warm_until: awake.window_until.map(|t| t.to_string()),
            next_keep_warm: awake.next_window.map(|t| t.to_string()),
            next_prewarm: awake.next_prewarm.map(|p| PrewarmView {
                at: p.at.to_string(),
                expected: p.expected.to_string(),
                reason: p.reason,
            }),
            sleep: config.sleep.as_str().to_owned(),
            hibernation: status.hibernation.as_ref().map(|h| HibernationView {
                awake_bytes: h.awake,
                resident_bytes: h.resident,
                swap_bytes: h.swap,
                reclaimed: h.reclaimed,
                note: h.note.clone(),
            }),
        }
    }

    fn record(&self, name: &str) -> Result<Arc<ServiceRecord>, ControlError> {
        self.directory
            .get(name)
            .ok_or_else(|| ControlError::UnknownService(name.to_owned()))
    }
}

/// The view's name of a start block, and for a pending backoff the time
/// left (a backoff whose time has come blocks nothing).
fn start_block(block: Option<StartBlock>) -> (Option<&'static str>, Option<Duration>) {
    match block {
        Some(StartBlock::CrashLoop) => (Some("crash_loop"), None),
        Some(StartBlock::Backoff { retry_at }) => {
            let left = retry_at.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                (None, None)
            } else {
                (Some("backoff"), Some(left))
            }
        }
        None => (None, None),
    }
}

/// How long a set idle timeout waits for the service's machine to apply
/// it before answering.
const APPLY_WAIT: Duration = Duration::from_secs(2);

#[async_trait::async_trait]
impl Control for AgentControl {
    fn services(&self) -> Vec<ServiceView> {
        self.directory
            .snapshot()
            .iter()
            .map(|r| self.view(r))
            .collect()
    }

    fn service(&self, name: &str) -> Option<ServiceView> {
        self.directory.get(name).map(|r| self.view(&r))
    }

    async fn act(&self, name: &str, action: Action) -> Result<(), ControlError> {
        let record = self.record(name)?;
        let (command, said) = match action {
            Action::Start => (ManualCommand::Start, "start"),
            Action::Stop => (ManualCommand::Stop, "stop"),
            Action::Hold => (ManualCommand::Hold, "hold"),
            Action::Release => (ManualCommand::Release, "release"),
        };
        record
            .handle
            .send(Command::Manual(command))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        self.events.0.manual(name, said);
        Ok(())
    }

    async fn set_idle_timeout(&self, name: &str, timeout: Duration) -> Result<(), ControlError> {
        let record = self.record(name)?;
        let mut status = record.handle.subscribe();
        record
            .handle
            .send(Command::Manual(ManualCommand::SetIdleTimeout(timeout)))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        // So that a status read right after the answer shows it: the
        // machine applies it as soon as it reads its queue. One busy
        // longer (inside a Docker call) applies it later; the answer does
        // not wait for that.
        let applied = status.wait_for(|s| s.idle_timeout == timeout);
        let _ = tokio::time::timeout(APPLY_WAIT, applied).await;
        self.events.0.manual(
            name,
            &format!("idle-timeout {}", crate::config::format_human(timeout)),
        );
        self.state
            .set_idle_timeout(name, timeout.as_secs())
            .await
            .map_err(|e| ControlError::Unavailable(format!("persisting the idle timeout: {e}")))
    }

    fn health(&self) -> Health {
        Health {
            docker_reachable: self.health.docker_reachable.load(Ordering::Relaxed),
            datapath_attached: self.health.datapath_attached.load(Ordering::Relaxed),
            tasks: self
                .tasks
                .snapshot()
                .into_iter()
                .map(|(name, state)| (name, state.as_str().to_owned()))
                .collect(),
        }
    }

    fn metrics(&self) -> String {
        self.metrics.render_with(&self.services())
    }

    fn events(&self, after: Option<u64>) -> Option<Feed> {
        Some(self.events.1.subscribe(after))
    }

    fn history(&self) -> Option<HistoryView> {
        let now_ms = super::observers::timeline::unix_ms(SystemTime::now());
        let mut saved_bytes = 0;
        let services = self
            .directory
            .snapshot()
            .iter()
            .map(|record| {
                let status = record.handle.status();
                let memory = self.state.service(record.name());
                saved_bytes += match (&status.state, &status.hibernation) {
                    (ServiceState::Stopped, _) => memory.last_memory_bytes.unwrap_or(0),
                    (ServiceState::Hibernated, Some(h)) => h.awake.saturating_sub(h.resident),
                    _ => 0,
                };
                history::service_history(record.name(), &memory, status.state.name(), now_ms)
            })
            .collect();
        // The host's figures are left at 0 when /proc/meminfo cannot be read.
        let (total_bytes, used_bytes) = procfs::Meminfo::current()
            .map(|m| {
                (
                    m.mem_total,
                    m.mem_total
                        .saturating_sub(m.mem_available.unwrap_or(m.mem_free)),
                )
            })
            .unwrap_or_default();
        Some(HistoryView {
            now_ms,
            window_start_ms: now_ms - history::WINDOW_MS,
            days: history::days(now_ms),
            host: HostMemoryView {
                total_bytes,
                used_bytes,
                saved_bytes,
            },
            services,
        })
    }

    fn problems(&self) -> Vec<String> {
        let mut all: Vec<String> = self.refusals.borrow().clone();
        let directory = self.directory.snapshot();
        // Requirements across the file and the labels (the file alone is
        // checked when it is read).
        let configs: Vec<_> = directory.iter().map(|r| r.config.clone()).collect();
        for (service, problem) in crate::config::warm::requirement_problems(&configs) {
            all.push(format!("service {service:?}: {problem}"));
        }
        for record in directory.iter() {
            let cells = &record.cells;
            all.extend(
                cells
                    .problems
                    .borrow()
                    .iter()
                    .chain(cells.ports.borrow().iter())
                    .map(|p| format!("service {:?}: {p}", record.name())),
            );
        }
        all
    }
}
