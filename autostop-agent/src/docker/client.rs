//! Connection to the Docker daemon and the mapping of bollard errors onto
//! [`DockerError`] (404 → not found, transport failures → unreachable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, NetworkInspect,
};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;

use super::DockerError;

/// Default Docker socket.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// Per-request timeout, in seconds (a stop may take the container's grace
/// period, 10 s by default).
const REQUEST_TIMEOUT_SECS: u64 = 60;
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
        let docker = client
            .handle()?
            .negotiate_version()
            .await
            .map_err(map_err)?;
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
        self.inner.docker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bollard client, connecting first if needed.
    pub(crate) fn handle(&self) -> Result<Docker, DockerError> {
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
        self.handle()?.ping().await.map(|_| ()).map_err(map_err)
    }

    /// Inspects one container by name or id.
    pub async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.handle()?
            .inspect_container(name, None)
            .await
            .map_err(map_err)
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
        self.handle()?
            .list_containers(Some(opts))
            .await
            .map_err(map_err)
    }

    /// Starts a container (a no-op for a running one).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.handle()?
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(map_err)
    }

    /// Stops a container with Docker's default grace period.
    pub async fn stop(&self, id: &str) -> Result<(), DockerError> {
        let opts = StopContainerOptionsBuilder::default().build();
        self.handle()?
            .stop_container(id, Some(opts))
            .await
            .map_err(map_err)
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
        match stream.next().await {
            Some(sample) => sample.map_err(map_err),
            None => Err(DockerError::Api(format!(
                "container {id}: empty stats answer"
            ))),
        }
    }

    /// Inspects a network by name or id.
    pub async fn network(&self, id: &str) -> Result<NetworkInspect, DockerError> {
        self.handle()?
            .inspect_network(id, None)
            .await
            .map_err(map_err)
    }
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
