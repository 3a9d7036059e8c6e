//! The machine's outcome handling and state changes: what finished runtime
//! operations and timers do, and the steps every transition is made of
//! (begin a start, hand the ports back, become ready, begin a stop, fail).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{HandingBack, Machine, StartKind, StopReason};
use crate::service::effects::{Activity, Effect, Op, OpOutcome};
use crate::service::guard::backoff_delay;
use crate::service::traits::Hibernation;
use crate::service::traits::{Observed, SteerMode};
use crate::service::types::{LifecycleEvent, ServiceState, StartBlock, Trigger};

/// First delay between failed `observe` attempts.
const OBSERVE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Upper bound of the delay between failed `observe` attempts.
const OBSERVE_RETRY_CAP: Duration = Duration::from_secs(30);

impl Machine {
    pub(super) fn on_op_done(&mut self, out: OpOutcome, now: Instant, fx: &mut Vec<Effect>) {
        match (out, &self.state) {
            (OpOutcome::Ready(Ok(())), ServiceState::Starting) => self.begin_hand_back(now, fx),
            (OpOutcome::HandedBack, ServiceState::Starting | ServiceState::Unknown) => {
                self.become_ready(now, fx)
            }
            (OpOutcome::Ready(Err(failure)), ServiceState::Starting) => {
                self.fail(failure.reason, !failure.docker_unreachable, now, fx)
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
            (OpOutcome::Hibernated(res), ServiceState::Hibernating) => {
                self.hibernated(res, now, fx)
            }
            (OpOutcome::Thawed(Ok(())), ServiceState::Starting) => {
                self.begin_hand_back(now, fx);
                // Never steered: nothing to hand back.
                self.become_ready(now, fx);
            }
            (OpOutcome::Thawed(Err(e)), ServiceState::Starting) => {
                self.fail(format!("thaw failed: {e}"), false, now, fx)
            }
            (OpOutcome::Observed(Ok(Observed::Paused)), ServiceState::Unknown) => {
                self.adopted = true;
                self.observe_failures = 0;
                info!(service = %self.name, event = "adopted", observed = "paused");
                self.enter(ServiceState::Hibernated, now);
                self.asleep_since = Some(now);
                self.asleep_connections = 0;
                // Its own sockets take new connections.
                fx.push(Effect::Steer(SteerMode::Direct));
                if let Some(trigger) = self.pending_wake.take() {
                    self.begin_thaw(trigger, now, fx);
                }
            }
            (OpOutcome::Observed(Ok(o)), ServiceState::Unknown) => {
                self.adopted = true;
                self.observe_failures = 0;
                info!(service = %self.name, event = "adopted", observed = ?o);
                let resumed = self.settings.resume.as_ref();
                if resumed.is_some_and(|r| r.starting) && o != Observed::AllStopped {
                    // Taken over mid-start: its readiness is still ahead.
                    self.begin_external_start("resumed", now, fx);
                } else if o == Observed::AllRunning {
                    // Ready once the ports are on the stock path.
                    self.pending_wake = None;
                    self.hand_back = Some(HandingBack {
                        took: None,
                        since: now,
                    });
                    fx.push(Effect::Run(Op::HandBack));
                } else {
                    match self.guard.block() {
                        // Failed in the agent this one took over from:
                        // still failed (clients are answered at once).
                        Some(_) if resumed.is_some() => {
                            let reason = self.last_error.clone().unwrap_or_else(|| {
                                "the start failed before the hand-over".to_owned()
                            });
                            self.enter(ServiceState::Failed { reason }, now);
                        }
                        _ => self.enter(ServiceState::Stopped, now),
                    }
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

    pub(super) fn on_timer(&mut self, now: Instant, fx: &mut Vec<Effect>) {
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
    pub(super) fn retry_failed(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
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

    /// Containers someone else started (`how`: "external", or "resumed"
    /// after a hand-over): steer while warming, wait for readiness.
    pub(super) fn begin_external_start(&mut self, how: &str, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "starting", trigger = how);
        self.pending_wake = None;
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

    pub(super) fn begin_start(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
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
    pub(super) fn begin_hand_back(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let took = match self.start_kind {
            StartKind::Ours(began) => {
                let took = now.saturating_duration_since(began);
                self.learner.record(took);
                Some(took)
            }
            StartKind::Thaw(began) => {
                // Ready at once: nothing was steered.
                self.hand_back = Some(HandingBack {
                    took: Some(now.saturating_duration_since(began)),
                    since: now,
                });
                return;
            }
            StartKind::External => None,
        };
        self.hand_back = Some(HandingBack { took, since: now });
        fx.push(Effect::Run(Op::HandBack));
    }

    /// Idle with `sleep = "hibernate"`: pause and reclaim, ports untouched.
    pub(super) fn begin_hibernate(&mut self, idle_s: u64, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "hibernating", idle_s);
        self.pending_wake = None;
        self.idle.ready_at = None;
        self.enter(ServiceState::Hibernating, now);
        self.asleep_since = Some(now);
        fx.extend([
            Effect::Notify(LifecycleEvent::Stopping {
                reason: "hibernate",
            }),
            Effect::CancelOp,
            Effect::CancelTimer,
            Effect::Run(Op::Hibernate),
        ]);
    }

    fn hibernated(&mut self, res: Result<Hibernation, String>, now: Instant, fx: &mut Vec<Effect>) {
        match res {
            Ok(h) => {
                if let Some(note) = &h.note {
                    warn!(service = %self.name, event = "hibernated", reclaimed = h.reclaimed,
                        awake_bytes = h.awake, resident_bytes = h.resident, swap_bytes = h.swap, note = %note);
                } else {
                    info!(service = %self.name, event = "hibernated", reclaimed = h.reclaimed,
                        awake_bytes = h.awake, resident_bytes = h.resident, swap_bytes = h.swap);
                }
                self.enter(ServiceState::Hibernated, now);
                self.hibernation = Some(h);
                fx.push(Effect::Notify(LifecycleEvent::Stopped {
                    reason: "hibernate",
                }));
                if let Some(trigger) = self.pending_wake.take() {
                    self.begin_thaw(trigger, now, fx);
                }
            }
            Err(e) => {
                // Not paused (the runtime undid its pauses): ready again,
                // with a fresh idle timer before the next attempt.
                warn!(service = %self.name, event = "hibernate_failed", error = %e);
                self.last_error = Some(format!("hibernate failed: {e}"));
                self.pending_wake = None;
                self.idle.ready_at = Some(now);
                self.enter(ServiceState::Ready, now);
                fx.push(Effect::Notify(LifecycleEvent::Ready {
                    took: None,
                    estimate: self.learner.estimate(),
                }));
            }
        }
    }

    /// A hibernated service is wanted: unpause it; it is ready once that
    /// is done (its listeners never closed, nothing was steered).
    pub(super) fn begin_thaw(&mut self, trigger: Trigger, now: Instant, fx: &mut Vec<Effect>) {
        info!(service = %self.name, event = "waking", trigger = ?trigger);
        self.pending_wake = None;
        self.start_kind = StartKind::Thaw(now);
        self.enter(ServiceState::Starting, now);
        let timeout = self.settings.start_timeout;
        fx.extend([
            Effect::Notify(LifecycleEvent::Starting { trigger }),
            Effect::CancelTimer,
            Effect::Run(Op::Thaw { timeout }),
        ]);
    }

    /// Traffic the kernel counted after the service went to sleep, or
    /// more connections open in its containers than then.
    pub(super) fn traffic_while_hibernated(&self, a: Activity) -> bool {
        self.state == ServiceState::Hibernated
            && ((a.last_activity.is_some() && a.last_activity > self.asleep_since)
                || a.open_connections > self.asleep_connections)
    }

    /// The ports are on the stock path: the service is ready.
    pub(super) fn become_ready(&mut self, now: Instant, fx: &mut Vec<Effect>) {
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
        // Adopted after a hand-over: the idle timer goes on from the old
        // agent's last activity.
        let idle_for = self.settings.resume.as_ref().and_then(|r| r.idle_for);
        let since = match idle_for {
            Some(idle_for) if self.state == ServiceState::Unknown => now.checked_sub(idle_for),
            _ => None,
        };
        self.idle.ready_at = Some(since.unwrap_or(now));
        self.enter(ServiceState::Ready, now);
    }

    pub(super) fn begin_stop(&mut self, reason: StopReason, now: Instant, fx: &mut Vec<Effect>) {
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
    pub(super) fn fail(&mut self, reason: String, count: bool, now: Instant, fx: &mut Vec<Effect>) {
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

    pub(super) fn enter(&mut self, state: ServiceState, now: Instant) {
        if state != ServiceState::Hibernated {
            self.hibernation = None;
        }
        if !matches!(state, ServiceState::Hibernating | ServiceState::Hibernated) {
            self.asleep_since = None;
        }
        self.state = state;
        self.since = now;
        self.hand_back = None;
        self.idle.recheck_at = None;
    }

    pub(super) fn check_idle_if_ready(&self, fx: &mut Vec<Effect>) {
        if self.state == ServiceState::Ready {
            fx.push(Effect::CheckIdle);
        }
    }

    pub(super) fn idle_due(&self, a: Activity, now: Instant) -> bool {
        self.state == ServiceState::Ready && self.idle.due(a, &self.settings, now)
    }
}
