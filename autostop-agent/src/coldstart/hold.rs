//! One steered connection: wake the service, hold the connection until the
//! state machine pushes `Ready`, then splice it to the container.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{copy_bidirectional, AsyncWriteExt},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{Route, Upstreams};
use crate::service::{Command, ServiceState, Trigger};
use crate::waitpage::{error_reply, looks_like_http, ErrorStatus};

/// How long connecting to a ready container may take before the client is
/// told the start failed.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a client's first bytes when deciding whether an
/// error reply should be HTTP.
const PEEK_TIMEOUT: Duration = Duration::from_millis(200);

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

/// What became of a held connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Spliced to the ready service (and since closed by one side).
    Forwarded,
    /// The start failed or timed out; the client was told and closed.
    Failed,
    /// The agent shut down or the client went away first.
    Closed,
}

/// Why a held connection will not be forwarded.
enum NotReady {
    /// The start failed after the connection arrived.
    Failed(String),
    /// `start_timeout` passed.
    TimedOut,
    /// The agent is shutting down.
    ShuttingDown,
}

/// Closes `stream` with a RST so an over-limit client learns at once.
pub(super) fn refuse(stream: TcpStream) {
    // Linger 0 turns close into an abortive reset; errors only mean the
    // socket is already gone.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Wakes the service, waits for readiness and splices `stream` to the
/// container, first sending `replay` (bytes already read from the client).
///
/// `permit` is this connection's place under `max_held_connections`. It is
/// given back as soon as the service is ready: the cap bounds connections
/// waiting for a start, and a busy service whose port is still steered for
/// a moment after readiness must not have its forwarded connections refused.
pub(super) async fn hold_and_forward(
    mut stream: TcpStream,
    port: u16,
    route: &Route,
    upstreams: &dyn Upstreams,
    replay: &[u8],
    shutdown: &CancellationToken,
    permit: OwnedSemaphorePermit,
) -> HoldOutcome {
    let arrived = Instant::now();
    // A full queue means wakes are already pending: one is enough.
    let _ = route.handle.try_send(Command::Wake {
        trigger: Trigger::HeldConnection,
    });
    match wait_ready(route, arrived, shutdown).await {
        Ok(()) => drop(permit),
        Err(NotReady::ShuttingDown) => return HoldOutcome::Closed,
        Err(NotReady::TimedOut) => {
            let reason = format!(
                "{} did not start within {:?}",
                route.service, route.start_timeout
            );
            reply_error(&mut stream, replay, ErrorStatus::GatewayTimeout, &reason).await;
            return HoldOutcome::Failed;
        }
        Err(NotReady::Failed(reason)) => {
            reply_error(
                &mut stream,
                replay,
                ErrorStatus::BadGateway,
                &format!("{} failed to start: {reason}", route.service),
            )
            .await;
            return HoldOutcome::Failed;
        }
    }
    // The semaphore is never closed, so acquiring cannot fail.
    let handover = Arc::clone(&route.handover).acquire_owned().await.ok();
    let mut upstream = match connect_upstream(route, port, upstreams).await {
        Ok(upstream) => upstream,
        Err(reason) => {
            tracing::warn!(service = %route.service, port, %reason, "cannot reach the ready service");
            reply_error(&mut stream, replay, ErrorStatus::BadGateway, &reason).await;
            return HoldOutcome::Failed;
        }
    };
    if !replay.is_empty() && upstream.write_all(replay).await.is_err() {
        return HoldOutcome::Closed;
    }
    // No time cap: a websocket or download opened during the cold start
    // lives as long as both ends want it to.
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

/// Waits for `Ready`, for a failure that happened after `arrived`, for the
/// start timeout or for shutdown, whichever comes first.
async fn wait_ready(
    route: &Route,
    arrived: Instant,
    shutdown: &CancellationToken,
) -> Result<(), NotReady> {
    let mut status = route.handle.subscribe();
    let deadline = tokio::time::sleep(route.start_timeout);
    tokio::pin!(deadline);
    loop {
        {
            let now = status.borrow_and_update();
            match &now.state {
                ServiceState::Ready => return Ok(()),
                ServiceState::Failed { reason } if now.since >= arrived => {
                    return Err(NotReady::Failed(reason.clone()))
                }
                _ => {}
            }
        }
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return Err(NotReady::Failed("the service is no longer managed".to_owned()));
                }
            }
            () = &mut deadline => return Err(NotReady::TimedOut),
            () = shutdown.cancelled() => return Err(NotReady::ShuttingDown),
        }
    }
}

/// Tells the client why its connection ends: an HTTP error when its first
/// bytes look like HTTP, a plain close otherwise (no protocol is assumed).
async fn reply_error(stream: &mut TcpStream, replay: &[u8], status: ErrorStatus, reason: &str) {
    let mut first = [0u8; 16];
    let head: &[u8] = if replay.is_empty() {
        match tokio::time::timeout(PEEK_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(n)) => &first[..n],
            _ => &[],
        }
    } else {
        replay
    };
    if looks_like_http(head) {
        let _ = stream.write_all(&error_reply(status, reason)).await;
    }
    let _ = stream.shutdown().await;
}
