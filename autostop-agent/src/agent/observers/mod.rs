//! What hears the services' lifecycle steps: a fan-out of small
//! observers, each in its own module and each with one job. The state
//! machines call [`Fanout::on_event`] from their actors, so every observer
//! only records or sends a message (never waits on I/O).
//!
//! - [`crate::metrics::Metrics`]: the Prometheus counters and state gauge;
//! - [`history`]: recent starts and the last start's duration, shown by
//!   the status API;
//! - [`learned`]: the learned start estimate, sent to the state file's
//!   owner;
//! - [`timeline`]: every step with its time and cause, sent to the state
//!   file's owner (the dashboard's history);
//! - [`savings`]: starts and stops, sent to the RAM accounting;
//! - [`alerts`]: failed starts, sent to the alert webhook.

pub mod alerts;
pub mod history;
pub mod learned;
pub mod savings;
pub mod timeline;

use std::sync::Arc;

use crate::service::{LifecycleEvent, LifecycleObserver, StateName};

/// Every observer, called in order.
pub struct Fanout(Vec<Arc<dyn LifecycleObserver>>);

impl Fanout {
    /// A fan-out to `observers`.
    pub fn new(observers: Vec<Arc<dyn LifecycleObserver>>) -> Self {
        Self(observers)
    }
}

impl LifecycleObserver for Fanout {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        for observer in &self.0 {
            observer.on_event(service, event);
        }
    }

    fn on_unannounced(&self, service: &str, state: StateName) {
        for observer in &self.0 {
            observer.on_unannounced(service, state);
        }
    }
}
