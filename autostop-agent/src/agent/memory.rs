//! RAM now and RAM saved: the memory task samples the memory of every ready
//! service from Docker's stats every [`SAMPLE_EVERY`] while one is ready
//! (and shortly after a start), a few services at a time, and feeds the service's record (the
//! status API's view), the `memory_bytes` gauge and the remembered
//! `last_memory_bytes`. While a service is stopped, its last observed
//! running memory × the time it stays stopped is credited to its savings
//! (sent to the state file's owner, and the `memory_saved_byte_seconds`
//! counter). The task owns the savings ledger; lifecycle steps reach it
//! from [`super::observers::savings`]. Savings are credited every
//! [`ACCRUE_EVERY`] (no Docker call); while no service is ready nothing is
//! sampled.
//!
//! Time stopped is counted from when the agent saw the service stop (or
//! adopted it stopped): time while the agent itself was not running is not
//! credited. `failed` services are not counted. A sampling failure is
//! logged at debug level and leaves the last value.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::StreamExt;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    observers::savings::SavingsEvent,
    registry::DirectoryReader,
    state_owner::{StateHandle, StateUpdate},
};
use crate::{docker::MemoryUse, metrics::Metrics, service::ServiceState, state::unix_hour};

/// How often running services' memory is sampled and savings credited
/// while a service is ready. Each sample is a Docker call per container
/// (inspect and stats, parsed from JSON): with 50 ready services a 15 s
/// period made it most of the agent's idle CPU (`cargo xtask bench scale`),
/// so a minute; the first sample still comes [`AFTER_READY`] a start.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// How often savings are credited (no Docker call: a pass over the
/// directory), so the API's and the metrics' savings move while services
/// sleep; also how often a ready service with a `busy_cpu_percent` guard
/// is sampled (its CPU over the last minute needs several samples).
pub const ACCRUE_EVERY: Duration = Duration::from_secs(15);
/// How many services are sampled at once (a sample takes about a second
/// per container on Docker 20.10, concurrently within a service).
const SAMPLE_CONCURRENCY: usize = 4;
/// Longest wait for one service's sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a service turns ready its sample is taken: the connections
/// held through its cold start are forwarded first, without dockerd
/// computing stats beside them.
const AFTER_READY: Duration = Duration::from_millis(500);

/// Where memory samples come from (Docker in the agent, a fake in tests).
#[async_trait::async_trait]
pub trait MemorySource: Send + Sync {
    /// Memory of `service`'s running containers; `None` when none runs.
    async fn memory(&self, service: &str) -> Result<Option<MemoryUse>, String>;
}

/// Which stretch of each stopped service's downtime is already credited.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Per service: stopped time is credited up to this instant.
    counted_until: HashMap<String, Instant>,
}

impl Ledger {
    /// Seconds of `service`'s downtime not yet credited as of `now`, given
    /// when it entered its stopped state (`None`: it is not stopped, and
    /// nothing is owed). The returned stretch is then counted.
    pub fn tick(&mut self, service: &str, stopped_since: Option<Instant>, now: Instant) -> f64 {
        let Some(since) = stopped_since else {
            self.counted_until.remove(service);
            return 0.0;
        };
        let from = self
            .counted_until
            .get(service)
            .map_or(since, |until| (*until).max(since));
        self.counted_until.insert(service.to_owned(), now);
        now.saturating_duration_since(from).as_secs_f64()
    }

    /// Ends `service`'s stopped stretch at `now` (it is starting): returns
    /// the seconds not yet credited, and never counts them again.
    pub fn close(&mut self, service: &str, now: Instant) -> f64 {
        match self.counted_until.get_mut(service) {
            Some(until) => {
                let owed = now.saturating_duration_since(*until).as_secs_f64();
                *until = now;
                owed
            }
            None => 0.0,
        }
    }

    /// Forgets every service `keep` says no to.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.counted_until.retain(|name, _| keep(name));
    }
}

/// The memory task: its inputs and what it owns.
pub struct MemoryTask {
    /// Where samples come from.
    pub source: Arc<dyn MemorySource>,
    /// The managed services.
    pub directory: DirectoryReader,
    /// The state file's owner.
    pub state: StateHandle,
    /// Gauges and counters.
    pub metrics: Arc<Metrics>,
    /// Credited stretches of downtime.
    pub ledger: Ledger,
    /// The last memory use seen of each service (also sent to the state),
    /// so a credit never waits for the state owner's next publication.
    pub last_memory: HashMap<String, u64>,
}

