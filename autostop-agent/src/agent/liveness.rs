//! The agent's side of liveness: when it is ready for systemd (programs
//! attached, every service adopted), the notify/watchdog task, and how a
//! run ends (a fatal task failure or panic makes it an error).

use std::sync::{atomic::Ordering, Arc};

use tokio_util::sync::CancellationToken;

use super::{control::HealthFlags, registry::DirectoryReader, AgentError};
use crate::{
    notify::{self, Notifier},
    supervisor::{self, Supervised, Supervisor},
};

/// Resolves once every service's state machine has looked at Docker once
/// (adopted its containers' state, or found Docker unreachable); returns
/// the `STATUS=` text for `READY=1`.
pub(super) async fn adopted(directory: DirectoryReader, health: Arc<HealthFlags>) -> String {
    let services = directory.snapshot();
    for record in services.iter() {
        let mut status = record.handle.subscribe();
        // An actor that is gone has nothing left to adopt.
        let _ = status.wait_for(|s| s.adopted).await;
    }
    let docker = if health.docker_reachable.load(Ordering::Relaxed) {
        "reachable"
    } else {
        "unreachable"
    };
    format!(
        "{} services adopted; programs attached; Docker {docker}",
        services.len()
    )
}

/// Spawns the systemd notify/watchdog task when `NOTIFY_SOCKET` is set.
pub(super) fn spawn_notify(
    supervisor: &Supervisor,
    directory: DirectoryReader,
    health: Arc<HealthFlags>,
    shutdown: CancellationToken,
) -> Option<Supervised> {
    let notifier = match Notifier::from_env() {
        Ok(Some(notifier)) => notifier,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "cannot notify systemd");
            return None;
        }
    };
    let period = notify::watchdog_period();
    tracing::info!(watchdog_every = ?period, "notifying systemd");
    Some(supervisor.spawn(
        "systemd-notify",
        notify::run(
            notifier,
            adopted(directory, health),
            period,
            crate::test_hooks::after_ready,
            shutdown,
        ),
    ))
}

/// In a new agent taking over: tells systemd (when it runs the agent)
/// that this process is now the unit's main PID, and ready.
pub(super) fn announce_main_pid() {
    match Notifier::from_env() {
        Ok(Some(notifier)) => {
            let pid = std::process::id();
            if let Err(e) = notifier.send(&[notify::Notice::MainPid(pid), notify::Notice::Ready]) {
                tracing::warn!(error = %e, "cannot tell systemd the new main PID");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot notify systemd"),
    }
}

/// How the run ends once cleaned up: an error when a task failed or any
/// thread panicked, so the process exits non-zero.
pub(super) fn outcome(supervisor: &Supervisor) -> Result<(), AgentError> {
    match supervisor.failure().or_else(supervisor::panic::fatal_panic) {
        Some(why) => Err(AgentError::Fatal(why)),
        None => Ok(()),
    }
}
