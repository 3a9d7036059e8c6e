//! Connection to the Docker daemon and the mapping of bollard errors onto
//! [`DockerError`] (404 → not found, transport failures → unreachable).
//!
//! Every call has its own timeout, sized for what it does: queries
//! (inspect, list, ping) are short; a start gets the service's
//! `start_timeout`, a stop the container's grace period plus a margin. A
//! call that runs out is reported as [`DockerError::Unreachable`]: a daemon
//! that does not answer is as good as gone. The event stream has no
//! timeout (it is silent for hours); its follower reconnects instead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use bollard::models::EventMessage;
use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, NetworkInspect,
};
use bollard::query_parameters::{
    EventsOptions, ListContainersOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures_util::{Stream, StreamExt};

use super::DockerError;

/// Default Docker socket.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// bollard's own per-request timeout, in seconds: only a backstop above
/// every per-call bound below (a stop may legitimately take minutes).
const REQUEST_TIMEOUT_SECS: u64 = 3600;
/// Inspecting, listing, network lookups.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping (is the daemon there at all).
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// One stats sample (one-shot; about a second on Docker 20.10).
pub const STATS_TIMEOUT: Duration = Duration::from_secs(15);
/// Docker's stop grace period when the container sets none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// What a stop may take beyond the grace period (the kill, the exit, the
/// daemon's own bookkeeping).
pub const STOP_MARGIN: Duration = Duration::from_secs(15);
/// API version used when the daemon cannot be asked (Docker 20.10's).
const FALLBACK_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Cheap-to-clone Docker API client shared by the runtime and the event
/// watcher. The underlying connection is made on first use (and again after
/// a failure to make it), so a client exists even while the daemon is down.
#[derive(Debug, Clone)]
pub struct DockerClient {
    /// Socket path and the connected bollard client, if made yet.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Socket path (without `unix://`).
    socket: String,
    /// bollard client (holds a connection pool); `None` until made.
    docker: Mutex<Option<Docker>>,
}

impl DockerClient {
    /// Connects to the default socket and negotiates the API version (the
    /// daemon here speaks 1.41; bollard defaults to a newer one).
    pub async fn connect() -> Result<Self, DockerError> {
        let client = Self::lazy(DEFAULT_SOCKET);
        let docker = bounded(
            "version negotiation",
            QUERY_TIMEOUT,
            client.handle()?.negotiate_version(),
        )
        .await?;
        *client.slot() = Some(docker);
        Ok(client)
    }

    /// Client for `socket` (e.g. `unix:///var/run/docker.sock`) that does not
    /// contact the daemon yet: usable while Docker is down (calls then fail
    /// with [`DockerError::Unreachable`]). It speaks API 1.41 (Docker 20.10).
    pub fn lazy(socket: &str) -> Self {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        Self {
            inner: Arc::new(Inner {
                socket: path.to_string(),
                docker: Mutex::new(None),
            }),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Docker>> {
        self.inner.docker.lock()
    }

    /// The bollard client, connecting first if needed (no I/O: the
    /// connection is made by the first request).
    fn handle(&self) -> Result<Docker, DockerError> {
        let mut slot = self.slot();
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Docker::connect_with_unix(&self.inner.socket, REQUEST_TIMEOUT_SECS, &FALLBACK_API)
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        *slot = Some(d.clone());
        Ok(d)
    }

    /// Whether the daemon answers a ping.
    pub async fn ping(&self) -> Result<(), DockerError> {
        bounded("ping", PING_TIMEOUT, self.handle()?.ping())
            .await
            .map(drop)
    }

    /// Inspects one container by name or id.
    pub async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, DockerError> {
        bounded(
            "inspect",
            QUERY_TIMEOUT,
            self.handle()?.inspect_container(name, None),
        )
        .await
    }

    /// All containers (running or not) carrying `label=value`.
    pub async fn list_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        bounded(
            "list containers",
            QUERY_TIMEOUT,
            self.handle()?.list_containers(Some(opts)),
        )
        .await
    }

    /// Starts a container (a no-op for a running one), waiting at most
    /// `timeout` (the service's `start_timeout`) for the daemon's answer.
    pub async fn start(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        bounded(
            "start",
            timeout,
            self.handle()?
                .start_container(id, None::<StartContainerOptions>),
        )
        .await
    }

    /// Stops a container with its own grace period (`grace`: the
    /// container's `StopTimeout`, else Docker's default), waiting for the
    /// daemon at most that plus [`STOP_MARGIN`].
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), DockerError> {
        let opts = StopContainerOptionsBuilder::default().build();
        let timeout = grace.unwrap_or(DEFAULT_STOP_GRACE) + STOP_MARGIN;
        bounded(
            "stop",
            timeout,
            self.handle()?.stop_container(id, Some(opts)),
        )
        .await
    }

    /// Freezes every process of a container (`docker pause`).
    pub async fn pause(&self, id: &str) -> Result<(), DockerError> {
        bounded("pause", QUERY_TIMEOUT, self.handle()?.pause_container(id)).await
    }

    /// Thaws a paused container (`docker unpause`).
    pub async fn unpause(&self, id: &str) -> Result<(), DockerError> {
        bounded(
            "unpause",
            QUERY_TIMEOUT,
            self.handle()?.unpause_container(id),
        )
        .await
    }

    /// One stats sample of a container (`stream=false`, `one-shot=true`:
    /// the daemon answers with its latest reading instead of waiting for
    /// two collection cycles).
    pub async fn stats_once(&self, id: &str) -> Result<ContainerStatsResponse, DockerError> {
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.handle()?.stats(id, Some(opts));
        match tokio::time::timeout(STATS_TIMEOUT, stream.next()).await {
            Err(_) => Err(no_answer("stats", STATS_TIMEOUT)),
            Ok(Some(sample)) => sample.map_err(map_err),
            Ok(None) => Err(DockerError::Api(format!(
                "container {id}: empty stats answer"
            ))),
        }
    }

    /// Inspects a network by name or id.
    pub async fn network(&self, id: &str) -> Result<NetworkInspect, DockerError> {
        bounded(
            "inspect network",
            QUERY_TIMEOUT,
            self.handle()?.inspect_network(id, None),
        )
        .await
    }

    /// Docker's event stream (no timeout: it is silent while nothing
    /// happens; the follower checks the daemon and reconnects).
    pub fn events(
        &self,
        options: EventsOptions,
    ) -> Result<impl Stream<Item = Result<EventMessage, DockerError>> + use<>, DockerError> {
        Ok(self
            .handle()?
            .events(Some(options))
            .map(|item| item.map_err(map_err)))
    }
}

/// Runs one Docker call under `timeout`.
async fn bounded<T>(
    call: &'static str,
    timeout: Duration,
    request: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(map_err),
        Err(_) => Err(no_answer(call, timeout)),
    }
}

