//! One held connection from wake to end: answered at once when no start is
//! coming (see [`super::gate`]), else held until the state machine pushes
//! `Ready` and spliced to the container, or answered when the start fails
//! or times out; a client that leaves first just frees its place.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    gate::refusal,
    held::{End, Held, FIRST_BYTES_WAIT},
    ColdStart, Route, Upstreams,
};
use crate::service::{Command, Trigger};
use crate::waitpage::{error_reply, looks_like_http, ErrorStatus};

/// How long connecting to a ready container may take before the client is
/// told the start failed.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the agent's own reply and its FIN, how long what the client still
/// sends is read and dropped (see [`close`]), and how much of it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Longest the agent spends writing one of its own replies (a wait page is
/// tens of KiB): a client that does not read is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many held connections of one service may be in their first
/// [`HANDOVER_GRACE`] with the app at once. Readiness releases every held
/// connection at the same instant; opened all together they overflow a
/// small listen backlog (busybox httpd: 9), the app's kernel drops the
/// handshakes it has no room for, and their retransmits, all on the same
/// back-off schedule, collide again: in a test, some of 300 waited over
/// 30 s. Eight at a time, each given a moment to be accepted, keeps the
/// app's queue short and still hands over hundreds per second.
pub const HANDOVER_WINDOW: usize = 8;
/// How long a forwarded connection keeps its place in the window.
const HANDOVER_GRACE: Duration = Duration::from_millis(10);

/// What became of a steered connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Spliced to the ready service (and since closed by one side).
    Forwarded,
    /// The start failed or timed out while it was held; the client was
    /// told and closed.
    Failed,
    /// No start was coming (crash-loop guard latched, retry backoff
    /// pending): answered at once.
    Refused,
    /// The client hung up while it waited.
    HungUp,
    /// Answered by the agent (wait page, status), or the agent shut down.
    Closed,
    /// Passed to a new agent taking over ([`super::passing`]).
    Passed,
}

