//! The one owner of the state file (`<state_dir>/state.json`): a task that
//! holds the [`StateStore`], applies the updates every other part sends it
//! ([`StateUpdate`]), publishes what is remembered for readers (the status
//! API, the service table's settings, RAM accounting) and is the file's
//! only writer. Its writes (with their fsync) run on a blocking thread.
//!
//! When it writes: at once (after the updates already queued) for a
//! run-time idle timeout (whose API call answers once it is on disk), a
//! learned start time, and a container's memory limits recorded before a
//! hibernation changes them (the reclaim's thread waits until they are on
//! disk: [`StateHandle`] is the docker module's
//! [`LimitJournal`](crate::docker::LimitJournal), in `state_owner_limits.rs`) or
//! cleared once they are back; savings and memory samples every
//! [`SAVE_EVERY`] and when asked ([`StateHandle::flush`]); everything at
//! the end.
//!
//! Bounded under churn: of the services the file remembers that are not
//! managed, the [`DEPARTED_KEPT`] that departed last are kept (a service
//! unmanaged for a moment, say a labelled container being recreated, keeps
//! its learned start time, idle timeout and savings); the others are
//! dropped: first those the file holds only the dashboard's history of
//! (every service the agent saw has one, so a churn of short-lived
//! labelled containers cannot push out a departed service's settings),
//! then those the file had from before this run (or that never departed
//! while remembered). Nothing is dropped until the services of the start
//! are all managed ([`StateUpdate::Settled`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{mpsc as std_mpsc, Arc},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::state::{SavedLimits, ServiceMemory, StateStore};

#[path = "state_owner_limits.rs"]
mod limits;

/// How often credited savings and samples are written without being asked.
pub const SAVE_EVERY: Duration = Duration::from_secs(300);
/// How many departed services' memories the file keeps.
pub const DEPARTED_KEPT: usize = 32;

/// What is remembered, as last published.
pub type Remembered = Arc<BTreeMap<String, ServiceMemory>>;

/// The memory limits recorded, by container id, as last published.
pub type RecordedLimits = Arc<BTreeMap<String, SavedLimits>>;

/// A change to what is remembered.
#[derive(Debug)]
pub enum StateUpdate {
    /// A run-time idle timeout (`None` forgets it); `saved` hears once it
    /// is on disk (or why not).
    IdleTimeout {
        service: String,
        seconds: Option<u64>,
        saved: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// The learned start estimate after a start.
    LearnedStart { service: String, millis: u64 },
    /// The last memory use seen while the service ran.
    LastMemory { service: String, bytes: u64 },
    /// Saved byte·seconds, in the wall-clock hour `hour`.
    Credit {
        service: String,
        byte_seconds: f64,
        hour: u64,
    },
    /// A request woke the service or found it pre-warmed (Unix seconds).
    Demand { service: String, at: i64 },
    /// How a pre-warm begun at `at` (Unix seconds) turned out.
    Prewarmed { service: String, at: i64, hit: bool },
    /// The service entered a state (the dashboard's timeline); `took_ms`
    /// is a ready start's duration.
    Transition {
        service: String,
        transition: crate::state::Transition,
        took_ms: Option<u64>,
    },
    /// The service is managed (again).
    Managed(String),
    /// The service is no longer managed.
    Departed(String),
    /// Every service of the start is managed: what the file remembers of
    /// other services may be pruned from now on.
    Settled,
    /// Write now if anything changed; `done` hears when written.
    Flush(Option<oneshot::Sender<()>>),
    /// A container's memory limits, before a hibernation changes them;
    /// `saved` hears once they are on disk (or why not). A blocking
    /// thread waits on it.
    LimitsRecorded {
        container: String,
        limits: SavedLimits,
        saved: std_mpsc::SyncSender<Result<(), String>>,
    },
    /// A container's recorded limits are back (`None`: whatever its record
    /// is, e.g. the container is gone): the record goes.
    LimitsRestored {
        container: String,
        limits: Option<SavedLimits>,
    },
}

/// How the rest of the agent talks to the owner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateHandle {
    updates: mpsc::UnboundedSender<StateUpdate>,
    view: watch::Receiver<Remembered>,
    limits: watch::Receiver<RecordedLimits>,
}

