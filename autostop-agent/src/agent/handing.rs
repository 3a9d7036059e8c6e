//! The agent's part in a hand-over ([`crate::handover`]): what `run_with`
//! needs to offer its sockets (the control socket and duplicates of the
//! listeners), to end a hand-over it armed (pass the held connections,
//! wait for the new agent, let forwarded connections finish), and, in a
//! new agent, to tell systemd and the old agent that it runs.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinSet;

use super::{liveness, registry::DirectoryReader, AgentError, HealthFlags};
use crate::{
    coldstart::{HandoffTake, Passed},
    handover::{
        self, ControlServer, HandoverPoint, Listeners, Outcome, ServerContext, ServiceSnapshot,
        Taken,
    },
    service::{Resumed, ServiceState, StartBlock},
    supervisor::{Supervised, Supervisor},
};

/// How long a new agent waits for its services' adoption before it tells
/// the old one it runs (adoption is bounded by Docker's timeouts).
const ADOPTION_WAIT: Duration = Duration::from_secs(30);

/// The hand-over parts of an agent's dependencies.
#[derive(Default)]
pub struct HandoverDeps {
    /// The control socket with what it offers (`None`: no hand-over to
    /// this agent, as in tests over fakes).
    pub control: Option<ControlSetup>,
    /// The hand-over this agent took (`None`: it started afresh).
    pub taken: Option<Taken>,
}

/// The control socket, bound, and what a new agent inherits.
pub struct ControlSetup {
    /// The socket.
    pub server: ControlServer,
    /// Duplicates of the listeners.
    pub listeners: Listeners,
    /// This agent's warm-up table.
    pub nft_table: String,
}

/// Duplicates `socket`'s descriptor (for the control socket's offer).
pub(super) fn dup(socket: &impl AsFd, what: &str) -> Result<OwnedFd, AgentError> {
    socket
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| AgentError::Io {
            what: format!("duplicating the {what} for a hand-over"),
            source,
        })
}

/// Serves the control socket from now on (once the agent runs).
pub(super) fn serve_control(
    control: Option<ControlSetup>,
    config_path: PathBuf,
    supervisor: &Supervisor,
    shutdown: &tokio_util::sync::CancellationToken,
) -> (Arc<HandoverPoint>, Option<Supervised>) {
    let point = Arc::new(HandoverPoint::default());
    let Some(control) = control else {
        return (point, None);
    };
    let context = ServerContext {
        listeners: control.listeners,
        nft_table: control.nft_table,
        config_path,
        point: Arc::clone(&point),
        stop: shutdown.clone(),
    };
    let task = supervisor.spawn("control", control.server.run(context, shutdown.clone()));
    (point, Some(task))
}

/// In a new agent: once its services are adopted, tells systemd its PID
/// is the unit's main PID, then tells the old agent it runs.
pub(super) async fn took_over(taken: Taken, directory: DirectoryReader, health: Arc<HealthFlags>) {
    let adopted = liveness::adopted(directory, health);
    if tokio::time::timeout(ADOPTION_WAIT, adopted).await.is_err() {
        tracing::warn!(waited = ?ADOPTION_WAIT, "not every service adopted yet; taking over all the same");
    }
    liveness::announce_main_pid();
    let old_pid = taken.old_pid;
    let told = tokio::task::spawn_blocking(move || taken.running()).await;
    match told {
        Ok(Ok(())) => tracing::info!(
            event = "handover_done",
            old_pid,
            "took over from the old agent"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, old_pid, "could not tell the old agent this one runs; it stops by itself")
        }
        Err(e) => tracing::warn!(error = %e, "hand-over thread failed"),
    }
}

/// What the old agent knew of each service, for its state machine.
pub(super) fn resumed(taken: &Taken) -> Vec<(String, Resumed)> {
    let ms = Duration::from_millis;
    taken
        .services
        .iter()
        .map(|s| {
            let resumed = Resumed {
                starting: s.state == ServiceState::Starting.as_str(),
                idle_for: s.idle_for_ms.map(ms),
                hold: s.hold,
                crash_loop: s.crash_loop.clone(),
                retry_in: s.retry_in_ms.map(ms),
            };
            (s.name.clone(), resumed)
        })
        .collect()
}

/// Each service's state, for the snapshot a new agent receives.
pub(super) fn snapshot(directory: &DirectoryReader) -> Vec<ServiceSnapshot> {
    let now = tokio::time::Instant::now();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    directory
        .snapshot()
        .iter()
        .map(|record| {
            let status = record.handle.status();
            let ready = status.state == ServiceState::Ready;
            // The later of its last traffic and its becoming ready.
            let reference = match status.last_activity {
                Some(at) => at.max(status.since),
                None => status.since,
            };
            ServiceSnapshot {
                name: record.config.name.clone(),
                state: status.state.as_str().to_owned(),
                idle_for_ms: ready.then(|| ms(now.saturating_duration_since(reference))),
                hold: status.hold,
                crash_loop: matches!(status.start_block, Some(StartBlock::CrashLoop))
                    .then(|| status.last_error.clone().unwrap_or_default()),
                retry_in_ms: match status.start_block {
                    Some(StartBlock::Backoff { retry_at }) => {
                        Some(ms(retry_at.saturating_duration_since(now)))
                    }
                    _ => None,
                },
            }
        })
        .collect()
}

/// In an old agent whose services are stopped: passes what it held and
/// waits for the new agent to run.
pub(super) async fn pass(
    point: Arc<HandoverPoint>,
    take: &mut HandoffTake,
    services: Vec<ServiceSnapshot>,
) -> Outcome {
    let mut passed: Vec<Passed> = Vec::new();
    while let Ok(conn) = take.passed.try_recv() {
        passed.push(conn);
    }
    let outcome = handover::finish(point, passed, services).await;
    match &outcome {
        Outcome::TookOver(pid) => {
            tracing::info!(
                event = "handed_over",
                new_pid = pid,
                "the new agent runs; this one detaches and exits"
            );
        }
        Outcome::Failed(reason) => {
            tracing::error!(event = "handover_failed", reason, "the hand-over failed after this agent stopped; detaching (the kernel path goes stock)");
        }
    }
    outcome
}

/// Lets the connections this agent forwards finish, up to
/// [`handover::DRAIN`].
pub(super) async fn drain(take: &mut HandoffTake) {
    let mut sets: Vec<JoinSet<()>> = Vec::new();
    while let Ok(set) = take.drains.try_recv() {
        sets.push(set);
    }
    let open: usize = sets.iter().map(JoinSet::len).sum();
    if open == 0 {
        return;
    }
    tracing::info!(connections = open, "letting forwarded connections finish");
    let all = async {
        for set in &mut sets {
            while set.join_next().await.is_some() {}
        }
    };
    if tokio::time::timeout(handover::DRAIN, all).await.is_err() {
        tracing::warn!(waited = ?handover::DRAIN, "forwarded connections still open; closing them");
    }
    for set in &mut sets {
        set.shutdown().await;
    }
}

/// How the run ends after a hand-over.
pub(super) fn outcome(outcome: &Outcome) -> Result<(), AgentError> {
    match outcome {
        Outcome::TookOver(_) => Ok(()),
        Outcome::Failed(reason) => Err(AgentError::Fatal(format!(
            "hand-over failed after this agent stopped: {reason}"
        ))),
    }
}
