//! Value types of the service module: lifecycle states, the published
//! status, per-service settings and the commands the actor accepts.

use std::time::Duration;

use tokio::time::Instant;

pub use super::state_name::StateName;

use super::traits::Hibernation;
use crate::config::Sleep;

/// Lifecycle state of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// Docker is unreachable or the state has not been observed yet; the
    /// agent does not touch the containers.
    Unknown,
    /// Containers are down; new connections are steered to the agent.
    Stopped,
    /// A start (or an external start) is in progress, waiting for readiness.
    Starting,
    /// Containers run and accept traffic; the agent is off the data path.
    Ready,
    /// The agent is stopping the containers (idle or manual stop).
    Stopping,
    /// Idle with `sleep = "hibernate"`: the agent is pausing the containers
    /// and pushing their memory to swap. The ports stay on the stock path.
    Hibernating,
    /// The containers are paused (their memory in swap when the host has
    /// enough): their sockets still listen, the kernel queues new
    /// handshakes, and the first packet thaws them. Never steered.
    Hibernated,
    /// The last start (or stop) failed; connections keep reaching the agent,
    /// which answers errors.
    Failed {
        /// Human-readable cause, also logged and kept in `last_error`.
        reason: String,
    },
}

impl ServiceState {
    /// The state's name, without its data.
    pub fn name(&self) -> StateName {
        match self {
            Self::Unknown => StateName::Unknown,
            Self::Stopped => StateName::Stopped,
            Self::Starting => StateName::Starting,
            Self::Ready => StateName::Ready,
            Self::Stopping => StateName::Stopping,
            Self::Hibernating => StateName::Hibernating,
            Self::Hibernated => StateName::Hibernated,
            Self::Failed { .. } => StateName::Failed,
        }
    }

    /// Short stable name for logs and the status API.
    pub fn as_str(&self) -> &'static str {
        self.name().as_str()
    }
}

/// Snapshot of a service pushed to subscribers (connection holder, status
/// API) through a `watch` channel whenever it changes.
///
/// Instants are `tokio::time::Instant` so they follow tokio's (possibly
/// paused) clock; use `.into_std()` where a `std` instant is needed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    /// Current lifecycle state.
    pub state: ServiceState,
    /// When the service entered `state`.
    pub since: Instant,
    /// Last error seen (start/stop/observe failure), kept after recovery for
    /// diagnostics.
    pub last_error: Option<String>,
    /// Learned start duration (moving average); lets the holder tell clients
    /// how long to wait and lets the caller persist it.
    pub start_estimate: Option<Duration>,
    /// Manual hold: the service is never auto-stopped while set.
    pub hold: bool,
    /// Why the service is kept awake besides traffic and hold (a
    /// `keep_warm` window, a dependent, CPU use), as shown to operators;
    /// never idle-stopped while not empty.
    pub keep_awake: Vec<String>,
    /// Idle timeout currently in force.
    pub idle_timeout: Duration,
    /// Latest traffic seen by the kernel counters, if any.
    pub last_activity: Option<Instant>,
    /// Set while `Failed` when a wake would not start the service now: the
    /// cold-start listener answers such connections at once instead of
    /// holding them for a start that is not coming.
    pub start_block: Option<StartBlock>,
    /// The containers answer: held connections go to them now. Set from
    /// readiness on, while the ports are still being handed back to the
    /// stock path (the state stays `Starting` until that is done, so
    /// `Ready` always means the stock path), and in `Ready`.
    pub upstream_ready: bool,
    /// The machine has looked at Docker once: it adopted the containers'
    /// state, or learned that Docker is unreachable. Stays true (the agent
    /// tells systemd it is ready once every service has).
    pub adopted: bool,
    /// While `Hibernated`: what the hibernation left (`None` for a paused
    /// service adopted from an earlier agent, until it wakes).
    pub hibernation: Option<Hibernation>,
}

/// Why a wake would not start a failed service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartBlock {
    /// The crash-loop guard is latched: wakes are ignored until an operator
    /// acts (manual start, config change).
    CrashLoop,
    /// A retry backoff is pending: a wake before `retry_at` is deferred to
    /// it (and one after it starts the service).
    Backoff {
        /// Earliest time a wake may start the service again.
        retry_at: Instant,
    },
}

impl ServiceStatus {
    /// Initial status before adoption.
    pub fn initial(settings: &ServiceSettings, now: Instant) -> Self {
        Self {
            state: ServiceState::Unknown,
            since: now,
            last_error: None,
            start_estimate: settings.initial_start_estimate,
            hold: false,
            keep_awake: Vec::new(),
            idle_timeout: settings.idle_timeout,
            last_activity: None,
            start_block: None,
            upstream_ready: false,
            adopted: false,
            hibernation: None,
        }
    }
}

/// Per-service configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Time without traffic after which a ready service is stopped.
    pub idle_timeout: Duration,
    /// Upper bound on start + readiness; exceeding it fails the start.
    pub start_timeout: Duration,
    /// Do not idle-stop while connections are still open.
    pub hold_while_connected: bool,
    /// Persisted start-duration estimate to seed the learner with (the
    /// caller stores `ServiceStatus::start_estimate` across restarts).
    pub initial_start_estimate: Option<Duration>,
    /// What an idle service is put into.
    pub sleep: Sleep,
    /// What the agent this one took over from knew of the service (a
    /// hand-over); `None` for a fresh start.
    pub resume: Option<Resumed>,
}

