//! The learned start estimate observer: after each start the agent made,
//! the state machine's new estimate goes to the state file's owner, so
//! the wait page shows it after a restart too.

use crate::{
    agent::state_owner::{StateHandle, StateUpdate},
    service::{LifecycleEvent, LifecycleObserver},
};

/// Sends learned estimates to the state file's owner.
pub struct LearnedStarts {
    state: StateHandle,
}

impl LearnedStarts {
    /// An observer sending to `state`.
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }
}

impl LifecycleObserver for LearnedStarts {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        let LifecycleEvent::Ready {
            estimate: Some(estimate),
            ..
        } = event
        else {
            return;
        };
        if let Ok(millis) = u64::try_from(estimate.as_millis()) {
            self.state.send(StateUpdate::LearnedStart {
                service: service.to_owned(),
                millis,
            });
        }
    }
}
