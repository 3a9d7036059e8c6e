//! Prometheus metrics (`autostop_` prefix), fed by the services' lifecycle
//! steps, the cold-start listener and the agent's periodic samples of kernel
//! counters and Docker stats, and refreshed from the services' views at
//! each scrape ([`scrape`]), rendered in the OpenMetrics text format for
//! `GET /metrics`.
//!
//! Hosts are told apart by Prometheus's own target labels (`instance`,
//! `job`), added at scrape; no metric carries a host label of its own.
//! `autostop_build_info{version,host}` (always 1) names the agent's version
//! and the machine's hostname for each target, to join on `instance`.
//! `packaging/grafana/autostop.json` and `packaging/prometheus/alerts.yml`
//! query these names; `autostop-agent/tests/fleet.rs` checks that every
//! name and label they use is rendered here.

mod register;
mod scrape;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_scrape;

use std::{collections::HashMap, sync::atomic::AtomicU64};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::service::{LifecycleEvent, LifecycleObserver, StateName, Trigger, STOP_REASONS};

pub use scrape::START_BLOCKS;

/// Buckets of the start-duration histogram, in seconds (apps start in
/// 0.1 s to several minutes).
const START_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: StateName,
}

impl EncodeLabelValue for StateName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    service: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    service: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    service: String,
    outcome: String,
}

