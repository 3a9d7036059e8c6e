//! Tests of RAM sampling and savings accounting on tokio's paused clock,
//! with the services' statuses set by hand and a fake memory source.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};

use super::*;
use crate::api::Control;
use crate::{
    agent::control::ServiceEntry,
    config::{Config, ThemeCatalog},
    metrics::Metrics,
    service::{ServiceHandle, ServiceSettings, ServiceStatus},
    state::{unix_hour, StateStore},
};

const GB: u64 = 1_000_000_000;

/// A table of one service, "web", whose status the test sets.
struct Fixture {
    services: Arc<Services>,
    status: watch::Sender<ServiceStatus>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = StateStore::open(dir.path()).expect("state");
        let services = Arc::new(Services::new(
            Arc::new(Metrics::new()),
            Arc::new(Mutex::new(store)),
            None,
        ));
        let config = Config::parse(
            "[[service]]\nname = \"web\"\nport = 8080\ncontainers = [\"web\"]\n",
            "autostop.toml",
            &ThemeCatalog::with_user_themes(std::iter::empty::<&str>()),
        )
        .expect("config");
        let settings = ServiceSettings {
            idle_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            hold_while_connected: false,
            initial_start_estimate: None,
        };
        let (status, status_rx) = watch::channel(ServiceStatus::initial(&settings, Instant::now()));
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        services.insert(ServiceEntry {
            config: config.services[0].clone(),
            handle: ServiceHandle { tx, status_rx },
            held: Arc::new(tokio::sync::Semaphore::new(8)),
        });
        Self {
            services,
            status,
            _dir: dir,
        }
    }

    fn enter(&self, state: ServiceState) {
        self.status.send_modify(|s| {
            s.state = state;
            s.since = Instant::now();
        });
    }

    fn saved(&self) -> f64 {
        self.services
            .state()
            .lock()
            .expect("state")
            .service("web")
            .memory_saved_byte_seconds
    }
}

/// Reports a fixed memory use, or fails.
struct FakeSource(Mutex<Result<Option<MemoryUse>, String>>);

#[async_trait::async_trait]
impl MemorySource for FakeSource {
    async fn memory(&self, _service: &str) -> Result<Option<MemoryUse>, String> {
        self.0.lock().expect("fake").clone()
    }
}

fn uses(used: u64, limit: u64) -> FakeSource {
    FakeSource(Mutex::new(Ok(Some(MemoryUse {
        used_bytes: used,
        limit_bytes: limit,
    }))))
}

#[tokio::test(start_paused = true)]
async fn ledger_counts_each_stopped_second_once() {
    let mut ledger = Ledger::default();
    let stopped_at = Instant::now();
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(ledger.tick("web", Some(stopped_at), Instant::now()), 15.0);
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(ledger.tick("web", Some(stopped_at), Instant::now()), 15.0);
    tokio::time::advance(Duration::from_secs(4)).await;
    // Starts between two ticks: the 4 s are credited once, at the start.
    assert_eq!(ledger.close("web", Instant::now()), 4.0);
    assert_eq!(ledger.tick("web", Some(stopped_at), Instant::now()), 0.0);
    assert_eq!(ledger.tick("web", None, Instant::now()), 0.0);
    tokio::time::advance(Duration::from_secs(100)).await;
    // Stopped again later: counted from the new stop only.
    let again = Instant::now();
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_eq!(ledger.tick("web", Some(again), Instant::now()), 7.0);
    assert_eq!(ledger.close("other", Instant::now()), 0.0);
}

