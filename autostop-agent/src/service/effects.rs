//! Vocabulary between the pure [`Machine`](super::machine::Machine) and the
//! actor: the inputs it consumes, the effects it asks for, and the runtime
//! operations (with their outcomes) the actor runs on its behalf.

use std::time::Duration;

use tokio::time::Instant;

use super::traits::{Hibernation, Observed, SteerMode};
use super::types::{Command, LifecycleEvent};

/// A long-running runtime operation the actor runs on the machine's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `start` then `wait_ready`, bounded by the timeout.
    Start {
        /// The service's `start_timeout`.
        timeout: Duration,
    },
    /// Only `wait_ready` (containers were started by someone else).
    WaitReady {
        /// The service's `start_timeout`.
        timeout: Duration,
    },
    /// `stop`.
    Stop,
    /// `hibernate`: pause, then reclaim memory to swap.
    Hibernate,
    /// `thaw`, bounded by the timeout.
    Thaw {
        /// The service's `start_timeout`.
        timeout: Duration,
    },
    /// `observe`, for adoption.
    Observe,
    /// Put the service's ports back on the stock path and wait until the
    /// kernel has done it ([`super::traits::Steering::hand_back`]).
    HandBack,
}

/// Result of an [`Op`], fed back to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// `Start`/`WaitReady` finished: `Ok` when ready, `Err` on error or
    /// timeout.
    Ready(Result<(), StartFailure>),
    /// `Stop` finished.
    Stopped(Result<(), String>),
    /// `Hibernate` finished.
    Hibernated(Result<Hibernation, String>),
    /// `Thaw` finished.
    Thawed(Result<(), String>),
    /// `Observe` finished.
    Observed(Result<Observed, String>),
    /// `HandBack` finished: the ports are on the stock path.
    HandedBack,
}

/// Why a start did not end ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// What the log, the API and the events say.
    pub reason: String,
    /// Docker did not answer: not the service's failure, so the
    /// crash-loop guard does not count it (a dockerd restart would
    /// otherwise latch every service it caught starting).
    pub docker_unreachable: bool,
}

/// Probe reading taken by the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// Latest traffic seen by the kernel.
    pub last_activity: Option<Instant>,
    /// Currently open connections.
    pub open_connections: u32,
}

/// Everything the machine reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A command from the handle (`Shutdown` is handled by the actor).
    Command(Command),
    /// The in-flight operation finished.
    OpDone(OpOutcome),
    /// The timer requested by [`Effect::Schedule`] fired.
    Timer,
    /// Probe reading at the idle deadline
    /// ([`Machine::idle_deadline`](super::machine::Machine::idle_deadline)).
    Tick(Activity),
    /// Fresh probe reading requested by [`Effect::ConfirmIdle`].
    IdleConfirm(Activity),
}

/// Side effect the actor must perform, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell the lifecycle observer.
    Notify(LifecycleEvent),
    /// Call `Steering::set_mode`.
    Steer(SteerMode),
    /// Run this operation, replacing (dropping) any in-flight one.
    Run(Op),
    /// Drop the in-flight operation without waiting for it.
    CancelOp,
    /// Arm the single timer (replacing any armed one).
    Schedule(Instant),
    /// Disarm the timer.
    CancelTimer,
    /// Read the probe now and feed [`Input::Tick`].
    CheckIdle,
    /// Re-read the probe and feed [`Input::IdleConfirm`] before stopping.
    ConfirmIdle,
}
