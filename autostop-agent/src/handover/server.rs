//! The running agent's side: the control socket, the offer of its
//! sockets (`autostop upgrade` and SIGUSR2 go to [`super::spawn`]), and
//! [`finish`], the end of a hand-over once its services are stopped.

use std::{
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, Signal, SignalKind},
};
use tokio_util::sync::CancellationToken;

use super::{
    channel::{self, Channel},
    HandoverError, Message, ServiceSnapshot, DRAIN, HANDING_OVER, STEP_TIMEOUT, VERSION,
};
use crate::coldstart::Passed;

/// How long a peer gets to say what it wants.
const FIRST_MESSAGE: Duration = Duration::from_secs(5);
/// Bound on each message the old agent sends.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The sockets a new agent inherits: duplicates of the running agent's.
#[derive(Debug)]
pub struct Listeners {
    /// The steered listeners (IPv4, then IPv6 when there is one).
    pub steered: Vec<OwnedFd>,
    /// The status API's listener.
    pub api: Option<OwnedFd>,
}

/// A hand-over under way, shared by the control connection that armed it
/// and the shutdown that ends it.
#[derive(Debug, Default)]
pub struct HandoverPoint {
    pub(super) busy: AtomicBool,
    armed: OnceLock<Channel>,
    pub(super) reporter: OnceLock<Channel>,
}

impl HandoverPoint {
    /// Whether a hand-over is being offered or under way.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Whether a new agent asked this one to stop.
    pub fn armed(&self) -> bool {
        self.armed.get().is_some()
    }
}

/// How a hand-over ended, for the old agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new agent (its PID) runs.
    TookOver(u32),
    /// It did not say so (why).
    Failed(String),
}

