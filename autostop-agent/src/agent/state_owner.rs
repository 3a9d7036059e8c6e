//! The one owner of the state file (`<state_dir>/state.json`): a task that
//! holds the [`StateStore`], applies the updates every other part sends it
//! ([`StateUpdate`]), publishes what is remembered for readers (the status
//! API, the service table's settings, RAM accounting) and is the file's
//! only writer. Its writes (with their fsync) run on a blocking thread.
//!
//! When it writes: at once (after the updates already queued) for a
//! run-time idle timeout (whose API call answers once it is on disk) and a
//! learned start time; savings and memory samples every [`SAVE_EVERY`]
//! and when asked ([`StateHandle::flush`]); everything at the end.
//!
//! Bounded under churn: what is remembered about services that are no
//! longer managed is kept for the [`DEPARTED_KEPT`] most recently departed
//! names (a service unmanaged for a moment, say a labelled container being
//! recreated, keeps its learned start time, idle timeout and savings);
//! older ones are dropped from the file.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::state::{ServiceMemory, StateStore};

/// How often credited savings and samples are written without being asked.
pub const SAVE_EVERY: Duration = Duration::from_secs(300);
/// How many departed services' memories the file keeps.
pub const DEPARTED_KEPT: usize = 32;

/// What is remembered, as last published.
pub type Remembered = Arc<BTreeMap<String, ServiceMemory>>;

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
    /// The service is managed (again).
    Managed(String),
    /// The service is no longer managed.
    Departed(String),
    /// Write now if anything changed; `done` hears when written.
    Flush(Option<oneshot::Sender<()>>),
}

/// How the rest of the agent talks to the owner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateHandle {
    updates: mpsc::UnboundedSender<StateUpdate>,
    view: watch::Receiver<Remembered>,
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
    managed: HashSet<String>,
    /// Departed services, oldest departure first.
    departed: VecDeque<String>,
    dirty: bool,
    urgent: bool,
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
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
    // Until services are managed, everything in the file counts as
    // departed, oldest name first (the file does not say when).
    let departed = store.services().keys().cloned().collect();
    let owner = Owner {
        store,
        publish,
        managed: HashSet::new(),
        departed,
        dirty: false,
        urgent: false,
        waiting: Vec::new(),
        flushed: Vec::new(),
    };
    (StateHandle { updates, view }, owner.run(rx, closing))
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
            StateUpdate::Managed(service) => {
                self.departed.retain(|d| *d != service);
                self.managed.insert(service);
            }
            StateUpdate::Departed(service) => {
                self.managed.remove(&service);
                self.departed.retain(|d| *d != service);
                self.departed.push_back(service);
                self.prune();
            }
            StateUpdate::Flush(done) => {
                self.urgent = true;
                self.flushed.extend(done);
            }
        }
    }

    fn mark(&mut self, urgent: bool) {
        self.dirty = true;
        self.urgent |= urgent;
    }

    /// Forgets the oldest departed services beyond [`DEPARTED_KEPT`].
    fn prune(&mut self) {
        while self.departed.len() > DEPARTED_KEPT {
            if let Some(old) = self.departed.pop_front() {
                if self.store.services().contains_key(&old) {
                    self.store.forget(&old);
                    self.dirty = true;
                }
            }
        }
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
        for flushed in self.flushed.drain(..) {
            let _ = flushed.send(());
        }
    }
}
