//! Tests of RAM sampling and savings accounting on tokio's paused clock,
//! with the service's status set by hand, a fake memory source and the
//! real state file owner in a temporary directory.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    agent::{
        ids::ServiceId,
        registry::{Registry, ServiceCells, ServiceRecord},
        state_owner::{self, StateHandle},
    },
    config::{Config, ThemeCatalog},
    service::{ServiceHandle, ServiceSettings, ServiceStatus},
    state::{unix_hour, StateStore},
};

const GB: u64 = 1_000_000_000;

/// A registry of one service, "web", whose status the test sets.
struct Fixture {
    task: MemoryTask,
    status: watch::Sender<ServiceStatus>,
    record: Arc<ServiceRecord>,
    state: StateHandle,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
    owner: tokio::task::JoinHandle<()>,
    _registry: Registry,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(source: Arc<dyn MemorySource>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = StateStore::open(dir.path()).expect("state");
        let closing = CancellationToken::new();
        let (state, owner) = state_owner::start(store, closing.clone());
        let owner = tokio::spawn(owner);
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
            sleep: crate::config::Sleep::Stop,
            resume: None,
        };
        let (status, status_rx) = watch::channel(ServiceStatus::initial(&settings, Instant::now()));
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let (mut registry, directory, _routes) = Registry::new();
        let record = registry.insert(ServiceRecord {
            id: ServiceId(0),
            config: config.services[0].clone(),
            handle: ServiceHandle { tx, status_rx },
            held: Arc::new(tokio::sync::Semaphore::new(8)),
            handover: Arc::new(tokio::sync::Semaphore::new(8)),
            cells: Arc::new(ServiceCells::default()),
        });
        let metrics = Arc::new(Metrics::new());
        let task = MemoryTask::new(source, directory, state.clone(), Arc::clone(&metrics));
        Self {
            task,
            status,
            record,
            state,
            metrics,
            closing,
            owner,
            _registry: registry,
            dir,
        }
    }

    fn enter(&self, state: ServiceState) {
        self.status.send_modify(|s| {
            s.state = state;
            s.since = Instant::now();
        });
    }

    /// What the state owner remembers now (after the updates sent so far).
    async fn remembered(&self) -> crate::state::ServiceMemory {
        self.state.flush().await;
        self.state.service("web")
    }

    async fn saved(&self) -> f64 {
        self.remembered().await.memory_saved_byte_seconds
    }

    fn live(&self) -> Option<MemoryUse> {
        *self.record.cells.memory.borrow()
    }

    async fn close(self) -> tempfile::TempDir {
        drop(self.task);
        self.closing.cancel();
        self.owner.await.expect("state owner");
        self.dir
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

fn uses(used: u64, limit: u64) -> Arc<FakeSource> {
    Arc::new(FakeSource(Mutex::new(Ok(Some(MemoryUse {
        used_bytes: used,
        limit_bytes: limit,
        cpu_ns: 0,
    })))))
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
    let mut f = Fixture::new(uses(6_200_000_000, 8 * GB));
    f.enter(ServiceState::Ready);
    f.task.sample().await;
    assert_eq!(
        f.live(),
        Some(MemoryUse {
            used_bytes: 6_200_000_000,
            limit_bytes: 8 * GB,
            cpu_ns: 0,
        })
    );
    assert!(f
        .metrics
        .render()
        .contains("autostop_memory_bytes{service=\"web\"} 6200000000"));

    // Nothing is saved while it runs.
    tokio::time::advance(Duration::from_secs(3600)).await;
    f.task.accrue(Instant::now(), SystemTime::now());
    assert_eq!(f.saved().await, 0.0);

    // Stopped for 22.8 h, accounted every sample period.
    f.enter(ServiceState::Stopped);
    f.task.on_event(SavingsEvent::Stopped("web".into()));
    assert_eq!(f.live(), None);
    let ticks = (22.8 * 3600.0 / SAMPLE_EVERY.as_secs_f64()).round() as u32;
    for _ in 0..ticks {
        tokio::time::advance(SAMPLE_EVERY).await;
        f.task.accrue(Instant::now(), SystemTime::now());
        // A stopped service is not sampled: the last value stays.
        f.task.sample().await;
    }
    let gb_h = f.saved().await / 1e9 / 3600.0;
    assert!(
        (gb_h - 6.2 * 22.8).abs() < 1e-6,
        "6.2 GB × 22.8 h, got {gb_h}"
    );
    let remembered = f.remembered().await;
    let day = remembered.saved_last_24h(unix_hour(SystemTime::now()));
    assert!(
        day > 0.0 && day <= remembered.memory_saved_byte_seconds,
        "the last-24 h figure is part of the total: {day}"
    );
    assert!(f
        .metrics
        .render()
        .contains("autostop_memory_saved_byte_seconds_total{service=\"web\"}"));

    // A start 10 s after the last tick credits those 10 s, once.
    tokio::time::advance(Duration::from_secs(10)).await;
    let before = f.saved().await;
    f.task.on_event(SavingsEvent::Starting("web".into()));
    f.enter(ServiceState::Starting);
    f.task.accrue(Instant::now(), SystemTime::now());
    assert_eq!(f.saved().await - before, 6_200_000_000.0 * 10.0);
    f.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_sample_keeps_the_last_value() {
    let source = uses(300 * 1_000_000, 2 * GB);
    let mut f = Fixture::new(Arc::clone(&source) as _);
    f.enter(ServiceState::Ready);
    f.task.sample().await;
    *source.0.lock().expect("fake") = Err("docker unreachable".into());
    f.task.sample().await;
    assert_eq!(f.live().map(|m| m.used_bytes), Some(300_000_000));
    assert_eq!(f.remembered().await.last_memory_bytes, Some(300_000_000));
    f.close().await;
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
            cpu_ns: 0,
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_sample_answering_after_the_stop_is_not_shown() {
    let source = Arc::new(SlowSource(tokio::sync::Notify::new()));
    let mut f = Fixture::new(Arc::clone(&source) as _);
    f.enter(ServiceState::Ready);
    let status = f.status.clone();
    let record = Arc::clone(&f.record);
    let metrics = Arc::clone(&f.metrics);
    let stop = async {
        tokio::task::yield_now().await;
        status.send_modify(|s| s.state = ServiceState::Stopping);
        record.cells.memory.send_replace(None);
        metrics.set_memory("web", 0);
        source.0.notify_one();
    };
    tokio::join!(f.task.sample(), stop);
    assert_eq!(f.live(), None);
    assert!(f
        .metrics
        .render()
        .contains("autostop_memory_bytes{service=\"web\"} 0"));
    f.close().await;
}

#[tokio::test(start_paused = true)]
async fn savings_survive_a_restart_through_the_state_file() {
    let mut f = Fixture::new(uses(GB, 2 * GB));
    f.enter(ServiceState::Ready);
    f.task.sample().await;
    f.enter(ServiceState::Stopped);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    // The loop's last act is one accounting step and a write.
    let replacement = MemoryTask::new(
        uses(GB, 2 * GB),
        f.task.directory.clone(),
        f.state.clone(),
        Arc::clone(&f.metrics),
    );
    let task = std::mem::replace(&mut f.task, replacement);
    let (_events, rx) = tokio::sync::mpsc::unbounded_channel();
    task.run(rx, shutdown).await;
    let dir = f.close().await;
    let (reopened, _) = StateStore::open(dir.path()).expect("reopen");
    let m = reopened.service("web");
    assert_eq!(m.last_memory_bytes, Some(GB));
    assert_eq!(m.memory_saved_byte_seconds, 1e9 * 3600.0);
    assert_eq!(m.saved_last_24h(unix_hour(SystemTime::now())), 1e9 * 3600.0);
}
