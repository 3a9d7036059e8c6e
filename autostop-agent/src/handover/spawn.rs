//! Starting a new agent to take over (`autostop upgrade`, SIGUSR2): the
//! running agent spawns `BINARY run --takeover` with its own config, tells
//! the client the new PID, and a failure if the new agent exits before it
//! asks this one to stop (after that, [`super::finish`] reports).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use super::{
    server::{channel_clone, ServerContext, SEND_TIMEOUT},
    Channel, Message,
};

/// How often `upgrade` looks whether the new agent died early.
const CHILD_POLL: Duration = Duration::from_millis(100);

/// `autostop upgrade`: start `binary run --takeover`, report its PID, and
/// a failure if it exits before it asks this agent to stop (after that
/// [`finish`] reports).
pub(super) fn upgrade(channel: Option<&Channel>, ctx: &ServerContext, binary: Option<PathBuf>) {
    let tell = |message: &Message| {
        if let Some(channel) = channel {
            let _ = channel.send(message, &[], &[], SEND_TIMEOUT);
        }
    };
    if ctx.point.busy.load(Ordering::SeqCst) {
        let reason = "a hand-over is already under way".to_owned();
        tracing::warn!(reason, "upgrade refused");
        tell(&Message::Refused { reason });
        return;
    }
    let binary = binary.unwrap_or_else(own_binary);
    let mut child = match spawn(&binary, &ctx.config_path) {
        Ok(child) => child,
        Err(e) => {
            let reason = format!("cannot start {}: {e}", binary.display());
            tracing::warn!(reason, "upgrade failed");
            tell(&Message::Failed { reason });
            return;
        }
    };
    tracing::info!(event = "upgrade_started", binary = %binary.display(), new_pid = child.id(), "new agent started to take over");
    tell(&Message::Spawned { pid: child.id() });
    if let Some(reporter) = channel.and_then(|c| channel_clone(c).ok()) {
        let _ = ctx.point.reporter.set(reporter);
    }
    loop {
        if ctx.point.armed() {
            return;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let reason = format!(
                    "the new agent exited ({status}) before taking over; this agent goes on"
                );
                tracing::warn!(reason, "upgrade failed");
                tell(&Message::Failed { reason });
                return;
            }
            Ok(None) => std::thread::sleep(CHILD_POLL),
            Err(_) => return,
        }
    }
}

/// This agent's binary: where it was started from (a package upgrade
/// replaced the file there; `/proc/self/exe` then names the old one,
/// deleted).
fn own_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/autostop"));
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

fn spawn(binary: &Path, config: &Path) -> std::io::Result<Child> {
    Command::new(binary)
        .arg("run")
        .arg("--takeover")
        .arg("--config")
        .arg(config)
        // The watchdog follows the main PID, which becomes the new agent's.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .spawn()
}