impl StateHandle {
    /// What is remembered about `service` now (defaults when nothing is).
    pub fn service(&self, service: &str) -> ServiceMemory {
        self.view.borrow().get(service).cloned().unwrap_or_default()
    }

    /// Sends an update (dropped once the owner is gone, at shutdown).
    pub fn send(&self, update: StateUpdate) {
        let _ = self.updates.send(update);
    }

    /// Records a run-time idle timeout and waits until it is on disk.
    pub async fn set_idle_timeout(&self, service: &str, seconds: u64) -> Result<(), String> {
        let (saved, written) = oneshot::channel();
        self.send(StateUpdate::IdleTimeout {
            service: service.to_owned(),
            seconds: Some(seconds),
            saved: Some(saved),
        });
        written
            .await
            .unwrap_or_else(|_| Err("the state owner has stopped".to_owned()))
    }

    /// Asks for a write and waits for it.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        self.send(StateUpdate::Flush(Some(done)));
        let _ = written.await;
    }
}

/// The owner's own state.
struct Owner {
    store: StateStore,
    publish: watch::Sender<Remembered>,
    publish_limits: watch::Sender<RecordedLimits>,
    managed: HashSet<String>,
    /// When each remembered service departed (a sequence number), for
    /// those that departed in this run.
    departures: HashMap<String, u64>,
    next_departure: u64,
    /// Pruning may begin ([`StateUpdate::Settled`]).
    settled: bool,
    dirty: bool,
    urgent: bool,
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
    /// Reclaim threads waiting for their record to be on disk.
    recording: Vec<std_mpsc::SyncSender<Result<(), String>>>,
    flushed: Vec<oneshot::Sender<()>>,
}

/// Starts the owner of `store`: its handle and the task's body, which ends
/// once `closing` is cancelled (the agent does that last, once every other
/// task has ended) or every handle is dropped, after applying what was
/// sent and a last write.
pub fn start(
    store: StateStore,
    closing: CancellationToken,
) -> (StateHandle, impl std::future::Future<Output = ()> + Send) {
    let (updates, rx) = mpsc::unbounded_channel();
    let (publish, view) = watch::channel(Arc::new(store.services().clone()));
    let (publish_limits, limits) = watch::channel(Arc::new(store.limits().clone()));
    let owner = Owner {
        store,
        publish,
        publish_limits,
        managed: HashSet::new(),
        departures: HashMap::new(),
        next_departure: 0,
        settled: false,
        dirty: false,
        urgent: false,
        waiting: Vec::new(),
        recording: Vec::new(),
        flushed: Vec::new(),
    };
    (
        StateHandle {
            updates,
            view,
            limits,
        },
        owner.run(rx, closing),
    )
}

impl Owner {
    async fn run(
        mut self,
        mut updates: mpsc::UnboundedReceiver<StateUpdate>,
        closing: CancellationToken,
    ) {
        let mut every = tokio::time::interval(SAVE_EVERY);
        every.tick().await;
        loop {
            let periodic = tokio::select! {
                () = closing.cancelled() => break,
                update = updates.recv() => match update {
                    Some(update) => {
                        self.apply(update);
                        false
                    }
                    None => break,
                },
                _ = every.tick() => true,
            };
            while let Ok(update) = updates.try_recv() {
                self.apply(update);
            }
            self.publish
                .send_replace(Arc::new(self.store.services().clone()));
            self.publish_limits
                .send_replace(Arc::new(self.store.limits().clone()));
            if self.urgent || !self.flushed.is_empty() || periodic {
                self.prune();
                self.write().await;
            }
        }
        while let Ok(update) = updates.try_recv() {
            self.apply(update);
        }
        self.prune();
        self.write().await;
    }

