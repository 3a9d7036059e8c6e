//! `autostop run`: the agent itself. [`run`] loads the config, loads the
//! kernel programs and cuts them into their parts, installs the warm-up
//! redirect and opens Docker ([`real`]); [`run_with`] runs the agent over
//! those dependencies ([`deps`]: traits, so a unit test runs it over
//! fakes), until shutdown:
//!
//! - one registry of services ([`registry`]: one record per service, kernel
//!   indexes reused once cleared, [`ids`]), changed in one place, the
//!   service table ([`table`]);
//! - one state machine per service ([`crate::service`]), whose lifecycle
//!   steps fan out to small observers ([`observers`]);
//! - the steering worker ([`steer_worker`], reached through [`steering`]):
//!   owns the sk_lookup maps and the warm-up redirect;
//! - the endpoint refresher ([`counters`]): owns the classifier, its
//!   targets and counters; the state machines read the counters through a
//!   read-only view ([`kernel`]);
//! - the state file's owner ([`state_owner`]), its only writer;
//! - memory sampling and RAM-savings accounting ([`memory`]);
//! - what keeps a service awake or wakes it besides traffic: `keep_warm`
//!   windows, dependents, CPU use, pre-warms ([`awake`]); requirements
//!   started first ([`requires`]);
//! - the cold-start listener, the wake-event loop and Docker's event
//!   stream ([`tasks`]);
//! - the status API ([`control`]), metrics and dashboard;
//! - reloads (inotify: [`file_watch`]) and label scans ([`config_loop`],
//!   [`reload`], [`labels`]);
//! - systemd notifications and how a run ends ([`liveness`]).
//!
//! On shutdown every task is joined, the netfilter table is deleted and the
//! BPF links are dropped: the kernel is back to its stock behaviour.

mod awake;
mod capacity;
mod config_loop;
mod control;
mod counters;
mod deps;
mod file_watch;
mod handing;
mod ids;
mod kernel;
mod labels;
mod listeners;
mod liveness;
mod memory;
mod observers;
mod port_guard;
mod progress;
mod real;
mod registry;
mod reload;
mod requires;
mod run;
mod state_owner;
mod steer_worker;
mod steering;
mod table;
mod takeover;
mod tasks;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use awake::AwakeView;
pub use control::{AgentControl, HealthFlags};
pub use deps::{
    ActivityCounters, AgentDeps, AgentDocker, Counting, EventSinks, HostSockets, IgnoreSources,
    KernelDeps, SteerMaps, WakeSource, Warmup,
};
pub use handing::{ControlSetup, HandoverDeps};
pub use ids::{IdError, IdPool, ServiceId};
pub use kernel::{instant_from_ktime, KernelActivity};
pub use labels::{discover as discover_labelled, LabelCache, LabelScan, LabelScanError};
pub use listeners::NFT_TABLE_ENV;
pub use memory::{MemorySource, SAMPLE_EVERY as MEMORY_SAMPLE_EVERY};
pub use observers::alerts::FailureSink;
pub use port_guard::{PortGuard, RECHECK_EVERY as PORT_RECHECK_EVERY};
pub use registry::{Directory, DirectoryReader, History, ServiceCells, ServiceRecord};
pub use reload::{diff, needs_restart, ConfigDiff};
pub use run::run_with;
pub use state_owner::{StateHandle, StateUpdate, DEPARTED_KEPT};

use crate::{
    alerts::AlertError, api, bpf::BpfError, config::ConfigError, netfilter::NetfilterError,
    state::StateError,
};

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The configuration file (also watched for changes).
    pub config_path: PathBuf,
    /// Take over from the agent already running ([`crate::handover`])
    /// instead of starting afresh.
    pub takeover: bool,
}

/// Why the agent could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid; the message names file, line and field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory is unusable.
    #[error("agent.state_dir: {0}")]
    State(#[from] StateError),
    /// The status API cannot be served as configured.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// The alert webhook cannot be delivered to as configured.
    #[error(transparent)]
    Alerts(#[from] AlertError),
    /// The kernel programs could not be loaded or attached.
    #[error("datapath: {0}")]
    Bpf(#[from] BpfError),
    /// The warm-up redirect table could not be installed.
    #[error("warm-up redirect: {0}")]
    Netfilter(#[from] NetfilterError),
    /// A socket could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// Which socket, by its config field or role.
        what: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A hand-over could not be taken (the running agent goes on).
    #[error("take-over: {0}")]
    Handover(#[from] crate::handover::HandoverError),
    /// A task panicked or ended on its own: the agent cleaned up and stops
    /// with a failure status (see [`crate::supervisor`]).
    #[error("{0}")]
    Fatal(String),
}

/// Runs the agent until `shutdown` is cancelled (by a signal, or by the
/// supervisor when a task fails; then the result is [`AgentError::Fatal`],
/// after the same clean-up): builds the real dependencies from the
/// configuration file, then [`run_with`].
pub async fn run(options: AgentOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let deps = real::build(&options).await?;
    run_with(deps, shutdown).await
}
