//! Unit tests of the metrics registry: the exposition parses and carries
//! what the lifecycle, the listener and the scrape-time refresh recorded.

use std::time::Duration;

use super::*;
use crate::service::{Trigger, STOP_REASONS};

pub(super) fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[test]
fn exposition_parses_and_carries_lifecycle_counts() {
    let metrics = Metrics::new();
    metrics.on_event(
        "web",
        &LifecycleEvent::Starting {
            trigger: Trigger::Syn,
        },
    );
    metrics.on_event(
        "web",
        &LifecycleEvent::Ready {
            took: Some(Duration::from_millis(1500)),
            estimate: None,
        },
    );
    metrics.on_event("web", &LifecycleEvent::Stopping { reason: "idle" });
    metrics.on_event("web", &LifecycleEvent::Stopped { reason: "idle" });
    metrics.on_event(
        "api",
        &LifecycleEvent::Failed {
            reason: "exit 1".into(),
            crash_loop: false,
        },
    );
    metrics.wake_event("web");
    metrics.wake_event("web");
    metrics.add_activity("web", 10, 1000);
    metrics.add_activity("web", 15, 1500);
    metrics.set_memory("web", 6_200_000_000);
    metrics.add_memory_saved("web", 3600.0 * 6.2e9);
    metrics.set_held("web", 3);
    metrics.wait_page("web");
    metrics.listener_accepted();
    metrics.listener_accepted();

    let text = metrics.render();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    assert_eq!(
        sample(
            &scrape,
            "autostop_starts_total",
            &[("service", "web"), ("trigger", "syn")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_stops_total",
            &[("service", "web"), ("reason", "idle")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_start_failures_total",
            &[("service", "api")]
        ),
        1.0
    );
    assert_eq!(
        sample(&scrape, "autostop_wake_events_total", &[("service", "web")]),
        2.0
    );
    assert_eq!(
        sample(&scrape, "autostop_listener_accepted_total", &[]),
        2.0
    );
    // Process-wide; other tests may drop lines too, so only its presence.
    assert!(sample(&scrape, "autostop_log_write_errors_total", &[]) >= 0.0);
    assert_eq!(
        sample(
            &scrape,
            "autostop_activity_packets_total",
            &[("service", "web")]
        ),
        25.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_activity_bytes_total",
            &[("service", "web")]
        ),
        2500.0
    );
    assert_eq!(
        sample(&scrape, "autostop_memory_bytes", &[("service", "web")]),
        6.2e9
    );
    assert_eq!(
        sample(&scrape, "autostop_held_connections", &[("service", "web")]),
        3.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_wait_pages_served_total",
            &[("service", "web")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_state",
            &[("service", "web"), ("state", "stopped")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_state",
            &[("service", "web"), ("state", "ready")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_state",
            &[("service", "api"), ("state", "failed")]
        ),
        1.0
    );
    let saved = sample(
        &scrape,
        "autostop_memory_saved_byte_seconds_total",
        &[("service", "web")],
    );
    assert!((saved - 3600.0 * 6.2e9).abs() < 1.0, "{saved}");
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "autostop_start_duration_seconds")
        .expect("histogram present");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let le_2_5 = buckets
                .iter()
                .find(|b| (b.less_than - 2.5).abs() < 1e-9)
                .expect("2.5 bucket");
            assert_eq!(le_2_5.count, 1.0);
            let le_1 = buckets
                .iter()
                .find(|b| (b.less_than - 1.0).abs() < 1e-9)
                .expect("1 bucket");
            assert_eq!(le_1.count, 0.0);
        }
        other => panic!("start_duration_seconds is not a histogram: {other:?}"),
    }
}
#[test]
fn a_removed_service_leaves_no_label_set_behind() {
    let metrics = Metrics::new();
    let events = [
        LifecycleEvent::Starting {
            trigger: Trigger::Api,
        },
        LifecycleEvent::Ready {
            took: Some(Duration::from_secs(1)),
            estimate: None,
        },
        LifecycleEvent::Stopping { reason: "manual" },
        LifecycleEvent::Stopped {
            reason: "container_died",
        },
        LifecycleEvent::Failed {
            reason: "exit 1".into(),
            crash_loop: true,
        },
    ];
    for trigger in Trigger::ALL {
        metrics.on_event("gone-1234", &LifecycleEvent::Starting { trigger });
    }
    for reason in STOP_REASONS {
        metrics.on_event("gone-1234", &LifecycleEvent::Stopped { reason });
    }
    for event in &events {
        metrics.on_event("gone-1234", event);
        metrics.on_event("kept", event);
    }
    metrics.wake_event("gone-1234");
    metrics.add_activity("gone-1234", 1, 1);
    metrics.set_memory("gone-1234", 1);
    metrics.add_memory_saved("gone-1234", 1.0);
    metrics.set_held("gone-1234", 1);
    metrics.wait_page("gone-1234");
    assert!(metrics.render().contains("gone-1234"));
    metrics.remove_service("gone-1234");
    let text = metrics.render();
    assert!(!text.contains("gone-1234"), "{text}");
    assert!(text.contains("kept"));
}

#[test]
fn a_hibernation_shows_as_hibernating_then_hibernated() {
    let metrics = Metrics::new();
    let state = |metrics: &Metrics, name: &str| {
        let text = metrics.render();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("valid exposition");
        sample(
            &scrape,
            "autostop_service_state",
            &[("service", "heavy"), ("state", name)],
        )
    };
    metrics.on_event(
        "heavy",
        &LifecycleEvent::Stopping {
            reason: "hibernate",
        },
    );
    assert_eq!(state(&metrics, "hibernating"), 1.0);
    assert_eq!(state(&metrics, "stopping"), 0.0);
    metrics.on_event(
        "heavy",
        &LifecycleEvent::Stopped {
            reason: "hibernate",
        },
    );
    assert_eq!(state(&metrics, "hibernated"), 1.0);
    assert_eq!(state(&metrics, "stopped"), 0.0);
}