    fn apply(&mut self, update: StateUpdate) {
        match update {
            StateUpdate::IdleTimeout {
                service,
                seconds,
                saved,
            } => {
                if self.store.service(&service).idle_timeout_override_s != seconds {
                    self.store
                        .update(&service, |m| m.idle_timeout_override_s = seconds);
                    self.mark(true);
                }
                if let Some(saved) = saved {
                    self.urgent = true;
                    self.waiting.push(saved);
                }
            }
            StateUpdate::LearnedStart { service, millis } => {
                self.store
                    .update(&service, |m| m.learned_start_ms = Some(millis));
                self.mark(true);
            }
            StateUpdate::Demand { service, at } => {
                self.store.update(&service, |m| m.note_demand(at));
                self.mark(false);
            }
            StateUpdate::Prewarmed { service, at, hit } => {
                self.store.update(&service, |m| m.note_prewarm(at, hit));
                self.mark(false);
            }
            StateUpdate::LastMemory { service, bytes } => {
                self.store
                    .update(&service, |m| m.last_memory_bytes = Some(bytes));
                self.mark(false);
            }
            StateUpdate::Credit {
                service,
                byte_seconds,
                hour,
            } => {
                self.store
                    .update(&service, |m| m.credit_saved(byte_seconds, hour));
                self.mark(false);
            }
            StateUpdate::Transition {
                service,
                transition,
                took_ms,
            } => {
                self.store.update(&service, |m| {
                    m.timeline.note(transition, took_ms, m.learned_start_ms)
                });
                self.mark(false);
            }
            StateUpdate::Managed(service) => {
                self.departures.remove(&service);
                self.managed.insert(service);
            }
            StateUpdate::Departed(service) => {
                self.managed.remove(&service);
                if self.store.services().contains_key(&service) {
                    self.departures.insert(service, self.next_departure);
                    self.next_departure += 1;
                }
                self.prune();
            }
            StateUpdate::Settled => {
                self.settled = true;
                self.prune();
            }
            StateUpdate::Flush(done) => {
                self.urgent = true;
                self.flushed.extend(done);
            }
            StateUpdate::LimitsRecorded {
                container,
                limits,
                saved,
            } => {
                self.store.record_limits(&container, limits);
                self.mark(true);
                self.recording.push(saved);
            }
            StateUpdate::LimitsRestored { container, limits } => {
                if self.store.clear_limits(&container, limits.as_ref()) {
                    self.mark(true);
                }
            }
        }
    }

    fn mark(&mut self, urgent: bool) {
        self.dirty = true;
        self.urgent |= urgent;
    }

    /// Forgets the unmanaged services beyond [`DEPARTED_KEPT`]: those
    /// the file holds only the dashboard's history of first (any service
    /// the agent saw has one), then those with no departure in this run,
    /// then the earliest departed.
    fn prune(&mut self) {
        if !self.settled {
            return;
        }
        let mut unmanaged: Vec<(bool, Option<u64>, String)> = self
            .store
            .services()
            .iter()
            .filter(|(name, _)| !self.managed.contains(*name))
            .map(|(name, memory)| {
                let durable = !memory.history_only();
                (durable, self.departures.get(name).copied(), name.clone())
            })
            .collect();
        if unmanaged.len() <= DEPARTED_KEPT {
            return;
        }
        unmanaged.sort_unstable();
        let excess = unmanaged.len() - DEPARTED_KEPT;
        for (_, _, name) in unmanaged.into_iter().take(excess) {
            self.store.forget(&name);
            self.departures.remove(&name);
        }
        self.dirty = true;
    }

    /// Writes the file if it changed (on a blocking thread), then answers
    /// whoever waits.
    async fn write(&mut self) {
        let result = if self.dirty {
            match self.store.save_job() {
                Ok(job) => match tokio::task::spawn_blocking(job).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the state write did not finish: {e}")),
                },
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok(())
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "cannot persist state");
        } else {
            self.dirty = false;
        }
        self.urgent = false;
        for waiting in self.waiting.drain(..) {
            let _ = waiting.send(result.clone());
        }
        for recording in self.recording.drain(..) {
            // Never blocks: a channel of one, sent to once.
            let _ = recording.try_send(result.clone());
        }
        for flushed in self.flushed.drain(..) {
            let _ = flushed.send(());
        }
    }
}

/// Ends the state file's owner (its last write), once: `parts` is the
/// handle and the owner's task, `None` when already closed.
pub(super) async fn close(
    closing: &CancellationToken,
    parts: Option<(StateHandle, crate::supervisor::Supervised)>,
    grace: std::time::Duration,
) {
    let Some((state, task)) = parts else { return };
    closing.cancel();
    drop(state);
    crate::supervisor::Supervisor::join_all(vec![task], grace).await;
}

#[cfg(test)]
#[path = "tests_state_owner.rs"]
mod tests;