/// The outcomes `autostop_prewarm_total` counts.
pub const PREWARM_OUTCOMES: [&str; 2] = ["hit", "miss"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    host: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The agent's metrics registry.
pub struct Metrics {
    registry: Registry,
    state: Family<StateLabels, Gauge>,
    starts: Family<TriggerLabels, Counter>,
    start_duration: Family<ServiceLabel, Histogram>,
    stops: Family<ReasonLabels, Counter>,
    start_failures: Family<ServiceLabel, Counter>,
    wake_events: Family<ServiceLabel, Counter>,
    held: Family<ServiceLabel, Gauge>,
    wait_pages: Family<ServiceLabel, Counter>,
    packets: Family<ServiceLabel, Counter>,
    bytes: Family<ServiceLabel, Counter>,
    memory: Family<ServiceLabel, Gauge>,
    memory_limit: Family<ServiceLabel, Gauge>,
    memory_saved: Family<ServiceLabel, FloatCounter>,
    /// One-hot by `reason` (`crash_loop`, `backoff`): why a wake would not
    /// start the failed service now.
    start_blocked: Family<ReasonLabels, Gauge>,
    /// The learned start duration in force (what the next start is
    /// expected to take).
    start_estimate: Family<ServiceLabel, FloatGauge>,
    /// The last start the agent made, and what it was expected to take.
    last_start: Family<ServiceLabel, FloatGauge>,
    last_start_expected: Family<ServiceLabel, FloatGauge>,
    /// Cold-start listener outcomes per service.
    fail_fast: Family<ServiceLabel, Counter>,
    hung_up: Family<ServiceLabel, Counter>,
    /// Connections the cold-start listener accepted (all services): flat
    /// while every service is warm, since warm traffic never reaches us.
    listener_accepted: Counter,
    /// Learned pre-warms by outcome (`hit`, `miss`).
    prewarms: Family<OutcomeLabels, Counter>,
    /// The start estimate in force when each start under way began.
    expected_at_start: Mutex<HashMap<String, f64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn label(service: &str) -> ServiceLabel {
    ServiceLabel {
        service: service.to_owned(),
    }
}

impl Metrics {
    /// Sets the one-hot state gauge of `service`.
    pub fn set_state(&self, service: &str, state: StateName) {
        for candidate in StateName::ALL {
            let labels = StateLabels {
                service: service.to_owned(),
                state: candidate,
            };
            self.state
                .get_or_create(&labels)
                .set(i64::from(candidate == state));
        }
    }

    /// Counts one wake event.
    pub fn wake_event(&self, service: &str) {
        self.wake_events.get_or_create(&label(service)).inc();
    }

    /// Sets how many connections are held for `service`.
    pub fn set_held(&self, service: &str, held: u64) {
        self.held
            .get_or_create(&label(service))
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Counts one connection accepted by the cold-start listener.
    pub fn listener_accepted(&self) {
        self.listener_accepted.inc();
    }

    /// Counts one wait page served.
    pub fn wait_page(&self, service: &str) {
        self.wait_pages.get_or_create(&label(service)).inc();
    }

    /// Counts one connection to `service` answered at once because no
    /// start was coming.
    pub fn fail_fast(&self, service: &str) {
        self.fail_fast.get_or_create(&label(service)).inc();
    }

    /// Counts one held connection to `service` whose client hung up.
    pub fn hung_up(&self, service: &str) {
        self.hung_up.get_or_create(&label(service)).inc();
    }

    /// Counts `packets` and `bytes` more into `service` (the endpoint
    /// refresher turns the kernel's totals into these increments).
    pub fn add_activity(&self, service: &str, packets: u64, bytes: u64) {
        self.packets.get_or_create(&label(service)).inc_by(packets);
        self.bytes.get_or_create(&label(service)).inc_by(bytes);
    }

    /// Sets the memory in use (0 when stopped).
    pub fn set_memory(&self, service: &str, bytes: u64) {
        self.memory
            .get_or_create(&label(service))
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Adds saved byte·seconds.
    pub fn add_memory_saved(&self, service: &str, byte_seconds: f64) {
        self.memory_saved
            .get_or_create(&label(service))
            .inc_by(byte_seconds);
    }

    /// Counts how a pre-warm of `service` turned out (`hit` or `miss`).
    pub fn prewarm(&self, service: &str, outcome: &str) {
        self.prewarms
            .get_or_create(&OutcomeLabels {
                service: service.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Forgets a removed service: every label set that names it.
    pub fn remove_service(&self, service: &str) {
        for outcome in PREWARM_OUTCOMES {
            self.prewarms.remove(&OutcomeLabels {
                service: service.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
        for state in StateName::ALL {
            self.state.remove(&StateLabels {
                service: service.to_owned(),
                state,
            });
        }
        for reason in STOP_REASONS {
            self.stops.remove(&ReasonLabels {
                service: service.to_owned(),
                reason: reason.to_owned(),
            });
        }
        for reason in START_BLOCKS {
            self.start_blocked.remove(&ReasonLabels {
                service: service.to_owned(),
                reason: (*reason).to_owned(),
            });
        }
        for trigger in Trigger::ALL {
            self.starts.remove(&TriggerLabels {
                service: service.to_owned(),
                trigger: trigger.as_str().to_owned(),
            });
        }
        let service_label = label(service);
        for family in [
            &self.start_failures,
            &self.wake_events,
            &self.wait_pages,
            &self.packets,
            &self.bytes,
            &self.fail_fast,
            &self.hung_up,
        ] {
            family.remove(&service_label);
        }
        self.memory_saved.remove(&service_label);
        for family in [&self.held, &self.memory, &self.memory_limit] {
            family.remove(&service_label);
        }
        for family in [
            &self.start_estimate,
            &self.last_start,
            &self.last_start_expected,
        ] {
            family.remove(&service_label);
        }
        self.start_duration.remove(&service_label);
        self.expected_at_start.lock().remove(service);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl LifecycleObserver for Metrics {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        match event {
            LifecycleEvent::Starting { trigger } => {
                let labels = TriggerLabels {
                    service: service.to_owned(),
                    trigger: trigger.as_str().to_owned(),
                };
                self.starts.get_or_create(&labels).inc();
                self.note_start(service);
                self.set_state(service, StateName::Starting);
            }
            LifecycleEvent::Ready { took, estimate } => {
                if let Some(took) = took {
                    self.start_duration
                        .get_or_create(&label(service))
                        .observe(took.as_secs_f64());
                    self.record_last_start(service, took.as_secs_f64());
                }
                if let Some(estimate) = estimate {
                    self.set_start_estimate(service, Some(estimate.as_secs_f64()));
                }
                self.set_state(service, StateName::Ready);
            }
            LifecycleEvent::Stopping {
                reason: "hibernate",
            } => self.set_state(service, StateName::Hibernating),
            LifecycleEvent::Stopping { .. } => self.set_state(service, StateName::Stopping),
            LifecycleEvent::Stopped { reason } => {
                let labels = ReasonLabels {
                    service: service.to_owned(),
                    reason: (*reason).to_owned(),
                };
                self.stops.get_or_create(&labels).inc();
                let state = match *reason {
                    "hibernate" => StateName::Hibernated,
                    _ => StateName::Stopped,
                };
                self.set_state(service, state);
            }
            LifecycleEvent::Failed { .. } => {
                self.start_failures.get_or_create(&label(service)).inc();
                self.set_state(service, StateName::Failed);
            }
        }
    }
}
