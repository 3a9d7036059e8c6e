//! Registration of every metric with its name and help text, and the
//! build info (version, hostname).

use std::collections::HashMap;

use parking_lot::Mutex;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram, info::Info},
    registry::{Metric, Registry},
};

use super::{BuildLabels, Metrics, ServiceLabel, START_BUCKETS};

/// The machine's hostname for `autostop_build_info` (`unknown` when it
/// cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Registers `metric` under `name` and gives it back.
fn add<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autostop");
        let r = &mut registry;
        r.register(
            "build",
            "The agent's version and the machine's hostname (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                host: hostname(),
            }),
        );
        let state = add(
            r,
            "service_state",
            "1 for the state the service is in, 0 for the others",
            Family::default(),
        );
        let starts = add(
            r,
            "starts",
            "Starts, by what triggered them",
            Family::default(),
        );
        let start_duration = add(
            r,
            "start_duration_seconds",
            "Time from start to ready",
            Family::<ServiceLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(START_BUCKETS.iter().copied())
            }),
        );
        let stops = add(r, "stops", "Stops, by reason", Family::default());
        let start_failures = add(r, "start_failures", "Failed starts", Family::default());
        let wake_events = add(
            r,
            "wake_events",
            "Wake events from the kernel (first SYN to a stopped service)",
            Family::default(),
        );
        let held = add(
            r,
            "held_connections",
            "Connections held by the agent while their service starts",
            Family::default(),
        );
        let wait_pages = add(
            r,
            "wait_pages_served",
            "Wait pages served to browsers",
            Family::default(),
        );
        let packets = add(
            r,
            "activity_packets",
            "Packets into the service seen by the kernel",
            Family::default(),
        );
        let bytes = add(
            r,
            "activity_bytes",
            "Bytes into the service seen by the kernel",
            Family::default(),
        );
        let memory = add(
            r,
            "memory_bytes",
            "Memory used by the running service's containers",
            Family::default(),
        );
        let memory_limit = add(
            r,
            "memory_limit_bytes",
            "Memory limit of the running service's containers (a container without a limit counts as the host's RAM), once sampled",
            Family::default(),
        );
        let memory_saved = add(
            r,
            "memory_saved_byte_seconds",
            "Last observed running memory times time spent stopped",
            Family::default(),
        );
        let start_blocked = add(
            r,
            "service_start_blocked",
            "1 while a wake would not start the failed service, by reason: crash_loop (guard latched until an operator acts) or backoff (retry pending)",
            Family::default(),
        );
        let start_estimate = add(
            r,
            "start_estimate_seconds",
            "Learned start duration in force (moving average): what the next start is expected to take",
            Family::default(),
        );
        let last_start = add(
            r,
            "last_start_duration_seconds",
            "Duration of the last start the agent made",
            Family::default(),
        );
        let last_start_expected = add(
            r,
            "last_start_expected_seconds",
            "The learned start duration in force when the last start began",
            Family::default(),
        );
        let fail_fast = add(
            r,
            "connections_fail_fast",
            "Connections answered at once because no start was coming (crash-loop guard latched, retry backoff pending)",
            Family::default(),
        );
        let hung_up = add(
            r,
            "connections_hung_up",
            "Held connections whose client hung up before the service was ready",
            Family::default(),
        );
        let prewarms = add(
            r,
            "prewarm",
            "Pre-warms, by outcome: hit (a request came while it kept the service warm) or miss",
            Family::default(),
        );
        let listener_accepted = add(
            r,
            "listener_accepted",
            "Connections steered to and accepted by the agent's cold-start listener",
            Counter::default(),
        );
        r.register(
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
            memory_limit,
            memory_saved,
            start_blocked,
            start_estimate,
            last_start,
            last_start_expected,
            fail_fast,
            hung_up,
            listener_accepted,
            prewarms,
            expected_at_start: Mutex::new(HashMap::new()),
        }
    }
}