/// Closes `stream` with a RST so an over-limit client learns at once.
pub(super) fn refuse(stream: TcpStream) {
    // Linger 0 turns close into an abortive reset; errors only mean the
    // socket is already gone.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Holds `held` until its service is ready and splices it to the
/// container, first sending what it received; answers it instead when no
/// start is coming, the start fails or times out.
pub(super) async fn hold_and_forward(
    held: Held,
    port: u16,
    route: &Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
) -> HoldOutcome {
    let mut held = match admit(held, route).await {
        Ok(held) => held,
        Err(outcome) => return outcome,
    };
    let end = held.wait(route, shutdown).await;
    conclude(held, end, port, route, ctx).await
}

/// Wakes the service for `held`, or answers it at once when a wake would
/// not start the service now (`Err` then carries the outcome). During a
/// backoff the wake is still sent: the retry happens when it is due.
pub(super) async fn admit(held: Held, route: &Route) -> Result<Held, HoldOutcome> {
    let refused = refusal(&route.handle.status(), held.arrived, Instant::now());
    if refused.is_none_or(|r| r.wakes()) {
        // A full queue means wakes are already pending: one is enough.
        let _ = route.handle.try_send(Command::Wake {
            trigger: Trigger::HeldConnection,
        });
    }
    let Some(refused) = refused else {
        return Ok(held);
    };
    tracing::debug!(service = %route.service, reason = refused.as_str(),
        "connection answered at once: no start is coming");
    answer(
        held,
        ErrorStatus::ServiceUnavailable,
        refused.retry_after_s(),
    )
    .await;
    Err(HoldOutcome::Refused)
}

/// Finishes a held connection after its wait ended with `end`.
pub(super) async fn conclude(
    held: Held,
    end: End,
    port: u16,
    route: &Route,
    ctx: &ColdStart,
) -> HoldOutcome {
    match end {
        End::Ready => forward(held, port, route, ctx.upstreams.as_ref()).await,
        End::Failed(reason) => {
            // The reason stays in the log; the client gets the public text.
            tracing::debug!(service = %route.service, %reason, "held connection: the start failed");
            answer(held, ErrorStatus::BadGateway, None).await;
            HoldOutcome::Failed
        }
        End::TimedOut => {
            tracing::debug!(service = %route.service, timeout = ?route.start_timeout,
                "held connection: not ready within the start timeout");
            answer(held, ErrorStatus::GatewayTimeout, None).await;
            HoldOutcome::Failed
        }
        End::Gone => HoldOutcome::HungUp,
        // Handing over: the new agent serves it; otherwise it closes.
        End::ShuttingDown => ctx
            .handoff
            .pass(held, port, route)
            .unwrap_or(HoldOutcome::Closed),
    }
}

/// Splices a connection to the ready service, replaying what it received.
///
/// Its place under `max_held_connections` is given back first: the cap
/// bounds connections waiting for a start, and a busy service whose port
/// is still steered for a moment after readiness must not have its
/// forwarded connections refused.
async fn forward(
    mut held: Held,
    port: u16,
    route: &Route,
    upstreams: &dyn Upstreams,
) -> HoldOutcome {
    held.release_permit();
    // The semaphore is never closed, so acquiring cannot fail.
    let handover = Arc::clone(&route.handover).acquire_owned().await.ok();
    let mut upstream = match connect_upstream(route, port, upstreams).await {
        Ok(upstream) => upstream,
        Err(reason) => {
            tracing::warn!(service = %route.service, port, %reason, "cannot reach the ready service");
            answer(held, ErrorStatus::BadGateway, None).await;
            return HoldOutcome::Failed;
        }
    };
    let mut stream = held.stream;
    if !held.received.is_empty() && upstream.write_all(&held.received).await.is_err() {
        return HoldOutcome::Closed;
    }
    // No time cap: a websocket or download opened during the cold start
    // lives as long as both ends want it to. A client that half-closed
    // while held reads as an end of stream again here, which is passed on.
    let copy = copy_bidirectional(&mut stream, &mut upstream);
    tokio::pin!(copy);
    tokio::select! {
        _ = &mut copy => return HoldOutcome::Forwarded,
        () = tokio::time::sleep(HANDOVER_GRACE) => drop(handover),
    }
    let _ = copy.await;
    HoldOutcome::Forwarded
}

async fn connect_upstream(
    route: &Route,
    port: u16,
    upstreams: &dyn Upstreams,
) -> Result<TcpStream, String> {
    let addr = upstreams.upstream(&route.service, port).await?;
    let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Tells the client why its connection ends: the error reply when its
/// bytes are an HTTP/1 request, a plain close otherwise (no protocol is
/// assumed). A client that just connected gets [`FIRST_BYTES_WAIT`] from
/// its arrival to show what it speaks.
pub(super) async fn answer(mut held: Held, status: ErrorStatus, retry_after_s: Option<u64>) {
    let present = held.read_opening(held.arrived + FIRST_BYTES_WAIT).await;
    held.release_permit();
    if present && looks_like_http(&held.received) {
        reply_and_close(held.stream, &error_reply(status, retry_after_s)).await;
    } else {
        close(held.stream).await;
    }
}

/// Writes one of the agent's own replies, then closes (see [`close`]).
pub(super) async fn reply_and_close(mut stream: TcpStream, reply: &[u8]) {
    let written = tokio::time::timeout(REPLY_TIMEOUT, stream.write_all(reply)).await;
    // Otherwise gone, or not reading: nothing more to say to it.
    if let Ok(Ok(())) = written {
        close(stream).await;
    }
}

/// Ends a connection the agent answered: FIN first, then whatever the
/// client still sends is read and dropped for up to [`LINGER`], until it
/// closes too. Closing a socket with unread bytes sends a reset, which can
/// destroy the reply before the client has read it.
pub(super) async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 2048];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
