//! Prometheus metrics (`autostop_` prefix), fed by the services' lifecycle
//! steps and by the agent's periodic samples of kernel counters and Docker
//! stats, rendered in the OpenMetrics text format for `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::service::{LifecycleEvent, LifecycleObserver, StateName, Trigger, STOP_REASONS};

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

impl EncodeLabelValue for StateName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

type FloatCounter = Counter<f64, AtomicU64>;

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
    memory_saved: Family<ServiceLabel, FloatCounter>,
    /// Connections the cold-start listener accepted (all services): flat
    /// while every service is warm, since warm traffic never reaches us.
    listener_accepted: Counter,
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
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autostop");
        let state = Family::default();
        registry.register(
            "service_state",
            "1 for the state the service is in, 0 for the others",
            state.clone(),
        );
        let starts = Family::default();
        registry.register("starts", "Starts, by what triggered them", starts.clone());
        let start_duration = Family::<ServiceLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(START_BUCKETS.iter().copied())
        });
        registry.register(
            "start_duration_seconds",
            "Time from start to ready",
            start_duration.clone(),
        );
        let stops = Family::default();
        registry.register("stops", "Stops, by reason", stops.clone());
        let start_failures = Family::default();
        registry.register("start_failures", "Failed starts", start_failures.clone());
        let wake_events = Family::default();
        registry.register(
            "wake_events",
            "Wake events from the kernel (first SYN to a stopped service)",
            wake_events.clone(),
        );
        let held = Family::default();
        registry.register(
            "held_connections",
            "Connections held by the agent while their service starts",
            held.clone(),
        );
        let wait_pages = Family::default();
        registry.register(
            "wait_pages_served",
            "Wait pages served to browsers",
            wait_pages.clone(),
        );
        let packets = Family::default();
        registry.register(
            "activity_packets",
            "Packets into the service seen by the kernel",
            packets.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "activity_bytes",
            "Bytes into the service seen by the kernel",
            bytes.clone(),
        );
        let memory = Family::default();
        registry.register(
            "memory_bytes",
            "Memory used by the running service's containers",
            memory.clone(),
        );
        let memory_saved = Family::default();
        registry.register(
            "memory_saved_byte_seconds",
            "Last observed running memory times time spent stopped",
            memory_saved.clone(),
        );
        let listener_accepted = Counter::default();
        registry.register(
            "listener_accepted",
            "Connections steered to and accepted by the agent's cold-start listener",
            listener_accepted.clone(),
        );
        registry.register(
            "log_write_errors",
            "Log lines dropped because the log output was stalled or closed",
            crate::logging::write_errors().clone(),
        );
        Self {
            registry,
            state,
            starts,
            start_duration,
            stops,
            start_failures,
            wake_events,
            held,
            wait_pages,
            packets,
            bytes,
            memory,
            memory_saved,
            listener_accepted,
        }
    }

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

    /// Forgets a removed service: every label set that names it.
    pub fn remove_service(&self, service: &str) {
        for state in StateName::ALL {
            self.state.remove(&StateLabels {
                service: service.to_owned(),
                state,
            });
        }
        for trigger in Trigger::ALL {
            self.starts.remove(&TriggerLabels {
                service: service.to_owned(),
                trigger: trigger.as_str().to_owned(),
            });
        }
        for reason in STOP_REASONS {
            self.stops.remove(&ReasonLabels {
                service: service.to_owned(),
                reason: reason.to_owned(),
            });
        }
        for family in [
            &self.start_failures,
            &self.wake_events,
            &self.wait_pages,
            &self.packets,
            &self.bytes,
        ] {
            family.remove(&label(service));
        }
        self.held.remove(&label(service));
        self.memory.remove(&label(service));
        self.memory_saved.remove(&label(service));
        self.start_duration.remove(&label(service));
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
                self.set_state(service, StateName::Starting);
            }
            LifecycleEvent::Ready { took, .. } => {
                if let Some(took) = took {
                    self.start_duration
                        .get_or_create(&label(service))
                        .observe(took.as_secs_f64());
                }
                self.set_state(service, StateName::Ready);
            }
            LifecycleEvent::Stopping { .. } => self.set_state(service, StateName::Stopping),
            LifecycleEvent::Stopped { reason } => {
                let labels = ReasonLabels {
                    service: service.to_owned(),
                    reason: (*reason).to_owned(),
                };
                self.stops.get_or_create(&labels).inc();
                self.set_state(service, StateName::Stopped);
            }
            LifecycleEvent::Failed { .. } => {
                self.start_failures.get_or_create(&label(service)).inc();
                self.set_state(service, StateName::Failed);
            }
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
