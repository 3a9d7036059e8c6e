//! The gauges that follow a service's status rather than its events, set
//! from the services' API views at each scrape: the state (also for a
//! service adopted stopped, which had no event), held connections, the
//! start block, the memory limit and the learned start estimate. Each
//! scrape also creates every per-service counter at 0 (the starts for each
//! trigger too), so Prometheus's `increase()` sees a counter's first step.

use super::{label, Metrics, ReasonLabels, TriggerLabels};
use crate::{api::ServiceView, service::Trigger};

/// Values of the `reason` label of `autostop_service_start_blocked`, as
/// [`ServiceView::start_block`] names them.
pub const START_BLOCKS: &[&str] = &["crash_loop", "backoff"];

impl Metrics {
    /// Refreshes the status-derived gauges from `views` (every service the
    /// agent manages), then renders the exposition.
    pub fn render_with(&self, views: &[ServiceView]) -> String {
        self.refresh(views);
        self.render()
    }

    /// Sets the status-derived gauges of each service in `views`.
    pub fn refresh(&self, views: &[ServiceView]) {
        for view in views {
            let service = view.name.as_str();
            let service_label = label(service);
            self.set_state(service, view.state);
            self.set_held(service, view.held);
            for reason in START_BLOCKS {
                let labels = ReasonLabels {
                    service: service.to_owned(),
                    reason: (*reason).to_owned(),
                };
                self.start_blocked
                    .get_or_create(&labels)
                    .set(i64::from(view.start_block.as_deref() == Some(*reason)));
            }
            match view.memory_limit_bytes {
                Some(limit) => {
                    self.memory_limit
                        .get_or_create(&service_label)
                        .set(i64::try_from(limit).unwrap_or(i64::MAX));
                }
                None => {
                    self.memory_limit.remove(&service_label);
                }
            }
            self.set_start_estimate(service, view.average_start_duration_s);
            for family in [
                &self.start_failures,
                &self.wake_events,
                &self.wait_pages,
                &self.fail_fast,
                &self.hung_up,
            ] {
                drop(family.get_or_create(&service_label));
            }
            for trigger in Trigger::ALL {
                drop(self.starts.get_or_create(&TriggerLabels {
                    service: service.to_owned(),
                    trigger: trigger.as_str().to_owned(),
                }));
            }
            drop(self.start_duration.get_or_create(&service_label));
            drop(self.memory_saved.get_or_create(&service_label));
        }
    }

    /// Sets (or, with `None`, removes) the learned start estimate of
    /// `service`, in seconds.
    pub fn set_start_estimate(&self, service: &str, seconds: Option<f64>) {
        let service_label = label(service);
        match seconds {
            Some(seconds) => {
                self.start_estimate
                    .get_or_create(&service_label)
                    .set(seconds);
            }
            None => {
                self.start_estimate.remove(&service_label);
            }
        }
    }

    /// A start of `service` began: keeps the estimate in force now (the
    /// gauge, set at adoption, at each scrape and after each start) as what
    /// this start is expected to take.
    pub(super) fn note_start(&self, service: &str) {
        let expected = self.start_estimate.get(&label(service)).map(|g| g.get());
        let mut pending = self.expected_at_start.lock();
        match expected {
            Some(expected) => pending.insert(service.to_owned(), expected),
            None => pending.remove(service),
        };
    }

    /// Records a start of `took` seconds the agent made, with what it was
    /// expected to take when it began.
    pub(super) fn record_last_start(&self, service: &str, took: f64) {
        let service_label = label(service);
        let expected = self.expected_at_start.lock().remove(service);
        self.last_start.get_or_create(&service_label).set(took);
        match expected {
            Some(expected) => {
                self.last_start_expected
                    .get_or_create(&service_label)
                    .set(expected);
            }
            None => {
                self.last_start_expected.remove(&service_label);
            }
        }
    }
}
