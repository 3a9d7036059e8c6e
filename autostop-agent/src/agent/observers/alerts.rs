//! The alert observer: a failed start (and a tripped crash-loop guard)
//! goes to the alert webhook's delivery task through a bounded queue
//! (bounded retries, see [`crate::alerts`]), so the state machines never
//! wait on it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    service::{LifecycleEvent, LifecycleObserver},
    supervisor::{Supervised, Supervisor},
};

/// Something that wants to hear about failures (the alert webhook).
pub trait FailureSink: Send + Sync {
    /// A start failed; `crash_loop` when the guard tripped.
    fn failed(&self, service: &str, reason: &str, crash_loop: bool);
}

/// Tells a [`FailureSink`] about failures.
pub struct AlertObserver {
    sink: Arc<dyn FailureSink>,
}

impl AlertObserver {
    /// An observer telling `sink`.
    pub fn new(sink: Arc<dyn FailureSink>) -> Self {
        Self { sink }
    }
}

impl LifecycleObserver for AlertObserver {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        if let LifecycleEvent::Failed { reason, crash_loop } = event {
            self.sink.failed(service, reason, *crash_loop);
        }
    }
}

/// Queues failure events for the webhook's delivery task.
pub struct Webhook {
    queue: tokio::sync::mpsc::Sender<String>,
}

impl Webhook {
    /// Spawns the (supervised) delivery task; the caller joins it at
    /// shutdown.
    pub fn start(
        delivery: crate::alerts::Delivery,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> (Self, Supervised) {
        let (queue, rx) = tokio::sync::mpsc::channel(64);
        let task = supervisor.spawn("alert-webhook", delivery.run(rx, shutdown));
        (Self { queue }, task)
    }
}

impl FailureSink for Webhook {
    fn failed(&self, service: &str, reason: &str, crash_loop: bool) {
        let event = serde_json::json!({
            "event": if crash_loop { "crash_loop" } else { "start_failed" },
            "service": service,
            "reason": reason,
            "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        if self.queue.try_send(event.to_string()).is_err() {
            tracing::warn!(service, "alert queue full; dropping an alert");
        }
    }
}