/// A service as the agent this one took over from left it: the machine
/// starts from there instead of afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resumed {
    /// It was starting the service: if its containers run, adopt it as
    /// starting and wait for readiness (as a start by someone else)
    /// instead of taking it for ready.
    pub starting: bool,
    /// Time since its last activity: the idle timer goes on from there.
    pub idle_for: Option<Duration>,
    /// The operator's hold.
    pub hold: bool,
    /// The crash-loop guard was latched, after this failure.
    pub crash_loop: Option<String>,
    /// A retry backoff was pending for this much longer.
    pub retry_in: Option<Duration>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            start_timeout: Duration::from_secs(120),
            hold_while_connected: true,
            initial_start_estimate: None,
            sleep: Sleep::Stop,
            resume: None,
        }
    }
}

/// What caused a wake (for logs and the status API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The kernel saw a TCP SYN to the stopped service's port.
    Syn,
    /// The connection holder received a steered connection.
    HeldConnection,
    /// An operator asked via the CLI.
    Manual,
    /// A client asked via the HTTP API.
    Api,
    /// Someone started the containers outside the agent (`docker start`).
    External,
    /// A `keep_warm` window opened.
    Schedule,
    /// Learned pre-warming: the service's habitual first request is near.
    Prewarm,
    /// A service that requires this one is starting.
    Dependent,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 8] = [
        Trigger::Syn,
        Trigger::HeldConnection,
        Trigger::Manual,
        Trigger::Api,
        Trigger::External,
        Trigger::Schedule,
        Trigger::Prewarm,
        Trigger::Dependent,
    ];

    /// Label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Syn => "syn",
            Trigger::HeldConnection => "connection",
            Trigger::Manual => "manual",
            Trigger::Api => "api",
            Trigger::External => "external",
            Trigger::Schedule => "schedule",
            Trigger::Prewarm => "prewarm",
            Trigger::Dependent => "dependent",
        }
    }
}

/// Every reason a [`LifecycleEvent::Stopping`] or
/// [`LifecycleEvent::Stopped`] gives.
/// (`hibernate`: the `Stopping`/`Stopped` pair of a hibernation, which
/// leaves the service `Hibernated`, not `Stopped`).
pub const STOP_REASONS: [&str; 4] = ["idle", "manual", "container_died", "hibernate"];

/// A lifecycle step, reported to the [`LifecycleObserver`](super::LifecycleObserver)
/// as it happens (metrics, alerts and start history hang off it; the status
/// `watch` channel may coalesce quick successions, this never does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// A start began.
    Starting {
        /// What caused it.
        trigger: Trigger,
    },
    /// The service became ready; `took` is known for starts the agent made.
    Ready {
        /// Start to ready.
        took: Option<Duration>,
        /// The learned start estimate after this start (to persist).
        estimate: Option<Duration>,
    },
    /// A stop began.
    Stopping {
        /// `idle` or `manual`.
        reason: &'static str,
    },
    /// The containers are down.
    Stopped {
        /// `idle`, `manual` or `container_died`.
        reason: &'static str,
    },
    /// A start or stop failed.
    Failed {
        /// What went wrong.
        reason: String,
        /// The crash-loop guard tripped: no automatic retry.
        crash_loop: bool,
    },
}

impl LifecycleEvent {
    /// The state the service enters with this step (a hibernation is a
    /// stop whose reason is `hibernate`).
    pub fn state(&self) -> StateName {
        match self {
            Self::Starting { .. } => StateName::Starting,
            Self::Ready { .. } => StateName::Ready,
            Self::Stopping {
                reason: "hibernate",
            } => StateName::Hibernating,
            Self::Stopping { .. } => StateName::Stopping,
            Self::Stopped {
                reason: "hibernate",
            } => StateName::Hibernated,
            Self::Stopped { .. } => StateName::Stopped,
            Self::Failed { .. } => StateName::Failed,
        }
    }
}

/// Operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualCommand {
    /// Start now (ignores backoff, resets the crash-loop guard).
    Start,
    /// Stop now.
    Stop,
    /// Never auto-stop until `Release`.
    Hold,
    /// Undo `Hold`.
    Release,
    /// Change the idle timeout; takes effect immediately.
    SetIdleTimeout(Duration),
}

/// Container events from the Docker event stream (someone acting by hand,
/// or a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEvent {
    /// A container of the service started.
    Started,
    /// A container of the service exited.
    Died {
        /// Exit code reported by Docker, if any.
        exit_code: Option<i64>,
    },
}

/// Input to a service actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Traffic (or a client) wants the service.
    Wake {
        /// What asked for it.
        trigger: Trigger,
    },
    /// Operator command.
    Manual(ManualCommand),
    /// Docker event concerning one of the service's containers.
    ContainerEvent(ContainerEvent),
    /// The Docker daemon stopped answering.
    DockerUnreachable,
    /// The Docker daemon answers again: re-observe and adopt.
    DockerBack,
    /// New settings (config reload); also resets the crash-loop guard.
    ConfigChanged(ServiceSettings),
    /// Why the service must stay awake now (empty: nothing but the idle
    /// rules); the idle timer restarts when the last reason goes.
    KeepAwake(Vec<String>),
    /// End the actor without touching the containers.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_serialise_as_the_api_always_spelled_them() {
        let json = serde_json::to_string(&StateName::ALL).expect("serialise");
        assert_eq!(
            json,
            r#"["stopped","starting","ready","stopping","hibernating","hibernated","failed","unknown"]"#
        );
        for state in StateName::ALL {
            let back: StateName =
                serde_json::from_str(&format!("\"{state}\"")).expect("deserialise");
            assert_eq!(back, state);
            assert_eq!(StateName::from(state.as_str()), state);
        }
        let newer: StateName = serde_json::from_str("\"frozen\"").expect("unknown name");
        assert_eq!(newer, StateName::Unknown);
        let failed = ServiceState::Failed {
            reason: "exit 1".into(),
        };
        assert_eq!(failed.name(), StateName::Failed);
        assert!(StateName::Ready == "ready");
    }
}
