//! Ports the service state machine drives: the container runtime (Docker),
//! the kernel steering switch and the kernel activity counters.
//!
//! They are traits so the actor can be unit-tested with fakes (no Docker, no
//! root) and so the real implementations live in their own modules.

use std::time::Instant;

use async_trait::async_trait;

use super::ServiceError;

/// Error returned by [`ContainerRuntime`] implementations.
///
/// It is the module's single error enum under the name the port uses, so the
/// Docker module can build e.g. [`ServiceError::Unreachable`] directly.
pub type RuntimeError = ServiceError;

/// What [`ContainerRuntime::observe`] found, used to adopt the real state of
/// a service when the agent (re)starts or Docker comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Every container of the service is running: adopt as `Ready`.
    AllRunning,
    /// No container of the service is running: adopt as `Stopped`.
    AllStopped,
    /// Some containers run, others do not: adopt as `Stopped` without
    /// touching anything until traffic asks for the service.
    Partial,
    /// Every container exists and runs, at least one paused (an agent
    /// hibernated it, then was restarted or killed): adopt as
    /// `Hibernated`; the first packet thaws it.
    Paused,
}

/// What hibernating a service did, summed over its containers (bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hibernation {
    /// Resident memory when it was paused.
    pub awake: u64,
    /// Resident memory left after reclaim.
    pub resident: u64,
    /// Memory in swap after reclaim.
    pub swap: u64,
    /// Memory was pushed to swap; `false`: paused only (see `note`).
    pub reclaimed: bool,
    /// Why it was paused without (full) reclaim, for status and logs.
    pub note: Option<String>,
}

/// Drives the containers of one service (implemented by the Docker module).
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Starts all containers of `service` in dependency order.
    async fn start(&self, service: &str) -> Result<(), RuntimeError>;
    /// Stops all containers of `service`.
    async fn stop(&self, service: &str) -> Result<(), RuntimeError>;
    /// Returns once every container runs, is healthy where a healthcheck
    /// exists, and the service port accepts TCP at the container address.
    /// The caller bounds it with `start_timeout`.
    async fn wait_ready(&self, service: &str) -> Result<(), RuntimeError>;
    /// Reports whether the containers of `service` currently run.
    async fn observe(&self, service: &str) -> Result<Observed, RuntimeError>;
    /// Pauses every container of `service`, then pushes their memory to
    /// swap when the host has room for it (else leaves them paused only
    /// and says why in [`Hibernation::note`]). A failed reclaim is not an
    /// error: the containers stay paused. An error means they are not
    /// paused (the runtime unpaused what it had paused).
    async fn hibernate(&self, service: &str) -> Result<Hibernation, RuntimeError>;
    /// Unpauses every paused container of `service` (their memory limits
    /// are their own again since the reclaim ended).
    async fn thaw(&self, service: &str) -> Result<(), RuntimeError>;
}

/// Where the kernel sends *new* connections for a service's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteerMode {
    /// Service stopped: new connections go to the agent, which holds them
    /// and wakes the service.
    Steered,
    /// Service starting: new connections still go to the agent, even past
    /// Docker's DNAT, until readiness is confirmed.
    Warming {
        /// The containers were started by someone else before the agent
        /// knew, so Docker's DNAT may already have taken SYNs to a
        /// container that does not answer yet: those are released too.
        /// When the agent starts them itself, the port was steered until
        /// now and no SYN can have been DNAT'd, so that clean-up (two
        /// `conntrack` runs racing `docker start` for the CPU) is skipped.
        already_started: bool,
    },
    /// Service ready: kernel stock path, the agent is off the data path.
    Direct,
}

/// Resolves once a service's ports are back on the stock path (or the
/// steering gave up on it: a dropped sender counts as done).
pub type HandBack = tokio::sync::oneshot::Receiver<()>;

/// Resolves once the sk_lookup side of a [`Steering::set_mode`] is in
/// place (a dropped sender counts as done): the actor waits for it before
/// the Docker call that follows, so "steer, then stop" holds.
pub type Steered = tokio::sync::oneshot::Receiver<()>;

/// Switches the kernel steering of one service (implemented by the agent's
/// steering worker). Must be cheap and non-blocking: it is called from the
/// actor.
pub trait Steering: Send + Sync {
    /// Sets the steering mode of `service`; the answer says when the
    /// kernel steers as asked.
    fn set_mode(&self, service: &str, mode: SteerMode) -> Steered;
    /// Sets `Direct` for `service`, like `set_mode`, and tells when the
    /// kernel has really put its ports back on the stock path (warm-up
    /// redirect gone, sk_lookup entries removed): only then is the service
    /// reported ready.
    fn hand_back(&self, service: &str) -> HandBack;
}

/// Reads the kernel traffic counters of one service (implemented by the eBPF
/// module). Must be cheap and non-blocking: it is read at a ready service's
/// idle deadline.
pub trait ActivityProbe: Send + Sync {
    /// Time the last packet for `service` was seen, if any.
    fn last_activity(&self, service: &str) -> Option<Instant>;
    /// Number of currently open connections to `service`, used by
    /// `hold_while_connected`.
    fn open_connections(&self, service: &str) -> u32;
}

/// Hears every lifecycle step of every service (metrics, alerts, history).
/// Called from the service's actor: must not block.
pub trait LifecycleObserver: Send + Sync {
    /// One step of `service`.
    fn on_event(&self, service: &str, event: &super::types::LifecycleEvent);
    /// `service` entered `state` without a lifecycle step: adopted as it
    /// was found (`stopped`, `hibernated`), or `unknown` (Docker
    /// unreachable). Only the dashboard's timeline cares.
    fn on_unannounced(&self, service: &str, state: super::StateName) {
        let _ = (service, state);
    }
}

/// An observer that ignores everything (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl LifecycleObserver for NoObserver {
    fn on_event(&self, _: &str, _: &super::types::LifecycleEvent) {}
}
