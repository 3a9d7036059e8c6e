//! Docker driver of the agent: implements
//! [`ContainerRuntime`](crate::service::ContainerRuntime) for the
//! services of a [`Config`](crate::config::Config) over the Docker Engine API
//! (bollard, never a shell), reports the container endpoints the datapath
//! needs, and follows Docker's event stream.
//!
//! Construction (the agent's main loop owns the wiring):
//!
//! ```no_run
//! # async fn f(config: &autostop::config::Config) -> Result<(), autostop::docker::DockerError> {
//! use std::sync::Arc;
//! use autostop::docker::{DockerClient, DockerRuntime};
//! let client = DockerClient::connect().await?;
//! let runtime = Arc::new(DockerRuntime::new(client.clone(), &config.services));
//! // Arc<DockerRuntime> is an Arc<dyn ContainerRuntime> for spawn_service;
//! // runtime.endpoints("web") feeds the datapath; spawn_event_watcher(...)
//! // feeds ContainerEvent / DockerUnreachable / DockerBack to the actors.
//! # Ok(()) }
//! ```
//!
//! Submodules: `client` (connection, error mapping), `resolve` (which
//! containers make up a service), `project` (which containers are a compose
//! project's, as Docker's labels say), `order` (compose `depends_on` and the
//! topological start order), `ready` (health and TCP probe building blocks), `readiness` (the
//! runtime's readiness wait), `neigh`
//! (the permanent neighbour entry that avoids the first-SYN ARP stall),
//! `endpoints` (addresses and bridges for the datapath), `events` (the event
//! stream follower), `hibernate` (pause, reclaim to swap, thaw), `limits`
//! (the memory limits a hibernation changes: recorded, and undone by
//! whoever comes next), `stats` (memory use as `docker stats` shows it) and
//! `runtime` (the [`ContainerRuntime`] itself).

mod client;
mod compose_file;
pub(crate) mod endpoints;
mod events;
mod hibernate;
mod limits;
mod neigh;
mod order;
pub mod project;
mod readiness;
mod ready;
mod resolve;
mod runtime;
mod stats;

#[cfg(test)]
mod tests_order;

pub use client::DockerClient;
pub use endpoints::{bridge_name, ContainerEndpoint, ServiceEndpoints};
pub use events::{
    services_of, spawn_event_watcher, spawn_watcher, EventSink, LabelSink, NetworkEvent,
    NetworkSink, EVENT_BACKOFF_MAX,
};
pub use limits::{undo_at_start, LimitJournal, UNDO_LOCK_WAIT};
pub use neigh::NeighbourPin;
pub use order::{
    parse_compose_depends, parse_depends_label, start_order, DependsCondition, DependsOn,
};
pub use runtime::DockerRuntime;
pub use stats::{host_memory_bytes, memory_of, MemoryUse};

use crate::service::ServiceError;

/// The docker module's error type; converted to [`ServiceError`] at the
/// [`ContainerRuntime`](crate::service::ContainerRuntime) boundary.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon does not answer (socket missing, connection refused, ...).
    #[error("docker unreachable: {0}")]
    Unreachable(String),
    /// The service is not configured, or its containers do not exist.
    #[error("{0}")]
    NotFound(String),
    /// The daemon answered with an error.
    #[error("docker api: {0}")]
    Api(String),
    /// A compose file could not be read or parsed.
    #[error("compose file {path}: {message}")]
    Compose {
        /// The file that failed.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The `depends_on` graph has a cycle (names its members).
    #[error("dependency cycle among {0}")]
    Cycle(String),
    /// A container exited with a non-zero code while the service started.
    #[error("container {container} exited with code {code} during start")]
    Exited {
        /// Container name.
        container: String,
        /// Its exit code.
        code: i64,
    },
    /// A healthcheck reported unhealthy.
    #[error("container {0} is unhealthy")]
    Unhealthy(String),
    /// Netlink (neighbour entry) failure.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A container's recorded memory limits could not be put back: it is
    /// left paused rather than run under a lowered limit.
    #[error("{0}")]
    Limits(String),
}

impl From<DockerError> for ServiceError {
    fn from(e: DockerError) -> Self {
        match e {
            DockerError::Unreachable(m) => ServiceError::Unreachable(m),
            DockerError::NotFound(m) => ServiceError::NotFound(m),
            other => ServiceError::Runtime(other.to_string()),
        }
    }
}
