//! Connection to the Docker daemon and the mapping of bollard errors onto
//! [`DockerError`] (404 → not found, transport failures → unreachable).

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary, NetworkInspect};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};

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
/// watcher.
#[derive(Debug, Clone)]
pub struct DockerClient {
    /// The bollard client (holds a connection pool).
    pub(crate) docker: Docker,
}

impl DockerClient {
    /// Connects to the default socket and negotiates the API version (the
    /// daemon here speaks 1.41; bollard defaults to a newer one).
    pub async fn connect() -> Result<Self, DockerError> {
        let client = Self::lazy(DEFAULT_SOCKET)?;
        let docker = client.docker.negotiate_version().await.map_err(map_err)?;
        Ok(Self { docker })
    }

    /// Client for `socket` (e.g. `unix:///var/run/docker.sock`) that does not
    /// contact the daemon: usable while Docker is down. It speaks API 1.41.
    pub fn lazy(socket: &str) -> Result<Self, DockerError> {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &FALLBACK_API)
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Self { docker })
    }

    /// Whether the daemon answers a ping.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker.ping().await.map(|_| ()).map_err(map_err)
    }

    /// Inspects one container by name or id.
    pub async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.docker
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
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(map_err)
    }

    /// Starts a container (a no-op for a running one).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(map_err)
    }

    /// Stops a container with Docker's default grace period.
    pub async fn stop(&self, id: &str) -> Result<(), DockerError> {
        let opts = StopContainerOptionsBuilder::default().build();
        self.docker
            .stop_container(id, Some(opts))
            .await
            .map_err(map_err)
    }

    /// Inspects a network by name or id.
    pub async fn network(&self, id: &str) -> Result<NetworkInspect, DockerError> {
        self.docker.inspect_network(id, None).await.map_err(map_err)
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
