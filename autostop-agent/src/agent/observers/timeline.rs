//! The timeline observer: every lifecycle step, with its trigger or
//! reason and the wall-clock time, goes to the state file's owner, which
//! keeps the dashboard's bounded history
//! ([`crate::state::Timeline`]); so do the states entered without a step
//! (an adoption: cause `adopted`; Docker lost: `unknown`, cause `docker
//! unreachable`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    agent::state_owner::{StateHandle, StateUpdate},
    service::{LifecycleEvent, LifecycleObserver, StateName},
    state::Transition,
};

/// Sends each step to the state file's owner.
pub struct TimelineObserver {
    state: StateHandle,
}

impl TimelineObserver {
    /// An observer sending to `state`.
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }
}

/// Unix milliseconds of `at`.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl TimelineObserver {
    fn send(&self, service: &str, state: StateName, cause: Option<String>, took_ms: Option<u64>) {
        self.state.send(StateUpdate::Transition {
            service: service.to_owned(),
            transition: Transition {
                at_ms: unix_ms(SystemTime::now()),
                state,
                cause,
            },
            took_ms,
        });
    }
}

impl LifecycleObserver for TimelineObserver {
    fn on_unannounced(&self, service: &str, state: StateName) {
        let cause = match state {
            StateName::Unknown => "docker unreachable",
            _ => "adopted",
        };
        self.send(service, state, Some(cause.to_owned()), None);
    }

    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        let (cause, took) = match event {
            LifecycleEvent::Starting { trigger } => (Some(trigger.as_str().to_owned()), None),
            LifecycleEvent::Ready { took, .. } => (None, *took),
            LifecycleEvent::Stopping { reason } | LifecycleEvent::Stopped { reason } => {
                (Some((*reason).to_owned()), None)
            }
            LifecycleEvent::Failed { reason, .. } => (Some(reason.clone()), None),
        };
        let took_ms = took.and_then(|d| u64::try_from(d.as_millis()).ok());
        self.send(service, event.state(), cause, took_ms);
    }
}
