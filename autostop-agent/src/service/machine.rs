//! Pure transition logic of one service: `(state, input, now) -> effects`.
//!
//! No I/O and no clock reads here: the actor feeds inputs (commands, results
//! of runtime operations, timer and probe readings) with the current time
//! and executes the returned [`Effect`]s in order. This keeps every rule
//! deterministic and cheap to test.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

mod steps;

use super::effects::{Effect, Input, Op};
use super::guard::CrashGuard;
use super::idle::IdleTracker;
use super::learn::StartLearner;
use super::traits::{Hibernation, SteerMode};
use super::types::{
    Command, ContainerEvent, LifecycleEvent, ManualCommand, ServiceSettings, ServiceState,
    ServiceStatus, StartBlock, Trigger,
};
use crate::config::Sleep;

/// Why the service is being stopped (for the `stopped` log line).
#[derive(Debug, Clone, Copy, PartialEq)]
enum StopReason {
    Idle { idle_s: u64 },
    Manual,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Idle { .. } => "idle",
            Self::Manual => "manual",
        }
    }

    fn idle_s(self) -> Option<u64> {
        match self {
            Self::Idle { idle_s } => Some(idle_s),
            Self::Manual => None,
        }
    }
}

/// Who started the containers currently starting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StartKind {
    /// The agent called `start` at this instant (duration is learned).
    Ours(Instant),
    /// Someone ran the containers by hand (duration unknown).
    External,
    /// The agent thawed a hibernated service at this instant (not a cold
    /// start: its duration is not learned).
    Thaw(Instant),
}

/// Readiness confirmed, ports being handed back to the stock path: the
/// service is reported ready only once that is done.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HandingBack {
    /// How long the agent's own start took (`None` for adoption or a start
    /// someone else made).
    took: Option<Duration>,
    /// When readiness was confirmed.
    since: Instant,
}

/// State machine of one service.
#[derive(Debug)]
pub struct Machine {
    name: String,
    settings: ServiceSettings,
    state: ServiceState,
    since: Instant,
    last_error: Option<String>,
    idle: IdleTracker,
    pending_wake: Option<Trigger>,
    stop_reason: StopReason,
    start_kind: StartKind,
    learner: StartLearner,
    guard: CrashGuard,
    observe_failures: u32,
    hand_back: Option<HandingBack>,
    /// See [`ServiceStatus::adopted`].
    adopted: bool,
    /// See [`ServiceStatus::hibernation`].
    hibernation: Option<Hibernation>,
    /// When the agent decided to hibernate the service (or adopted it
    /// paused): traffic the kernel counts after it wakes it, also traffic
    /// that came while it was being paused and reclaimed (the kernel
    /// queued those handshakes; no later packet may come).
    asleep_since: Option<Instant>,
    /// Connections open in the containers when it went to sleep (0 when
    /// adopted paused): more of them while hibernated means a client the
    /// kernel queued, a wake even when the counters missed its packets
    /// (an agent that just started counts only once its endpoint refresh
    /// ran).
    asleep_connections: u32,
}

impl Machine {
    /// Creates the machine in `Unknown` and returns the adoption effects.
    pub fn new(name: String, settings: ServiceSettings, now: Instant) -> (Self, Vec<Effect>) {
        let learner = StartLearner::new(settings.initial_start_estimate);
        let mut machine = Self {
            name,
            settings,
            state: ServiceState::Unknown,
            since: now,
            last_error: None,
            idle: IdleTracker::default(),
            pending_wake: None,
            stop_reason: StopReason::Manual,
            start_kind: StartKind::External,
            learner,
            guard: CrashGuard::default(),
            observe_failures: 0,
            hand_back: None,
            adopted: false,
            hibernation: None,
            asleep_since: None,
            asleep_connections: 0,
        };
        if let Some(resumed) = machine.settings.resume.clone() {
            machine.idle.hold = resumed.hold;
            machine.guard.restore(
                resumed.crash_loop.is_some(),
                resumed.retry_in.and_then(|d| now.checked_add(d)),
            );
            machine.last_error = resumed.crash_loop;
        }
        (machine, vec![Effect::Run(Op::Observe)])
    }

