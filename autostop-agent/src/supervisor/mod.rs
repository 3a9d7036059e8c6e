//! No half-alive agent: every long-lived task is spawned (or adopted)
//! through a [`Supervisor`], which watches it end. A panic, or an end
//! before shutdown that nobody asked for, is fatal: it is logged, the
//! shutdown token is cancelled (so the agent cleans up and puts the kernel
//! path back to stock) and the agent exits non-zero, for systemd's
//! `Restart=on-failure`. The [`TaskBoard`] shows each task's state on
//! `/healthz`.
//!
//! Policy for the rest of the process ([`panic`]): any panic, on any thread
//! (per-connection tasks and blocking threads included), is fatal too. A
//! panic means an invariant broke, and shared state behind a lock it held
//! is poisoned; carrying on would be exactly the half-alive agent this
//! module exists to prevent, while a restart re-adopts every service from
//! Docker in about a second. The release profile keeps unwinding (not
//! `panic = "abort"`) so that this clean-up runs; [`deadline`] ends the
//! process if the clean-up itself hangs.

pub mod deadline;
pub mod panic;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinHandle},
};
use tokio_util::sync::CancellationToken;

/// What a supervised task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Running.
    Running,
    /// Ended after shutdown began (or when asked to): normal.
    Stopped,
    /// Returned on its own before shutdown: fatal.
    Ended,
    /// Panicked: fatal.
    Panicked,
}

impl TaskState {
    /// Short stable name (`/healthz`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Ended => "ended",
            Self::Panicked => "panicked",
        }
    }

    /// False for the fatal states.
    pub fn healthy(self) -> bool {
        matches!(self, Self::Running | Self::Stopped)
    }
}

/// Each supervised task's state, by name, published for `/healthz`: the
/// watchers write it (each its own task's entry), the API reads it.
#[derive(Debug, Clone)]
pub struct TaskBoard(watch::Sender<BTreeMap<String, TaskState>>);

impl Default for TaskBoard {
    fn default() -> Self {
        Self(watch::Sender::new(BTreeMap::new()))
    }
}

impl TaskBoard {
    /// A copy of every task's state.
    pub fn snapshot(&self) -> BTreeMap<String, TaskState> {
        self.0.borrow().clone()
    }

    fn set(&self, name: &str, state: TaskState) {
        self.0.send_modify(|board| {
            board.insert(name.to_owned(), state);
        });
    }

    fn remove(&self, name: &str) {
        self.0.send_modify(|board| {
            board.remove(name);
        });
    }
}

/// Spawns and watches the agent's long-lived tasks. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shutdown: CancellationToken,
    board: TaskBoard,
    /// The first fatal failure, for the exit status and the log.
    failure: Arc<OnceLock<String>>,
}

/// One supervised task.
pub struct Supervised {
    name: String,
    /// The task watching the real one; ends right after it.
    watcher: JoinHandle<()>,
    /// Aborts the real task (a shutdown that waited long enough).
    abort: AbortHandle,
    /// Set when its end is expected (a service removed by a reload).
    retiring: Arc<AtomicBool>,
}

impl Supervised {
    /// The task's name on the board.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks the coming end as expected: the task leaves the board instead
    /// of failing the agent (unless it panics).
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::SeqCst);
    }

    /// Waits until the task has ended and its end was recorded.
    pub async fn join(self) {
        let _ = self.watcher.await;
    }
}

impl Supervisor {
    /// A supervisor that cancels `shutdown` on a fatal failure and records
    /// task states on `board`.
    pub fn new(shutdown: CancellationToken, board: TaskBoard) -> Self {
        Self {
            shutdown,
            board,
            failure: Arc::new(OnceLock::new()),
        }
    }

    /// The board this supervisor writes.
    pub fn board(&self) -> TaskBoard {
        self.board.clone()
    }

    /// The first fatal failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Spawns `task` as `name` on the current runtime and watches it.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F) -> Supervised
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.adopt(name, tokio::spawn(task))
    }

    /// Watches a task someone else spawned.
    pub fn adopt(&self, name: impl Into<String>, task: JoinHandle<()>) -> Supervised {
        let name = name.into();
        let retiring = Arc::new(AtomicBool::new(false));
        let abort = task.abort_handle();
        self.board.set(&name, TaskState::Running);
        let watch = Watch {
            supervisor: self.clone(),
            name: name.clone(),
            retiring: Arc::clone(&retiring),
        };
        let watcher = tokio::spawn(async move {
            let outcome = task.await;
            watch.ended(outcome);
        });
        Supervised {
            name,
            watcher,
            abort,
            retiring,
        }
    }

    /// Records a fatal failure and starts the shutdown.
    pub fn fail(&self, why: String) {
        // Cancel before logging: the shutdown must not wait on the log.
        let _ = self.failure.set(why.clone());
        self.shutdown.cancel();
        tracing::error!(event = "fatal", "{why}; shutting down");
    }

    /// Joins `tasks` (shutdown), giving them `grace` in all; a task still
    /// running then is logged and aborted, so one stuck task cannot keep
    /// the kernel path steered.
    pub async fn join_all(tasks: Vec<Supervised>, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task.watcher)
                .await
                .is_ok()
            {
                continue;
            }
            tracing::error!(task = %task.name, "task did not stop within {grace:?}; aborting it");
            task.abort.abort();
            // An abort lands at the task's next await; one blocked in sync
            // code is left behind (the process exits without it).
            let _ = tokio::time::timeout(Duration::from_millis(200), task.watcher).await;
        }
    }
}

/// What the watcher of one task needs to judge its end.
struct Watch {
    supervisor: Supervisor,
    name: String,
    retiring: Arc<AtomicBool>,
}

impl Watch {
    fn ended(self, outcome: Result<(), tokio::task::JoinError>) {
        let expected =
            self.retiring.load(Ordering::SeqCst) || self.supervisor.shutdown.is_cancelled();
        let state = match outcome {
            Err(e) if e.is_panic() => TaskState::Panicked,
            // Ok, or aborted (only `join_all` aborts, during shutdown).
            _ if expected => TaskState::Stopped,
            _ => TaskState::Ended,
        };
        if state == TaskState::Stopped && self.retiring.load(Ordering::SeqCst) {
            self.supervisor.board.remove(&self.name);
        } else {
            self.supervisor.board.set(&self.name, state);
        }
        match state {
            TaskState::Panicked => self.supervisor.fail(format!("task {} panicked", self.name)),
            TaskState::Ended => self
                .supervisor
                .fail(format!("task {} ended unexpectedly", self.name)),
            TaskState::Running | TaskState::Stopped => {
                tracing::debug!(task = %self.name, "task stopped");
            }
        }
    }
}