#[tokio::test(start_paused = true)]
async fn running_memory_is_sampled_then_saved_while_stopped() {
    let f = Fixture::new();
    f.enter(ServiceState::Ready);
    let source = uses(6_200_000_000, 8 * GB);
    sample(&source, &f.services).await;
    let view = f.services.service("web").expect("view");
    assert_eq!(view.memory_bytes, Some(6_200_000_000));
    assert_eq!(view.memory_limit_bytes, Some(8 * GB));
    assert!(f
        .services
        .metrics
        .render()
        .contains("autostop_memory_bytes{service=\"web\"} 6200000000"));

    // Nothing is saved while it runs.
    tokio::time::advance(Duration::from_secs(3600)).await;
    accrue(&f.services, Instant::now(), SystemTime::now());
    assert_eq!(f.saved(), 0.0);

    // Stopped for 22.8 h, accounted every 15 s, as the agent does.
    f.enter(ServiceState::Stopped);
    on_stopped(&f.services, "web");
    assert_eq!(f.services.service("web").expect("view").memory_bytes, None);
    let ticks = (22.8 * 3600.0 / 15.0) as u32;
    for _ in 0..ticks {
        tokio::time::advance(SAMPLE_EVERY).await;
        accrue(&f.services, Instant::now(), SystemTime::now());
        // A stopped service is not sampled: the last value stays.
        sample(&source, &f.services).await;
    }
    let gb_h = f.saved() / 1e9 / 3600.0;
    assert!(
        (gb_h - 6.2 * 22.8).abs() < 1e-6,
        "6.2 GB × 22.8 h, got {gb_h}"
    );
    let view = f.services.service("web").expect("view");
    assert!((view.ram_saved_gb_h - 141.36).abs() < 1e-6);
    assert!(
        view.ram_saved_gb_h_24h > 0.0 && view.ram_saved_gb_h_24h <= view.ram_saved_gb_h,
        "the last-24 h figure is part of the total: {}",
        view.ram_saved_gb_h_24h
    );
    assert!(f
        .services
        .metrics
        .render()
        .contains("autostop_memory_saved_byte_seconds_total{service=\"web\"}"));

    // A start 10 s after the last tick credits those 10 s, once.
    tokio::time::advance(Duration::from_secs(10)).await;
    let before = f.saved();
    on_starting(&f.services, "web");
    f.enter(ServiceState::Starting);
    accrue(&f.services, Instant::now(), SystemTime::now());
    assert_eq!(f.saved() - before, 6_200_000_000.0 * 10.0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_sample_keeps_the_last_value() {
    let f = Fixture::new();
    f.enter(ServiceState::Ready);
    let source = uses(300 * 1_000_000, 2 * GB);
    sample(&source, &f.services).await;
    *source.0.lock().expect("fake") = Err("docker unreachable".into());
    sample(&source, &f.services).await;
    assert_eq!(
        f.services.service("web").expect("view").memory_bytes,
        Some(300_000_000)
    );
    let remembered = f.services.state().lock().expect("state").service("web");
    assert_eq!(remembered.last_memory_bytes, Some(300_000_000));
}

/// Answers only when told to, to model a sample still in flight.
struct SlowSource(tokio::sync::Notify);

#[async_trait::async_trait]
impl MemorySource for SlowSource {
    async fn memory(&self, _service: &str) -> Result<Option<MemoryUse>, String> {
        self.0.notified().await;
        Ok(Some(MemoryUse {
            used_bytes: GB,
            limit_bytes: 2 * GB,
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_sample_answering_after_the_stop_is_not_shown() {
    let f = Fixture::new();
    f.enter(ServiceState::Ready);
    let source = SlowSource(tokio::sync::Notify::new());
    let sampling = sample(&source, &f.services);
    let stop = async {
        tokio::task::yield_now().await;
        f.enter(ServiceState::Stopping);
        on_stopped(&f.services, "web");
        source.0.notify_one();
    };
    tokio::join!(sampling, stop);
    let view = f.services.service("web").expect("view");
    assert_eq!(view.memory_bytes, None, "{view:?}");
    assert!(f
        .services
        .metrics
        .render()
        .contains("autostop_memory_bytes{service=\"web\"} 0"));
}

#[tokio::test(start_paused = true)]
async fn savings_survive_a_restart_through_the_state_file() {
    let f = Fixture::new();
    f.enter(ServiceState::Ready);
    sample(&uses(GB, 2 * GB), &f.services).await;
    f.enter(ServiceState::Stopped);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    // The loop's last act is one accounting step and a save.
    run(
        Arc::new(uses(GB, 2 * GB)),
        Arc::clone(&f.services),
        shutdown,
    )
    .await;
    let (reopened, _) = StateStore::open(f._dir.path()).expect("reopen");
    let m = reopened.service("web");
    assert_eq!(m.last_memory_bytes, Some(GB));
    assert_eq!(m.memory_saved_byte_seconds, 1e9 * 3600.0);
    assert_eq!(m.saved_last_24h(unix_hour(SystemTime::now())), 1e9 * 3600.0);
}