    /// Current state.
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// When the actor should next read the probe to decide whether the
    /// service is idle: only while it is ready and not on hold (see
    /// [`super::idle`]). Every input may move it, so the actor asks again
    /// after each one.
    pub fn idle_deadline(&self) -> Option<Instant> {
        if self.state != ServiceState::Ready {
            return None;
        }
        self.idle.deadline(&self.settings)
    }

    /// Learned start duration, for the caller to persist.
    pub fn learned_start(&self) -> Option<Duration> {
        self.learner.estimate()
    }

    /// Snapshot to publish.
    pub fn status(&self) -> ServiceStatus {
        ServiceStatus {
            state: self.state.clone(),
            since: self.since,
            last_error: self.last_error.clone(),
            start_estimate: self.learned_start(),
            hold: self.idle.hold,
            keep_awake: self.idle.keep_awake.clone(),
            idle_timeout: self.settings.idle_timeout,
            last_activity: self.idle.last_activity,
            start_block: self.start_block(),
            upstream_ready: self.hand_back.is_some() || self.state == ServiceState::Ready,
            adopted: self.adopted,
            hibernation: self.hibernation.clone(),
        }
    }

    /// What keeps a wake from starting the service (only while `Failed`).
    fn start_block(&self) -> Option<StartBlock> {
        matches!(self.state, ServiceState::Failed { .. })
            .then(|| self.guard.block())
            .flatten()
    }