/// The error for a call the daemon did not answer in time.
fn no_answer(call: &str, timeout: Duration) -> DockerError {
    DockerError::Unreachable(format!("docker did not answer {call} within {timeout:?}"))
}

/// Maps a bollard error: HTTP 404 → `NotFound`, 304 (already
/// started/stopped) is handled by bollard as success, other daemon answers →
/// `Api`, everything else (socket, transport, timeout) → `Unreachable`.
pub(crate) fn map_err(e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => DockerError::NotFound(message),
        E::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api(format!("{status_code}: {message}")),
        E::JsonDataError { .. } | E::JsonSerdeError { .. } | E::APIVersionParseError {} => {
            DockerError::Api(e.to_string())
        }
        other => DockerError::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{bounded, DockerError};

    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_times_out_as_unreachable() {
        let silent = std::future::pending::<Result<(), bollard::errors::Error>>();
        let began = tokio::time::Instant::now();
        let out = bounded("inspect", Duration::from_secs(10), silent).await;
        assert_eq!(began.elapsed(), Duration::from_secs(10));
        match out {
            Err(DockerError::Unreachable(m)) => {
                assert_eq!(m, "docker did not answer inspect within 10s");
            }
            other => panic!("want Unreachable, got {other:?}"),
        }
    }
}
