//! Unit tests of the scrape-time refresh (status gauges, counters created
//! at 0), the last start against its expectation, and the listener's
//! per-service outcomes.

use std::time::Duration;

use super::tests::sample;
use super::*;
use crate::service::Trigger;

fn parse(metrics: &Metrics) -> prometheus_parse::Scrape {
    let text = metrics.render();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition")
}

fn absent(scrape: &prometheus_parse::Scrape, name: &str, service: &str) -> bool {
    !scrape
        .samples
        .iter()
        .any(|s| s.metric == name && s.labels.get("service") == Some(service))
}

#[test]
fn a_scrape_sets_the_status_gauges_and_creates_the_counters_at_zero() {
    let metrics = Metrics::new();
    let views = [
        crate::api::ServiceView {
            name: "web".into(),
            state: "failed".into(),
            start_block: Some("crash_loop".into()),
            average_start_duration_s: Some(12.5),
            ..Default::default()
        },
        crate::api::ServiceView {
            name: "api".into(),
            state: "ready".into(),
            held: 2,
            memory_bytes: Some(300_000_000),
            memory_limit_bytes: Some(1_000_000_000),
            ..Default::default()
        },
    ];
    metrics.refresh(&views);
    let scrape = parse(&metrics);
    let web = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("service", "web")];
        labels.extend_from_slice(extra);
        sample(&scrape, name, &labels)
    };
    assert_eq!(web("autostop_service_state", &[("state", "failed")]), 1.0);
    assert_eq!(web("autostop_service_state", &[("state", "stopped")]), 0.0);
    assert_eq!(
        web(
            "autostop_service_start_blocked",
            &[("reason", "crash_loop")]
        ),
        1.0
    );
    assert_eq!(
        web("autostop_service_start_blocked", &[("reason", "backoff")]),
        0.0
    );
    assert_eq!(web("autostop_start_estimate_seconds", &[]), 12.5);
    for counter in [
        "autostop_start_failures_total",
        "autostop_wake_events_total",
        "autostop_wait_pages_served_total",
        "autostop_connections_fail_fast_total",
        "autostop_connections_hung_up_total",
        "autostop_memory_saved_byte_seconds_total",
    ] {
        assert_eq!(web(counter, &[]), 0.0, "{counter}");
    }
    for trigger in ["syn", "connection", "manual", "api", "external"] {
        assert_eq!(
            web("autostop_starts_total", &[("trigger", trigger)]),
            0.0,
            "{trigger}"
        );
    }
    assert!(absent(&scrape, "autostop_memory_limit_bytes", "web"));
    assert!(absent(&scrape, "autostop_start_estimate_seconds", "api"));
    let api = |name: &str| sample(&scrape, name, &[("service", "api")]);
    assert_eq!(api("autostop_memory_limit_bytes"), 1e9);
    assert_eq!(api("autostop_held_connections"), 2.0);
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_start_blocked",
            &[("service", "api"), ("reason", "crash_loop")]
        ),
        0.0
    );

    // The latch cleared, the service stopped: the gauges follow.
    let mut cleared = views[0].clone();
    cleared.state = "stopped".into();
    cleared.start_block = None;
    metrics.refresh(&[cleared]);
    let scrape = parse(&metrics);
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_start_blocked",
            &[("service", "web"), ("reason", "crash_loop")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_service_state",
            &[("service", "web"), ("state", "stopped")]
        ),
        1.0
    );

    metrics.remove_service("web");
    let scrape = parse(&metrics);
    for name in [
        "autostop_service_state",
        "autostop_service_start_blocked",
        "autostop_start_estimate_seconds",
        "autostop_start_failures_total",
        "autostop_start_duration_seconds_count",
        "autostop_starts_total",
    ] {
        assert!(absent(&scrape, name, "web"), "{name} still there");
    }
}

#[test]
fn the_last_start_is_compared_with_the_estimate_in_force_when_it_began() {
    let metrics = Metrics::new();
    metrics.set_start_estimate("web", Some(10.0));
    metrics.on_event(
        "web",
        &LifecycleEvent::Starting {
            trigger: Trigger::Syn,
        },
    );
    // A scrape while it starts does not change what it was expected to take.
    metrics.set_start_estimate("web", Some(10.0));
    metrics.on_event(
        "web",
        &LifecycleEvent::Ready {
            took: Some(Duration::from_secs(40)),
            estimate: Some(Duration::from_secs(19)),
        },
    );
    let scrape = parse(&metrics);
    let web = |name: &str| sample(&scrape, name, &[("service", "web")]);
    assert_eq!(web("autostop_last_start_duration_seconds"), 40.0);
    assert_eq!(web("autostop_last_start_expected_seconds"), 10.0);
    assert_eq!(web("autostop_start_estimate_seconds"), 19.0);

    // A first start with nothing learned has no expectation.
    metrics.on_event(
        "new",
        &LifecycleEvent::Starting {
            trigger: Trigger::Manual,
        },
    );
    metrics.on_event(
        "new",
        &LifecycleEvent::Ready {
            took: Some(Duration::from_secs(3)),
            estimate: Some(Duration::from_secs(3)),
        },
    );
    let scrape = parse(&metrics);
    assert!(absent(
        &scrape,
        "autostop_last_start_expected_seconds",
        "new"
    ));
    assert_eq!(
        sample(
            &scrape,
            "autostop_last_start_duration_seconds",
            &[("service", "new")]
        ),
        3.0
    );
}

#[test]
fn listener_outcomes_and_build_info_are_exported() {
    let metrics = Metrics::new();
    metrics.fail_fast("web");
    metrics.fail_fast("web");
    metrics.hung_up("web");
    let scrape = parse(&metrics);
    assert_eq!(
        sample(
            &scrape,
            "autostop_connections_fail_fast_total",
            &[("service", "web")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &scrape,
            "autostop_connections_hung_up_total",
            &[("service", "web")]
        ),
        1.0
    );
    let text = metrics.render();
    let info = text
        .lines()
        .find(|l| l.starts_with("autostop_build_info{"))
        .expect("build info line");
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains("host=\""), "{info}");
    assert!(info.ends_with(" 1"), "{info}");
}
