//! RAM now and RAM saved. A background task samples the memory of every
//! ready service from Docker's stats every [`SAMPLE_EVERY`] (and shortly after
//! a start), a few services at a time, and feeds the status API's view,
//! the `memory_bytes` gauge and the persisted `last_memory_bytes`. While a
//! service is stopped, its last observed running memory × the time it stays
//! stopped is credited to its savings (total and hourly buckets in
//! `state.json`, the `memory_saved_byte_seconds` counter). The state file is
//! written every [`SAVE_EVERY`] and at shutdown, not on every tick.
//!
//! Time stopped is counted from when the agent saw the service stop (or
//! adopted it stopped): time while the agent itself was not running is not
//! credited. `failed` services are not counted. A sampling failure is
//! logged at debug level and leaves the last value.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use futures_util::StreamExt;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::control::Services;
use crate::{
    docker::{DockerRuntime, MemoryUse},
    service::ServiceState,
    state::unix_hour,
};

/// How often running services' memory is sampled and savings credited.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How often the credited savings are written to the state file.
pub const SAVE_EVERY: Duration = Duration::from_secs(300);
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

#[async_trait::async_trait]
impl MemorySource for DockerRuntime {
    async fn memory(&self, service: &str) -> Result<Option<MemoryUse>, String> {
        DockerRuntime::memory(self, service)
            .await
            .map_err(|e| e.to_string())
    }
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
}

/// The agent's memory figures: live samples and the savings ledger.
#[derive(Debug, Default)]
pub struct MemoryBook {
    /// Latest sample of each running service.
    live: Mutex<HashMap<String, MemoryUse>>,
    /// Credited stretches of downtime.
    ledger: Mutex<Ledger>,
    /// Savings credited since the state file was last written.
    dirty: AtomicBool,
    /// Asks the sampler for an immediate round (a service became ready).
    pub(super) sample_now: Notify,
}

impl MemoryBook {
    /// The latest sample of `service`, if it runs and was sampled.
    pub fn live(&self, service: &str) -> Option<MemoryUse> {
        self.live.lock().ok()?.get(service).copied()
    }

    fn set_live(&self, service: &str, sample: Option<MemoryUse>) {
        if let Ok(mut live) = self.live.lock() {
            match sample {
                Some(s) => live.insert(service.to_owned(), s),
                None => live.remove(service),
            };
        }
    }
}

/// Credits `seconds` of downtime of `service` at its last observed memory.
fn credit(services: &Services, service: &str, seconds: f64, wall: SystemTime) {
    if seconds <= 0.0 {
        return;
    }
    let Ok(mut state) = services.state().lock() else {
        return;
    };
    let Some(bytes) = state.service(service).last_memory_bytes else {
        return;
    };
    #[allow(clippy::cast_precision_loss)] // RAM sizes are far below 2^52
    let amount = bytes as f64 * seconds;
    state.update(service, |m| m.credit_saved(amount, unix_hour(wall)));
    services.metrics.add_memory_saved(service, amount);
    services.memory.dirty.store(true, Ordering::Relaxed);
}

/// Credits every stopped service's downtime up to `now` (and shows its
/// memory gauge at 0, also for services adopted stopped).
pub fn accrue(services: &Services, now: Instant, wall: SystemTime) {
    for entry in services.all() {
        let status = entry.handle.status();
        let stopped_since = (status.state == ServiceState::Stopped).then_some(status.since);
        let name = &entry.config.name;
        if stopped_since.is_some() {
            services.metrics.set_memory(name, 0);
        }
        let seconds = match services.memory.ledger.lock() {
            Ok(mut ledger) => ledger.tick(name, stopped_since, now),
            Err(_) => return,
        };
        credit(services, name, seconds, wall);
    }
}

/// `service` is starting: credits its downtime up to now and closes it.
pub(super) fn on_starting(services: &Services, service: &str) {
    let seconds = match services.memory.ledger.lock() {
        Ok(mut ledger) => ledger.close(service, Instant::now()),
        Err(_) => return,
    };
    credit(services, service, seconds, SystemTime::now());
}

/// `service` stopped (or is stopping): it uses no memory any more.
pub(super) fn on_stopped(services: &Services, service: &str) {
    services.memory.set_live(service, None);
    services.metrics.set_memory(service, 0);
}

/// Writes the state file if savings were credited since the last write.
fn save_if_dirty(services: &Services) {
    if !services.memory.dirty.swap(false, Ordering::Relaxed) {
        return;
    }
    if let Ok(state) = services.state().lock() {
        if let Err(e) = state.save() {
            tracing::warn!(error = %e, "cannot persist the RAM savings");
        }
    }
}

/// Samples every ready service (a few at a time) and records the results.
pub async fn sample(source: &dyn MemorySource, services: &Services) {
    let ready: Vec<String> = services
        .all()
        .into_iter()
        .filter(|e| e.handle.status().state == ServiceState::Ready)
        .map(|e| e.config.name)
        .collect();
    let mut rounds = futures_util::stream::iter(ready)
        .map(|name| async move {
            let began = std::time::Instant::now();
            let result = tokio::time::timeout(SAMPLE_TIMEOUT, source.memory(&name)).await;
            (name, result, began.elapsed())
        })
        .buffer_unordered(SAMPLE_CONCURRENCY);
    while let Some((name, result, took)) = rounds.next().await {
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
        // A stop that began while the sample was in flight already zeroed
        // the figures: do not bring them back.
        let still_ready = services
            .get(&name)
            .is_some_and(|e| e.handle.status().state == ServiceState::Ready);
        if !still_ready {
            continue;
        }
        services.memory.set_live(&name, sample);
        services
            .metrics
            .set_memory(&name, sample.map_or(0, |s| s.used_bytes));
        if let (Some(sample), Ok(mut state)) = (sample, services.state().lock()) {
            state.update(&name, |m| m.last_memory_bytes = Some(sample.used_bytes));
            services.memory.dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// The sampling and accounting loop, until `shutdown`; saves at the end.
pub async fn run(
    source: Arc<dyn MemorySource>,
    services: Arc<Services>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = every.tick() => {}
            () = services.memory.sample_now.notified() => {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(AFTER_READY) => {}
                }
            }
        }
        accrue(&services, Instant::now(), SystemTime::now());
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = sample(source.as_ref(), &services) => {}
        }
        if last_save.elapsed() >= SAVE_EVERY {
            save_if_dirty(&services);
            last_save = Instant::now();
        }
    }
    accrue(&services, Instant::now(), SystemTime::now());
    save_if_dirty(&services);
}

#[cfg(test)]
#[path = "tests_memory.rs"]
mod tests;
