//! The RAM accounting observer: starts, stops and readiness go to the
//! memory task ([`crate::agent::memory`]), which owns the savings ledger
//! and the samples.

use tokio::sync::mpsc;

use crate::service::{LifecycleEvent, LifecycleObserver};

/// A lifecycle step the memory task cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavingsEvent {
    /// A start began: its downtime ends now.
    Starting(String),
    /// A stop began or the containers are down: it uses no memory.
    Stopped(String),
    /// It is ready: sample it soon.
    Ready(String),
}

/// Sends the steps to the memory task.
pub struct SavingsObserver {
    events: mpsc::UnboundedSender<SavingsEvent>,
}

impl SavingsObserver {
    /// An observer sending to `events`.
    pub fn new(events: mpsc::UnboundedSender<SavingsEvent>) -> Self {
        Self { events }
    }
}

impl LifecycleObserver for SavingsObserver {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        let service = service.to_owned();
        let event = match event {
            LifecycleEvent::Starting { .. } => SavingsEvent::Starting(service),
            LifecycleEvent::Stopping { .. } | LifecycleEvent::Stopped { .. } => {
                SavingsEvent::Stopped(service)
            }
            LifecycleEvent::Ready { .. } => SavingsEvent::Ready(service),
            LifecycleEvent::Failed { .. } => return,
        };
        // Dropped once the memory task has ended (shutdown).
        let _ = self.events.send(event);
    }
}