/// The control socket's listener.
pub struct ControlServer {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

/// What the control connections need.
pub struct ServerContext {
    /// Duplicates of the sockets to offer.
    pub listeners: Listeners,
    /// This agent's warm-up table.
    pub nft_table: String,
    /// The configuration file (a new agent started by `upgrade` reads it).
    pub config_path: PathBuf,
    /// The hand-over, once armed.
    pub point: Arc<HandoverPoint>,
    /// Cancelled to stop this agent for the hand-over.
    pub stop: CancellationToken,
}

impl ControlServer {
    /// Listens on `path` (0600).
    pub fn bind(path: &Path) -> Result<Self, HandoverError> {
        let fd = channel::listen_at(path)?;
        // SAFETY: the AsyncFd owns the descriptor for its whole life and
        // deregisters it before closing it.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| HandoverError::Socket(format!("{}: {}", path.display(), e)))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// Serves control connections until `shutdown`; removes the socket
    /// file unless a new agent took it over.
    pub async fn run(self, ctx: ServerContext, shutdown: CancellationToken) {
        let ctx = Arc::new(ctx);
        let mut conversations = tokio::task::JoinSet::new();
        // SIGUSR2 asks for the same as `autostop upgrade` (as nginx's
        // binary upgrade), with the outcome in the log only.
        let mut usr2 = signal(SignalKind::user_defined2()).ok();
        loop {
            let ready = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = next_signal(&mut usr2) => {
                    let ctx = Arc::clone(&ctx);
                    conversations.spawn_blocking(move || super::spawn::upgrade(None, &ctx, None));
                    continue;
                }
                ready = self.fd.readable() => ready,
                Some(_) = conversations.join_next(), if !conversations.is_empty() => continue,
            };
            let Ok(mut guard) = ready else { break };
            match channel::accept(self.fd.get_ref()) {
                Ok(Some(channel)) => {
                    let ctx = Arc::clone(&ctx);
                    conversations.spawn_blocking(move || converse(&channel, &ctx));
                }
                Ok(None) => guard.clear_ready(),
                Err(e) => tracing::warn!(error = %e, "control connection refused"),
            }
        }
        if !HANDING_OVER.load(Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
        }
        // Conversations are blocking and bounded by their timeouts; an
        // armed one has already returned.
        conversations.detach_all();
    }
}

/// The next SIGUSR2, or never without a handler.
async fn next_signal(usr2: &mut Option<Signal>) -> Option<()> {
    match usr2 {
        Some(usr2) => usr2.recv().await,
        None => std::future::pending().await,
    }
}

/// One control connection, on a blocking thread.
fn converse(channel: &Channel, ctx: &ServerContext) {
    let first = match channel.recv(FIRST_MESSAGE) {
        Ok(first) => first,
        Err(e) => {
            tracing::debug!(error = %e, "control connection ended before a request");
            return;
        }
    };
    match first.message {
        Message::Hello { version, pid } => offer(channel, ctx, version, pid),
        Message::Upgrade { binary } => super::spawn::upgrade(Some(channel), ctx, binary),
        other => refuse(channel, &format!("unexpected first message {other:?}")),
    }
}

fn refuse(channel: &Channel, reason: &str) {
    tracing::warn!(reason, "hand-over refused");
    let _ = channel.send(
        &Message::Refused {
            reason: reason.to_owned(),
        },
        &[],
        &[],
        SEND_TIMEOUT,
    );
}

/// A new agent's `hello`: offer the sockets, wait for `stop`.
fn offer(channel: &Channel, ctx: &ServerContext, version: u32, pid: u32) {
    if version != VERSION {
        refuse(
            channel,
            &format!("this agent hands over with format {VERSION}, the new one speaks {version}"),
        );
        return;
    }
    if ctx.point.busy.swap(true, Ordering::SeqCst) {
        refuse(channel, "a hand-over is already under way");
        return;
    }
    tracing::info!(
        event = "handover_offered",
        new_pid = pid,
        "a new agent asks to take over"
    );
    let mut fds: Vec<RawFd> = ctx
        .listeners
        .steered
        .iter()
        .map(AsRawFd::as_raw_fd)
        .collect();
    fds.extend(ctx.listeners.api.iter().map(AsRawFd::as_raw_fd));
    let offer = Message::Offer {
        version: VERSION,
        pid: std::process::id(),
        nft_table: ctx.nft_table.clone(),
        steered: ctx.listeners.steered.len(),
        api: ctx.listeners.api.is_some(),
    };
    if let Err(e) = channel.send(&offer, &fds, &[], SEND_TIMEOUT) {
        tracing::warn!(error = %e, "hand-over abandoned");
        ctx.point.busy.store(false, Ordering::SeqCst);
        return;
    }
    match channel.recv(STEP_TIMEOUT).map(|r| r.message) {
        Ok(Message::Stop) => {
            let Ok(armed) = channel_clone(channel) else {
                ctx.point.busy.store(false, Ordering::SeqCst);
                return;
            };
            let _ = ctx.point.armed.set(armed);
            HANDING_OVER.store(true, Ordering::SeqCst);
            // The clean-up now includes the new agent's start and the
            // drain: the shutdown deadline waits for them.
            crate::supervisor::deadline::extend(STEP_TIMEOUT + DRAIN + SEND_TIMEOUT);
            tracing::info!(
                event = "handover_stopping",
                new_pid = pid,
                "handing over to the new agent"
            );
            ctx.stop.cancel();
        }
        Ok(other) => {
            tracing::warn!(message = ?other, "hand-over abandoned: unexpected message");
            ctx.point.busy.store(false, Ordering::SeqCst);
        }
        Err(e) => {
            tracing::warn!(error = %e, new_pid = pid, "hand-over abandoned by the new agent; this agent goes on");
            ctx.point.busy.store(false, Ordering::SeqCst);
        }
    }
}

/// The channel's socket, duplicated for the shutdown to own.
pub(super) fn channel_clone(channel: &Channel) -> Result<Channel, HandoverError> {
    channel
        .as_fd()
        .try_clone_to_owned()
        .map(Channel::from_fd)
        .map_err(|e| HandoverError::Socket(format!("dup: {e}")))
}

/// Ends an armed hand-over (on a blocking thread): passes `passed`, says
/// `stopped` with `services`, and waits for `running`. Tells an
/// `upgrade` client the outcome.
pub async fn finish(
    point: Arc<HandoverPoint>,
    passed: Vec<Passed>,
    services: Vec<ServiceSnapshot>,
) -> Outcome {
    let done = tokio::task::spawn_blocking(move || {
        let Some(channel) = point.armed.get() else {
            return Outcome::Failed("no hand-over was armed".to_owned());
        };
        let outcome = match pass(channel, passed, services) {
            Ok(pid) => Outcome::TookOver(pid),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        if let Some(reporter) = point.reporter.get() {
            let message = match &outcome {
                Outcome::TookOver(pid) => Message::Upgraded { pid: *pid },
                Outcome::Failed(reason) => Message::Failed {
                    reason: reason.clone(),
                },
            };
            let _ = reporter.send(&message, &[], &[], SEND_TIMEOUT);
        }
        outcome
    })
    .await;
    done.unwrap_or_else(|e| Outcome::Failed(format!("hand-over thread: {e}")))
}

fn pass(
    channel: &Channel,
    passed: Vec<Passed>,
    services: Vec<ServiceSnapshot>,
) -> Result<u32, HandoverError> {
    let count = passed.len();
    for conn in passed {
        let message = Message::Held {
            service: conn.service,
            port: conn.port,
            eof: conn.eof,
            waited_ms: u64::try_from(conn.waited.as_millis()).unwrap_or(u64::MAX),
        };
        channel.send(
            &message,
            &[conn.stream.as_raw_fd()],
            &conn.received,
            SEND_TIMEOUT,
        )?;
        // This process's copy closes here; the client's connection lives
        // on in the new agent.
    }
    channel.send(
        &Message::Stopped {
            version: VERSION,
            services,
        },
        &[],
        &[],
        SEND_TIMEOUT,
    )?;
    tracing::info!(
        event = "handover_passed",
        held = count,
        "held connections passed to the new agent"
    );
    match channel.recv(STEP_TIMEOUT)?.message {
        Message::Running { pid } => Ok(pid),
        other => Err(HandoverError::Protocol(format!(
            "expected running, got {other:?}"
        ))),
    }
}
