//! systemd's notification protocol (sd_notify(3)) for `Type=notify` and the
//! watchdog: datagrams of `KEY=value` lines to the socket `NOTIFY_SOCKET`
//! names (a path, or `@name` in the abstract namespace).
//!
//! [`run`] is a task on the agent's own runtime: `READY=1` once the agent
//! is ready, `WATCHDOG=1` every half of `WATCHDOG_USEC` (so a wedged runtime
//! stops the pings and systemd restarts the agent), `STOPPING=1` when the
//! shutdown starts, with `STATUS=` lines alongside.
//!
//! Written on std's Unix datagram socket rather than with the `sd-notify`
//! crate (MIT OR Apache-2.0): its `notify` reads `NOTIFY_SOCKET` from the
//! environment at every call (a test cannot aim it anywhere without
//! mutating the process environment), does not handle abstract sockets,
//! and sends on a blocking socket. Sends here never block: a notification
//! that cannot go now is dropped (the next ping follows in half a period).

use std::{
    future::Future,
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is empty or not a usable address.
    #[error("NOTIFY_SOCKET {0:?} is not a socket path or @abstract name")]
    BadAddress(String),
    /// The socket could not be made or the datagram not sent.
    #[error("notify socket: {0}")]
    Io(#[from] io::Error),
}

/// One notification (see sd_notify(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// Start-up finished.
    Ready,
    /// Shutdown started.
    Stopping,
    /// Watchdog keep-alive.
    Watchdog,
    /// Free-form status (one line; newlines become spaces).
    Status(&'a str),
    /// The unit's main process is now this PID (a hand-over).
    MainPid(u32),
}

/// The datagram for `notices`: one `KEY=value` line each.
pub fn message(notices: &[Notice<'_>]) -> String {
    let mut out = String::new();
    for notice in notices {
        match notice {
            Notice::Ready => out.push_str("READY=1\n"),
            Notice::Stopping => out.push_str("STOPPING=1\n"),
            Notice::Watchdog => out.push_str("WATCHDOG=1\n"),
            Notice::MainPid(pid) => {
                out.push_str("MAINPID=");
                out.push_str(&pid.to_string());
                out.push('\n');
            }
            Notice::Status(text) => {
                out.push_str("STATUS=");
                out.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
                out.push('\n');
            }
        }
    }
    out
}

/// A socket aimed at the service manager.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `None` when unset (not run by systemd).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(addr) => Self::at(&addr).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Aimed at `addr`: a path, or `@name` for the abstract namespace.
    pub fn at(addr: &str) -> Result<Self, NotifyError> {
        let bad = || NotifyError::BadAddress(addr.to_owned());
        let addr = match addr.strip_prefix('@') {
            Some(name) if !name.is_empty() => {
                SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())?
            }
            None if addr.starts_with('/') => SocketAddr::from_pathname(addr).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, addr })
    }

    /// Sends `notices` in one datagram, without waiting.
    pub fn send(&self, notices: &[Notice<'_>]) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message(notices).as_bytes(), &self.addr)?;
        Ok(())
    }

    fn send_logged(&self, notices: &[Notice<'_>]) {
        if let Err(e) = self.send(notices) {
            tracing::warn!(error = %e, notice = ?notices, "systemd notification not sent");
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the
/// watchdog is on for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_period() -> Option<Duration> {
    watchdog_period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_period`] from the variables' values.
pub fn watchdog_period_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `READY=1` (with `ready`'s status text) once `ready` resolves,
/// `WATCHDOG=1` every `period` meanwhile and afterwards, and `STOPPING=1`
/// when `shutdown` is cancelled. `after_ready` runs once `READY=1` is sent.
pub async fn run(
    notifier: Notifier,
    ready: impl Future<Output = String>,
    period: Option<Duration>,
    after_ready: impl FnOnce(),
    shutdown: CancellationToken,
) {
    let mut ping = period.map(|p| {
        let mut ping = tokio::time::interval(p);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping
    });
    let mut ready = std::pin::pin!(ready);
    let mut after_ready = Some(after_ready);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            status = &mut ready, if after_ready.is_some() => {
                notifier.send_logged(&[Notice::Ready, Notice::Status(&status)]);
                tracing::info!(event = "notified_ready", status);
                if let Some(hook) = after_ready.take() {
                    hook();
                }
            }
            _ = tick(&mut ping) => notifier.send_logged(&[Notice::Watchdog]),
        }
    }
    // Handing over, the unit goes on under the new agent's PID.
    if !crate::handover::handing_over() {
        notifier.send_logged(&[Notice::Stopping, Notice::Status("stopping")]);
    }
}

/// The next watchdog tick, or never without a watchdog.
async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(message(&[Notice::Ready]), "READY=1\n");
        assert_eq!(message(&[Notice::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(
            message(&[Notice::MainPid(42), Notice::Ready]),
            "MAINPID=42\nREADY=1\n"
        );
        assert_eq!(
            message(&[Notice::Stopping, Notice::Status("stopping")]),
            "STOPPING=1\nSTATUS=stopping\n"
        );
        assert_eq!(
            message(&[Notice::Status("two\nlines")]),
            "STATUS=two lines\n"
        );
    }

    #[test]
    fn watchdog_period_is_half_of_watchdog_usec_for_this_process() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_period_from(Some("1000000"), None, 7), half);
        assert_eq!(watchdog_period_from(Some("1000000"), Some("7"), 7), half);
        assert_eq!(watchdog_period_from(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_period_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period_from(None, None, 7), None);
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(Notifier::at("/run/systemd/notify").is_ok());
        assert!(Notifier::at("@autostop-test").is_ok());
        assert!(matches!(Notifier::at(""), Err(NotifyError::BadAddress(_))));
        assert!(matches!(Notifier::at("@"), Err(NotifyError::BadAddress(_))));
        assert!(matches!(
            Notifier::at("relative"),
            Err(NotifyError::BadAddress(_))
        ));
    }

    // Multi-threaded: the test body blocks in recv while the task sends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ready_pings_and_stopping_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let notifier = Notifier::at(path.to_str().expect("utf-8 path")).expect("notifier");
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            notifier,
            async move {
                let _ = ready_rx.await;
                "2 services".to_owned()
            },
            Some(Duration::from_millis(20)),
            || {},
            shutdown.clone(),
        ));
        let recv = |receiver: &UnixDatagram| {
            let mut buf = [0u8; 256];
            let n = receiver.recv(&mut buf).expect("a datagram");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        // Pings come before readiness too.
        assert_eq!(recv(&receiver), "WATCHDOG=1\n");
        let _ = ready_tx.send(());
        let mut seen = Vec::new();
        while !seen.iter().any(|m: &String| m.starts_with("READY=1")) {
            seen.push(recv(&receiver));
        }
        assert!(seen.contains(&"READY=1\nSTATUS=2 services\n".to_owned()));
        assert_eq!(recv(&receiver), "WATCHDOG=1\n");
        shutdown.cancel();
        task.await.expect("task");
        let mut last = recv(&receiver);
        while last == "WATCHDOG=1\n" {
            last = recv(&receiver);
        }
        assert_eq!(last, "STOPPING=1\nSTATUS=stopping\n");
    }
}