    /// Applies one input and returns the effects to perform, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Command(cmd) => self.on_command(cmd, now, &mut fx),
            Input::OpDone(out) => self.on_op_done(out, now, &mut fx),
            Input::Timer => self.on_timer(now, &mut fx),
            Input::Tick(a) if self.traffic_while_hibernated(a) => {
                self.idle.note(a);
                self.on_wake(Trigger::Syn, now, &mut fx);
            }
            Input::Tick(a) => {
                self.idle.note(a);
                if self.idle_due(a, now) {
                    fx.push(Effect::ConfirmIdle);
                }
            }
            Input::IdleConfirm(a) => {
                self.idle.note(a);
                if self.idle_due(a, now) {
                    let idle_s = self.idle.idle_for(now).as_secs();
                    match self.settings.sleep {
                        Sleep::Stop => self.begin_stop(StopReason::Idle { idle_s }, now, &mut fx),
                        Sleep::Hibernate => {
                            self.asleep_connections = a.open_connections;
                            self.begin_hibernate(idle_s, now, &mut fx)
                        }
                    }
                } else if self.state == ServiceState::Ready
                    && !self.idle.hold
                    && self.idle.keep_awake.is_empty()
                    && self.idle.quiet_long_enough(&self.settings, now)
                {
                    // Only the open connections keep it up: look again soon.
                    self.idle.recheck_at = Some(now + super::idle::CONNECTED_RECHECK);
                }
            }
        }
        fx
    }

    fn on_command(&mut self, cmd: Command, now: Instant, fx: &mut Vec<Effect>) {
        match cmd {
            Command::Wake { trigger } => self.on_wake(trigger, now, fx),
            Command::Manual(m) => self.on_manual(m, now, fx),
            Command::ContainerEvent(e) => self.on_container_event(e, now, fx),
            Command::DockerUnreachable => {
                self.adopted = true;
                if matches!(self.state, ServiceState::Starting) {
                    // The start in flight is lost; redo it once adopted.
                    self.pending_wake.get_or_insert(Trigger::Manual);
                }
                fx.extend([Effect::CancelOp, Effect::CancelTimer]);
                if self.state != ServiceState::Unknown {
                    warn!(service = %self.name, event = "docker_unreachable", from = self.state.as_str());
                    self.enter(ServiceState::Unknown, now);
                }
            }
            Command::DockerBack => {
                if self.state == ServiceState::Unknown {
                    info!(service = %self.name, event = "docker_back");
                    self.observe_failures = 0;
                    fx.extend([Effect::CancelTimer, Effect::Run(Op::Observe)]);
                }
            }
            Command::ConfigChanged(settings) => {
                info!(service = %self.name, event = "config_changed");
                self.learner.seed_if_empty(settings.initial_start_estimate);
                self.settings = settings;
                self.guard.reset();
                self.check_idle_if_ready(fx);
            }
            Command::KeepAwake(reasons) => {
                if reasons != self.idle.keep_awake {
                    info!(service = %self.name, event = "keep_awake", reasons = ?reasons);
                    self.idle.keep_awake(reasons, now);
                    self.check_idle_if_ready(fx);
                }
            }
            Command::Shutdown => {}
        }
    }

    fn on_wake(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
        match self.state {
            ServiceState::Stopped => self.begin_start(trigger, now, fx),
            ServiceState::Hibernated => self.begin_thaw(trigger, now, fx),
            ServiceState::Failed { .. } => self.retry_failed(trigger, now, fx),
            ServiceState::Stopping | ServiceState::Hibernating | ServiceState::Unknown => {
                debug!(service = %self.name, event = "wake_deferred", trigger = ?trigger);
                self.pending_wake = Some(trigger);
            }
            ServiceState::Starting | ServiceState::Ready => {}
        }
    }

    fn on_manual(&mut self, m: ManualCommand, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "manual", command = ?m);
        match m {
            ManualCommand::Start => {
                self.idle.last_manual_start = Some(now);
                self.guard.reset();
                match self.state {
                    ServiceState::Stopped | ServiceState::Failed { .. } => {
                        self.begin_start(Trigger::Manual, now, fx)
                    }
                    ServiceState::Hibernated => self.begin_thaw(Trigger::Manual, now, fx),
                    ServiceState::Stopping | ServiceState::Hibernating | ServiceState::Unknown => {
                        self.pending_wake = Some(Trigger::Manual)
                    }
                    ServiceState::Starting | ServiceState::Ready => {}
                }
            }
            ManualCommand::Stop => {
                self.pending_wake = None;
                match self.state {
                    ServiceState::Ready
                    | ServiceState::Starting
                    | ServiceState::Hibernating
                    | ServiceState::Hibernated
                    | ServiceState::Failed { .. } => self.begin_stop(StopReason::Manual, now, fx),
                    _ => {}
                }
            }
            ManualCommand::Hold => self.idle.hold = true,
            ManualCommand::Release => {
                self.idle.hold = false;
                self.check_idle_if_ready(fx);
            }
            ManualCommand::SetIdleTimeout(d) => {
                self.settings.idle_timeout = d;
                self.check_idle_if_ready(fx);
            }
        }
    }

    fn on_container_event(&mut self, e: ContainerEvent, now: Instant, fx: &mut Vec<Effect>) {
        match (e, &self.state) {
            (ContainerEvent::Started, ServiceState::Stopped | ServiceState::Failed { .. }) => {
                self.begin_external_start("external", now, fx);
            }
            (ContainerEvent::Died { exit_code }, ServiceState::Starting) => {
                let reason = match exit_code {
                    Some(code) => format!("container died while starting (exit code {code})"),
                    None => "container died while starting".to_owned(),
                };
                self.fail(reason, true, now, fx);
            }
            (
                ContainerEvent::Died { exit_code },
                ServiceState::Ready | ServiceState::Hibernating | ServiceState::Hibernated,
            ) => {
                info!(service = %self.name, event = "stopped", reason = "container_died", exit_code = ?exit_code);
                self.idle.ready_at = None;
                self.enter(ServiceState::Stopped, now);
                fx.extend([
                    Effect::Notify(LifecycleEvent::Stopped {
                        reason: "container_died",
                    }),
                    Effect::Steer(SteerMode::Steered),
                ]);
            }
            _ => {}
        }
    }
}
