//! Pure transition logic of one service: `(state, input, now) -> effects`.
//!
//! No I/O and no clock reads here: the actor feeds inputs (commands, results
//! of runtime operations, timer and probe readings) with the current time
//! and executes the returned [`Effect`]s in order. This keeps every rule
//! deterministic and cheap to test.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::effects::{Activity, Effect, Input, Op, OpOutcome};
use super::guard::{backoff_delay, CrashGuard};
use super::idle::IdleTracker;
use super::learn::StartLearner;
use super::traits::{Observed, SteerMode};
use super::types::{
    Command, ContainerEvent, LifecycleEvent, ManualCommand, ServiceSettings, ServiceState,
    ServiceStatus, StartBlock, Trigger,
};

/// First delay between failed `observe` attempts.
const OBSERVE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Upper bound of the delay between failed `observe` attempts.
const OBSERVE_RETRY_CAP: Duration = Duration::from_secs(30);

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
}

impl Machine {
    /// Creates the machine in `Unknown` and returns the adoption effects.
    pub fn new(name: String, settings: ServiceSettings, now: Instant) -> (Self, Vec<Effect>) {
        let learner = StartLearner::new(settings.initial_start_estimate);
        let machine = Self {
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
        };
        (machine, vec![Effect::Run(Op::Observe)])
    }