impl MemoryTask {
    /// A task over `source`, with an empty ledger.
    pub fn new(
        source: Arc<dyn MemorySource>,
        directory: DirectoryReader,
        state: StateHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            source,
            directory,
            state,
            metrics,
            ledger: Ledger::default(),
            last_memory: HashMap::new(),
        }
    }

    /// Credits `seconds` of downtime of `service` at its last observed
    /// memory.
    fn credit(&mut self, service: &str, seconds: f64, wall: SystemTime) {
        if seconds <= 0.0 {
            return;
        }
        let bytes = match self.last_memory.get(service) {
            Some(bytes) => *bytes,
            None => match self.state.service(service).last_memory_bytes {
                Some(bytes) => *self.last_memory.entry(service.to_owned()).or_insert(bytes),
                None => return,
            },
        };
        #[allow(clippy::cast_precision_loss)] // RAM sizes are far below 2^52
        let byte_seconds = bytes as f64 * seconds;
        self.state.send(StateUpdate::Credit {
            service: service.to_owned(),
            byte_seconds,
            hour: unix_hour(wall),
        });
        self.metrics.add_memory_saved(service, byte_seconds);
    }

    /// Credits every stopped service's downtime up to `now` (and shows its
    /// memory gauge at 0, also for services adopted stopped); forgets the
    /// services no longer managed.
    pub fn accrue(&mut self, now: Instant, wall: SystemTime) {
        let directory = self.directory.snapshot();
        self.ledger.retain(|name| directory.get(name).is_some());
        self.last_memory
            .retain(|name, _| directory.get(name).is_some());
        for record in directory.iter() {
            let status = record.handle.status();
            // A hibernated service whose memory went to swap gave it back
            // like a stopped one (what stayed resident is a few MiB).
            let asleep = status.state == ServiceState::Stopped
                || (status.state == ServiceState::Hibernated
                    && status.hibernation.as_ref().is_some_and(|h| h.reclaimed));
            let stopped_since = asleep.then_some(status.since);
            if stopped_since.is_some() {
                self.metrics.set_memory(record.name(), 0);
            }
            let seconds = self.ledger.tick(record.name(), stopped_since, now);
            self.credit(record.name(), seconds, wall);
        }
    }

    /// A lifecycle step.
    pub fn on_event(&mut self, event: SavingsEvent) {
        match event {
            SavingsEvent::Starting(service) => {
                let seconds = self.ledger.close(&service, Instant::now());
                self.credit(&service, seconds, SystemTime::now());
            }
            SavingsEvent::Stopped(service) => {
                if let Some(record) = self.directory.get(&service) {
                    record.cells.memory.send_replace(None);
                }
                self.metrics.set_memory(&service, 0);
            }
            SavingsEvent::Ready(_) => {}
        }
    }

    /// Whether a ready service has a `busy_cpu_percent` guard.
    fn any_guarded_ready(&self) -> bool {
        self.directory.snapshot().iter().any(|r| {
            r.config.wake.busy_cpu_percent.is_some()
                && r.handle.status().state == ServiceState::Ready
        })
    }

    /// Whether a service is ready (has memory to sample).
    fn any_ready(&self) -> bool {
        self.directory
            .snapshot()
            .iter()
            .any(|r| r.handle.status().state == ServiceState::Ready)
    }

    /// Samples every ready service (a few at a time) and records the
    /// results.
    #[cfg(test)]
    pub async fn sample(&mut self) {
        self.sample_some(false).await;
    }

    /// Samples the ready services, or (`guarded_only`) only those with a
    /// `busy_cpu_percent` guard, whose CPU rate needs a sample every
    /// [`ACCRUE_EVERY`].
    async fn sample_some(&mut self, guarded_only: bool) {
        let ready: Vec<_> = self
            .directory
            .snapshot()
            .iter()
            .filter(|r| r.handle.status().state == ServiceState::Ready)
            .filter(|r| !guarded_only || r.config.wake.busy_cpu_percent.is_some())
            .cloned()
            .collect();
        let source = Arc::clone(&self.source);
        let mut rounds = futures_util::stream::iter(ready)
            .map(|record| {
                let source = Arc::clone(&source);
                async move {
                    let began = std::time::Instant::now();
                    let result =
                        tokio::time::timeout(SAMPLE_TIMEOUT, source.memory(record.name())).await;
                    (record, result, began.elapsed())
                }
            })
            .buffer_unordered(SAMPLE_CONCURRENCY);
        while let Some((record, result, took)) = rounds.next().await {
            let name = record.name();
            let sample = match result {
                Ok(Ok(sample)) => sample,
                Ok(Err(e)) => {
                    tracing::debug!(service = %name, error = %e, "memory sample failed; keeping the last one");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(service = %name, "memory sample timed out; keeping the last one");
                    continue;
                }
            };
            tracing::debug!(service = %name, took_ms = took.as_millis() as u64, used = sample.map(|s| s.used_bytes), "memory sampled");
            // A stop that began while the sample was in flight already
            // zeroed the figures: do not bring them back.
            if record.handle.status().state != ServiceState::Ready {
                continue;
            }
            record.cells.memory.send_replace(sample);
            self.metrics
                .set_memory(name, sample.map_or(0, |s| s.used_bytes));
            if let Some(sample) = sample {
                self.last_memory.insert(name.to_owned(), sample.used_bytes);
                self.state.send(StateUpdate::LastMemory {
                    service: name.to_owned(),
                    bytes: sample.used_bytes,
                });
            }
        }
    }

    /// The sampling and accounting loop, until `shutdown`; accounts once
    /// more at the end and asks the state owner to write.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<SavingsEvent>,
        shutdown: CancellationToken,
    ) {
        let mut soon: Option<Instant> = None;
        let mut next = Instant::now();
        // When the running services' RAM is next due (now: at start).
        let mut sample_due = Instant::now();
        loop {
            let after_start = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next) => false,
                () = sleep_until(soon) => {
                    soon = None;
                    true
                }
                Some(event) = events.recv() => {
                    if matches!(event, SavingsEvent::Ready(_)) {
                        soon.get_or_insert(Instant::now() + AFTER_READY);
                    }
                    self.on_event(event);
                    continue;
                }
            };
            let now = Instant::now();
            self.accrue(now, SystemTime::now());
            let full = (after_start || now >= sample_due) && self.any_ready();
            if full || self.any_guarded_ready() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.sample_some(!full) => {}
                }
                if full {
                    sample_due = Instant::now() + SAMPLE_EVERY;
                }
            }
            if !after_start {
                next = Instant::now() + ACCRUE_EVERY;
            }
        }
        while let Ok(event) = events.try_recv() {
            self.on_event(event);
        }
        self.accrue(Instant::now(), SystemTime::now());
        self.state.flush().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "tests_memory.rs"]
mod tests;
