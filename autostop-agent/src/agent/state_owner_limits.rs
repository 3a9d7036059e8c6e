//! The state owner's handle as the docker module's [`LimitJournal`]: a
//! hibernation's reclaim thread records a container's memory limits and
//! waits until they are on disk before it changes anything, and clears
//! them once they are back (see [`crate::docker`]'s `limits`).

use std::{sync::mpsc as std_mpsc, time::Duration};

use super::{StateHandle, StateUpdate};
use crate::docker::LimitJournal;
use crate::state::SavedLimits;

/// How long a reclaim waits for its record to be on disk before it gives
/// up (and changes nothing).
pub const RECORD_WAIT: Duration = Duration::from_secs(30);

impl LimitJournal for StateHandle {
    fn recorded(&self, container: &str) -> Option<SavedLimits> {
        self.limits.borrow().get(container).cloned()
    }

    fn record(&self, container: &str, limits: &SavedLimits) -> Result<(), String> {
        let (saved, written) = std_mpsc::sync_channel(1);
        self.updates
            .send(StateUpdate::LimitsRecorded {
                container: container.to_owned(),
                limits: limits.clone(),
                saved,
            })
            .map_err(|_| "the state owner has stopped".to_owned())?;
        match written.recv_timeout(RECORD_WAIT) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the state file was not written within {RECORD_WAIT:?}"
            )),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                Err("the state owner has stopped".to_owned())
            }
        }
    }

    fn clear(&self, container: &str, limits: Option<&SavedLimits>) {
        self.send(StateUpdate::LimitsRestored {
            container: container.to_owned(),
            limits: limits.cloned(),
        });
    }
}
