//! The planner's side of learned pre-warming: asks the model
//! ([`crate::schedule::prewarm`]) for the next pre-warm from the demands
//! and outcomes remembered in the state file, starts the service when that
//! time comes (if it is down), and tells a hit from a miss.
//!
//! A pre-warm is a *hit* when traffic reaches the service after it became
//! ready from the pre-warm (the agent's own readiness probe comes before
//! that and does not count) and before it stops; a *miss* when it stops
//! (idle, manual, failure) without any. A hit is also a demand: the
//! request it served keeps the habit alive.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::Planner;
use crate::{
    agent::{registry::ServiceRecord, state_owner::StateUpdate},
    schedule::prewarm::{Outcome, Prediction, Prewarm, PrewarmSettings},
    service::{Command, ServiceState, ServiceStatus, Trigger},
};

/// A pre-warm under way.
#[derive(Debug, Clone)]
struct Pending {
    /// When it began (wall clock).
    at: Timestamp,
    /// When the service became ready from it (tokio clock).
    ready_since: Option<Instant>,
    /// The state machine has taken the wake (seen starting or ready): a
    /// stop from then on is a miss.
    started: bool,
}

/// Pre-warm bookkeeping of one service.
#[derive(Debug, Default)]
pub(super) struct PrewarmPlan {
    /// The prediction armed at the last pass.
    armed: Option<Prediction>,
    pending: Option<Pending>,
}

/// What a pass found.
pub(super) struct Step {
    /// The next pre-warm, if the pattern is strong enough.
    pub next: Option<Prediction>,
    /// A pre-warm's outcome is being watched (look again soon).
    pub watching: bool,
}

impl Planner {
    pub(super) fn prewarm_step(
        &self,
        plan: &mut PrewarmPlan,
        record: &ServiceRecord,
        status: &ServiceStatus,
        now: Timestamp,
    ) -> Step {
        let name = record.name();
        if let Some(pending) = &mut plan.pending {
            if let Some(outcome) = outcome(pending, status) {
                tracing::info!(service = %name, event = "prewarm_outcome", outcome = outcome.as_str());
                self.metrics.prewarm(name, outcome.as_str());
                self.state.send(StateUpdate::Prewarmed {
                    service: name.to_owned(),
                    at: pending.at.as_second(),
                    hit: outcome == Outcome::Hit,
                });
                if outcome == Outcome::Hit {
                    self.state.send(StateUpdate::Demand {
                        service: name.to_owned(),
                        at: now.as_second(),
                    });
                }
                plan.pending = None;
            }
        }
        if let Some(armed) = plan.armed.take() {
            let due = armed.at <= now && now < armed.expected;
            if due && plan.pending.is_none() && super::reasons::startable(status) {
                tracing::info!(service = %name, event = "prewarm_start", reason = %armed.reason);
                if record
                    .handle
                    .try_send(Command::Wake {
                        trigger: Trigger::Prewarm,
                    })
                    .is_ok()
                {
                    plan.pending = Some(Pending {
                        at: now,
                        ready_since: None,
                        started: false,
                    });
                }
            }
        }
        let memory = self.state.service(name);
        let demands: Vec<Timestamp> = memory
            .demands
            .iter()
            .filter_map(|s| Timestamp::from_second(*s).ok())
            .collect();
        let outcomes: Vec<(Timestamp, Outcome)> = memory
            .prewarms
            .iter()
            .filter_map(|(s, hit)| {
                let at = Timestamp::from_second(*s).ok()?;
                Some((at, if *hit { Outcome::Hit } else { Outcome::Miss }))
            })
            .collect();
        let start = status.start_estimate.unwrap_or(Duration::from_secs(10));
        let model = Prewarm::new(PrewarmSettings::default(), self.tz.clone());
        let next = model.next(&demands, &outcomes, now, start);
        plan.armed = next.clone();
        Step {
            next,
            watching: plan.pending.is_some(),
        }
    }
}

/// How the pre-warm `pending` turned out, once it is known. Traffic seen
/// after it became ready is a hit, also when the stop came before this
/// pass looked (the state machine keeps the last traffic stamp).
fn outcome(pending: &mut Pending, status: &ServiceStatus) -> Option<Outcome> {
    let served = |since: Option<Instant>| {
        since.is_some_and(|since| status.last_activity.is_some_and(|a| a > since))
    };
    match status.state {
        ServiceState::Unknown => None,
        ServiceState::Starting => {
            pending.started = true;
            None
        }
        ServiceState::Ready => {
            pending.started = true;
            let since = *pending.ready_since.get_or_insert(status.since);
            served(Some(since)).then_some(Outcome::Hit)
        }
        ServiceState::Stopping
        | ServiceState::Stopped
        | ServiceState::Hibernating
        | ServiceState::Hibernated
        | ServiceState::Failed { .. } => pending.started.then(|| {
            if served(pending.ready_since) {
                Outcome::Hit
            } else {
                Outcome::Miss
            }
        }),
    }
}
