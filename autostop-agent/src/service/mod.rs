//! Per-service lifecycle: stop idle Docker services, wake them on the first
//! packet, and push readiness to the rest of the agent.
//!
//! Each service gets one actor task ([`spawn_service`]) driven by
//! [`Command`]s and publishing a [`ServiceStatus`] on a `watch` channel.
//! Docker, kernel steering and kernel counters are reached through the
//! [`ContainerRuntime`], [`Steering`] and [`ActivityProbe`] ports; the pure
//! transition rules live in `machine`, the task in `actor`.

mod actor;
mod effects;
mod guard;
mod idle;
mod learn;
mod machine;
mod state_name;
mod traits;
mod types;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests_failure;
#[cfg(test)]
mod tests_handback;
#[cfg(test)]
mod tests_hibernate;
#[cfg(test)]
mod tests_lifecycle;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use guard::{BACKOFF_BASE, BACKOFF_CAP, CRASH_LOOP_FAILURES, CRASH_LOOP_WINDOW};
pub use idle::CONNECTED_RECHECK;
pub use learn::{StartLearner, START_EWMA_ALPHA};
pub use traits::{
    ActivityProbe, ContainerRuntime, HandBack, Hibernation, LifecycleObserver, NoObserver,
    Observed, RuntimeError, SteerMode, Steered, Steering,
};
pub use types::{
    Command, ContainerEvent, LifecycleEvent, ManualCommand, Resumed, ServiceSettings, ServiceState,
    ServiceStatus, StartBlock, StateName, Trigger, STOP_REASONS,
};

/// Capacity of a service's command queue; wakes beyond it are redundant.
pub const COMMAND_QUEUE: usize = 1024;

/// The service module's error type (also the ports' [`RuntimeError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The Docker daemon does not answer.
    #[error("docker unreachable: {0}")]
    Unreachable(String),
    /// The service or one of its containers does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other runtime failure (start, stop, health check, ...).
    #[error("runtime error: {0}")]
    Runtime(String),
    /// Start plus readiness exceeded `start_timeout`.
    #[error("not ready within start timeout ({0:?})")]
    StartTimeout(Duration),
    /// The service actor has ended; the command cannot be delivered.
    #[error("service actor has stopped")]
    ActorGone,
    /// The command queue is full (only from [`ServiceHandle::try_send`]).
    #[error("service command queue is full")]
    QueueFull,
}

/// Cloneable handle to one service actor.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    /// Command queue of the actor.
    pub tx: mpsc::Sender<Command>,
    /// Latest status; clone or [`subscribe`](Self::subscribe) to be pushed
    /// changes.
    pub status_rx: watch::Receiver<ServiceStatus>,
}

impl ServiceHandle {
    /// Sends a command, waiting for queue space.
    pub async fn send(&self, cmd: Command) -> Result<(), ServiceError> {
        self.tx.send(cmd).await.map_err(|_| ServiceError::ActorGone)
    }

    /// Sends a command without waiting (for non-async callers such as the
    /// kernel event reader); a full queue already holds pending work.
    pub fn try_send(&self, cmd: Command) -> Result<(), ServiceError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServiceError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => ServiceError::ActorGone,
        })
    }

    /// Asks for the service to be started if it is not running.
    pub async fn wake(&self, trigger: Trigger) -> Result<(), ServiceError> {
        self.send(Command::Wake { trigger }).await
    }

    /// Receiver that is pushed every status change.
    pub fn subscribe(&self) -> watch::Receiver<ServiceStatus> {
        self.status_rx.clone()
    }

    /// Current status snapshot.
    pub fn status(&self) -> ServiceStatus {
        self.status_rx.borrow().clone()
    }

    /// Learned start duration, for the caller to persist.
    pub fn learned_start(&self) -> Option<Duration> {
        self.status_rx.borrow().start_estimate
    }
}

/// What a service actor talks to: Docker, the kernel, and whoever listens
/// to lifecycle steps. Shared by all services of an agent.
#[derive(Clone)]
pub struct Ports {
    /// Starts, stops and observes containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Steers the service's ports to the agent or back to the stock path.
    pub steering: Arc<dyn Steering>,
    /// Reads the kernel's activity counters.
    pub probe: Arc<dyn ActivityProbe>,
    /// Hears lifecycle steps.
    pub observer: Arc<dyn LifecycleObserver>,
}

/// Spawns the actor of service `name` on the current tokio runtime.
///
/// The actor first adopts the real container state via
/// [`ContainerRuntime::observe`]. It ends on [`Command::Shutdown`], on
/// `shutdown` cancellation or when every handle is dropped, without
/// starting or stopping anything.
pub fn spawn_service(
    name: impl Into<String>,
    settings: ServiceSettings,
    ports: Ports,
    shutdown: CancellationToken,
) -> (ServiceHandle, JoinHandle<()>) {
    let Ports {
        runtime,
        steering,
        probe,
        observer,
    } = ports;
    let name: String = name.into();
    let now = Instant::now();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (status_tx, status_rx) = watch::channel(ServiceStatus::initial(&settings, now));
    let (machine, initial) = machine::Machine::new(name.clone(), settings, now);
    let actor = actor::Actor {
        name: name.into(),
        runtime,
        steering,
        probe,
        observer,
        rx,
        status_tx,
        shutdown,
    };
    let join = tokio::spawn(actor.run(machine, initial));
    (ServiceHandle { tx, status_rx }, join)
}
