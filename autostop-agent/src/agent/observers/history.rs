//! The start history observer: each start (not those someone else made)
//! and the duration of each start the agent made, kept in the service's
//! record ([`super::super::registry::ServiceCells::history`]) so they go
//! when the service goes.

use std::time::SystemTime;

use crate::{
    agent::registry::DirectoryReader,
    service::{LifecycleEvent, LifecycleObserver, Trigger},
};

/// Records starts in the services' cells.
pub struct HistoryObserver {
    directory: DirectoryReader,
}

impl HistoryObserver {
    /// An observer writing into the services of `directory`.
    pub fn new(directory: DirectoryReader) -> Self {
        Self { directory }
    }
}

impl LifecycleObserver for HistoryObserver {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        match event {
            LifecycleEvent::Starting { trigger } if *trigger != Trigger::External => {
                if let Some(record) = self.directory.get(service) {
                    let now = SystemTime::now();
                    record.cells.history.send_modify(|h| h.started(now));
                }
            }
            LifecycleEvent::Ready {
                took: Some(took), ..
            } => {
                if let Some(record) = self.directory.get(service) {
                    record
                        .cells
                        .history
                        .send_modify(|h| h.last_start = Some(*took));
                }
            }
            _ => {}
        }
    }
}