    /// Current state.
    pub fn state(&self) -> &ServiceState {
        &self.state
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
            idle_timeout: self.settings.idle_timeout,
            last_activity: self.idle.last_activity,
            start_block: self.start_block(),
            upstream_ready: self.hand_back.is_some() || self.state == ServiceState::Ready,
            adopted: self.adopted,
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
                    self.begin_stop(StopReason::Idle { idle_s }, now, &mut fx);
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
            Command::Shutdown => {}
        }
    }

    fn on_wake(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
        match self.state {
            ServiceState::Stopped => self.begin_start(trigger, now, fx),
            ServiceState::Failed { .. } => self.retry_failed(trigger, now, fx),
            ServiceState::Stopping | ServiceState::Unknown => {
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
                    ServiceState::Stopping | ServiceState::Unknown => {
                        self.pending_wake = Some(Trigger::Manual)
                    }
                    ServiceState::Starting | ServiceState::Ready => {}
                }
            }
            ManualCommand::Stop => {
                self.pending_wake = None;
                match self.state {
                    ServiceState::Ready | ServiceState::Starting | ServiceState::Failed { .. } => {
                        self.begin_stop(StopReason::Manual, now, fx)
                    }
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
                info!(service = %self.name, event = "starting", trigger = "external");
                self.start_kind = StartKind::External;
                self.enter(ServiceState::Starting, now);
                let timeout = self.settings.start_timeout;
                fx.extend([
                    Effect::Notify(LifecycleEvent::Starting {
                        trigger: Trigger::External,
                    }),
                    Effect::CancelTimer,
                    Effect::Steer(SteerMode::Warming {
                        already_started: true,
                    }),
                    Effect::Run(Op::WaitReady { timeout }),
                ]);
            }
            (ContainerEvent::Died { exit_code }, ServiceState::Starting) => {
                let reason = format!("container died while starting (exit code {exit_code:?})");
                self.fail(reason, true, now, fx);
            }
            (ContainerEvent::Died { exit_code }, ServiceState::Ready) => {
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

    fn on_op_done(&mut self, out: OpOutcome, now: Instant, fx: &mut Vec<Effect>) {
        match (out, &self.state) {
            (OpOutcome::Ready(Ok(())), ServiceState::Starting) => self.begin_hand_back(now, fx),
            (OpOutcome::HandedBack, ServiceState::Starting | ServiceState::Unknown) => {
                self.become_ready(now, fx)
            }
            (OpOutcome::Ready(Err(reason)), ServiceState::Starting) => {
                self.fail(reason, true, now, fx)
            }
            (OpOutcome::Stopped(res), ServiceState::Stopping) => {
                match res {
                    Ok(()) => {
                        let r = self.stop_reason;
                        info!(service = %self.name, event = "stopped", reason = r.as_str(), idle_s = r.idle_s());
                        self.enter(ServiceState::Stopped, now);
                        fx.push(Effect::Notify(LifecycleEvent::Stopped {
                            reason: r.as_str(),
                        }));
                    }
                    Err(e) => self.fail(format!("stop failed: {e}"), false, now, fx),
                }
                if let Some(trigger) = self.pending_wake.take() {
                    self.on_wake(trigger, now, fx);
                }
            }
            (OpOutcome::Observed(Ok(o)), ServiceState::Unknown) => {
                self.adopted = true;
                self.observe_failures = 0;
                info!(service = %self.name, event = "adopted", observed = ?o);
                if o == Observed::AllRunning {
                    // Ready once the ports are on the stock path.
                    self.pending_wake = None;
                    self.hand_back = Some(HandingBack {
                        took: None,
                        since: now,
                    });
                    fx.push(Effect::Run(Op::HandBack));
                } else {
                    self.enter(ServiceState::Stopped, now);
                    fx.push(Effect::Steer(SteerMode::Steered));
                    if let Some(trigger) = self.pending_wake.take() {
                        self.begin_start(trigger, now, fx);
                    }
                }
            }
            (OpOutcome::Observed(Err(e)), ServiceState::Unknown) => {
                self.adopted = true;
                self.observe_failures = self.observe_failures.saturating_add(1);
                let delay =
                    backoff_delay(self.observe_failures, OBSERVE_RETRY_BASE, OBSERVE_RETRY_CAP);
                warn!(service = %self.name, event = "observe_failed", error = %e, retry_ms = delay.as_millis() as u64);
                self.last_error = Some(e);
                fx.push(Effect::Schedule(now + delay));
            }
            (out, state) => {
                debug!(service = %self.name, event = "stale_outcome", outcome = ?out, state = state.as_str())
            }
        }
    }

    fn on_timer(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        match self.state {
            ServiceState::Unknown if self.observe_failures > 0 => fx.push(Effect::Run(Op::Observe)),
            ServiceState::Failed { .. } => {
                if let Some(trigger) = self.pending_wake.take() {
                    self.retry_failed(trigger, now, fx);
                }
            }
            _ => {}
        }
    }

    /// Wake while `Failed`: honour the crash-loop guard and the backoff.
    fn retry_failed(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
        match self.start_block() {
            Some(StartBlock::CrashLoop) => {
                debug!(service = %self.name, event = "wake_ignored", reason = "crash_loop", trigger = ?trigger);
            }
            Some(StartBlock::Backoff { retry_at: at }) if now < at => {
                debug!(service = %self.name, event = "wake_deferred", reason = "backoff",
                    retry_in_ms = at.saturating_duration_since(now).as_millis() as u64);
                self.pending_wake = Some(trigger);
                fx.push(Effect::Schedule(at));
            }
            _ => self.begin_start(trigger, now, fx),
        }
    }

    fn begin_start(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "starting", trigger = ?trigger);
        self.pending_wake = None;
        self.start_kind = StartKind::Ours(now);
        self.enter(ServiceState::Starting, now);
        let timeout = self.settings.start_timeout;
        fx.extend([
            Effect::Notify(LifecycleEvent::Starting { trigger }),
            Effect::CancelTimer,
            Effect::Steer(SteerMode::Warming {
                already_started: false,
            }),
            Effect::Run(Op::Start { timeout }),
        ]);
    }

    /// The containers answer: held connections may go to them
    /// (`upstream_ready`), and the ports go back to the stock path.
    fn begin_hand_back(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let took = match self.start_kind {
            StartKind::Ours(began) => {
                let took = now.saturating_duration_since(began);
                self.learner.record(took);
                Some(took)
            }
            StartKind::External => None,
        };
        self.hand_back = Some(HandingBack { took, since: now });
        fx.push(Effect::Run(Op::HandBack));
    }

    /// The ports are on the stock path: the service is ready.
    fn become_ready(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let Some(HandingBack { took, since }) = self.hand_back else {
            return;
        };
        let handback_ms = now.saturating_duration_since(since).as_millis() as u64;
        let adopted = self.state == ServiceState::Unknown;
        match took {
            Some(took) => {
                info!(service = %self.name, event = "ready", duration_ms = took.as_millis() as u64,
                    estimate_ms = self.learner.estimate().map_or(0, |d| d.as_millis() as u64), handback_ms)
            }
            None if adopted => {
                info!(service = %self.name, event = "ready", trigger = "adopted", handback_ms)
            }
            None => info!(service = %self.name, event = "ready", trigger = "external", handback_ms),
        }
        if !adopted {
            fx.push(Effect::Notify(LifecycleEvent::Ready {
                took,
                estimate: self.learner.estimate(),
            }));
            self.guard.record_success();
        }
        self.pending_wake = None;
        self.idle.ready_at = Some(now);
        self.enter(ServiceState::Ready, now);
    }

    fn begin_stop(&mut self, reason: StopReason, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "stopping", reason = reason.as_str(), idle_s = reason.idle_s());
        self.stop_reason = reason;
        self.pending_wake = None;
        self.idle.ready_at = None;
        self.enter(ServiceState::Stopping, now);
        // Steer first so a connection arriving while stopping is held.
        fx.extend([
            Effect::Notify(LifecycleEvent::Stopping {
                reason: reason.as_str(),
            }),
            Effect::CancelOp,
            Effect::CancelTimer,
            Effect::Steer(SteerMode::Steered),
            Effect::Run(Op::Stop),
        ]);
    }

    /// Enters `Failed`; `count` says whether it counts as a failed start.
    fn fail(&mut self, reason: String, count: bool, now: Instant, fx: &mut Vec<Effect>) {
        let tripped = count && self.guard.record_failure(now);
        warn!(service = %self.name, event = "failed", reason = %reason,
            recent_failures = self.guard.recent_failures(), crash_loop = tripped);
        self.last_error = Some(reason.clone());
        self.idle.ready_at = None;
        self.enter(
            ServiceState::Failed {
                reason: reason.clone(),
            },
            now,
        );
        fx.extend([
            Effect::Notify(LifecycleEvent::Failed {
                reason,
                crash_loop: tripped,
            }),
            Effect::CancelOp,
            Effect::Steer(SteerMode::Steered),
        ]);
    }

    fn enter(&mut self, state: ServiceState, now: Instant) {
        self.state = state;
        self.since = now;
        self.hand_back = None;
    }

    fn check_idle_if_ready(&self, fx: &mut Vec<Effect>) {
        if self.state == ServiceState::Ready {
            fx.push(Effect::CheckIdle);
        }
    }

    fn idle_due(&self, a: Activity, now: Instant) -> bool {
        self.state == ServiceState::Ready && self.idle.due(a, &self.settings, now)
    }
}
