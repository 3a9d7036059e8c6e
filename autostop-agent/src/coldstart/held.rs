//! A steered connection while it waits for its service.
//!
//! The agent keeps reading what the client sends while it is held: every
//! byte goes into [`Held::received`] (replayed to the app first once it is
//! ready), up to [`MAX_HELD_BYTES`]; past that the kernel's socket buffer
//! and TCP flow control hold the rest, which the splice copies later.
//! Reading is what lets the agent see a client leave: a reset, or an end
//! of stream that [`eof_is_hang_up`] calls a hang-up (nothing sent, or an
//! HTTP/1, HTTP/2 or TLS opening), ends the hold at once and gives its
//! place under `max_held_connections` back. An end of stream after bytes
//! of an unknown protocol is a half-close: the connection stays held and
//! the half-close reaches the app after its bytes.

use std::time::Duration;

use tokio::{io::AsyncReadExt, net::TcpStream, sync::OwnedSemaphorePermit, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    gate::{verdict, Verdict},
    Route,
};
use crate::waitpage::{eof_is_hang_up, opening, Opening};

/// Most bytes read from one held client before the app is up (per
/// connection, so `max_held_connections` × this bounds the memory).
pub(super) const MAX_HELD_BYTES: usize = 64 * 1024;
/// How long a client that just connected gets to send its first bytes
/// before it counts as silent: in dynamic mode a protocol where the server
/// speaks first (held like blocking mode, looked at again if bytes come);
/// on a refusal, a client that gets a close instead of an HTTP error.
/// Short, so a refused silent client is still answered well within 1 s.
pub(super) const FIRST_BYTES_WAIT: Duration = Duration::from_millis(300);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 2048;

/// Why a held connection stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// The service is ready: forward.
    Ready,
    /// The start failed after the connection arrived (reason for the log).
    Failed(String),
    /// `start_timeout` passed since the connection arrived.
    TimedOut,
    /// The agent is shutting down.
    ShuttingDown,
    /// The client hung up (or reset the connection).
    Gone,
}

/// One steered connection, with everything read from it so far and its
/// place under `max_held_connections`.
pub(super) struct Held {
    /// The client's socket.
    pub(super) stream: TcpStream,
    /// Every byte read from the client, in order (the replay).
    pub(super) received: Vec<u8>,
    /// When the agent accepted it: start of its `start_timeout`, and the
    /// line between old failures and failures it should hear about.
    pub(super) arrived: Instant,
    /// The client's end of stream was read.
    eof: bool,
    /// Its place under `max_held_connections`, if it still has one.
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// A connection accepted now.
    pub(super) fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            received: Vec::new(),
            arrived: Instant::now(),
            eof: false,
            permit: Some(permit),
        }
    }

    /// A connection another agent held since `arrived` (see
    /// [`super::passing`]), with what it read from it.
    pub(super) fn resumed(
        stream: TcpStream,
        received: Vec<u8>,
        eof: bool,
        arrived: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            stream,
            received,
            arrived,
            eof,
            permit: Some(permit),
        }
    }

    /// Gives the place under `max_held_connections` back (the connection
    /// is being answered or forwarded, no longer waiting).
    pub(super) fn release_permit(&mut self) {
        self.permit = None;
    }

    /// Whether the client's end of stream was read.
    pub(super) fn eof(&self) -> bool {
        self.eof
    }

    /// Whether the client is known to be gone.
    pub(super) fn hung_up(&self) -> bool {
        self.eof && eof_is_hang_up(&self.received)
    }

    /// Whether more bytes are worth reading now.
    fn reading(&self) -> bool {
        !self.eof && self.received.len() < MAX_HELD_BYTES
    }

    /// Reads once into `received`; `Ok(0)` is the end of stream. Never
    /// resolves when the buffer is full (callers check [`Self::reading`]).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        let room = MAX_HELD_BYTES
            .saturating_sub(self.received.len())
            .min(READ_CHUNK);
        if room == 0 {
            return std::future::pending().await;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            self.eof = true;
        }
        self.received.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until the bytes received tell the protocol
    /// ([`opening`] is no longer `Undecided`), the end of stream, the
    /// buffer is full or `until`; returns whether the client is still
    /// there (false after a reset or a hang-up).
    pub(super) async fn read_opening(&mut self, until: Instant) -> bool {
        while self.reading() && opening(&self.received) == Opening::Undecided {
            match tokio::time::timeout_at(until, self.read_more()).await {
                Err(_elapsed) => break,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return false,
            }
        }
        !self.hung_up()
    }

    /// Waits for the service's verdict (see [`End`]), reading the client
    /// meanwhile.
    pub(super) async fn wait(&mut self, route: &Route, shutdown: &CancellationToken) -> End {
        loop {
            // Without `stop_at_opening` the wait only ends with an `End`.
            if let Some(end) = self.wait_inner(route, shutdown, false).await {
                return end;
            }
        }
    }

    /// Like [`Self::wait`], but returns `None` as soon as bytes arrive that
    /// tell the protocol, for a silent connection to be looked at again.
    pub(super) async fn wait_or_opening(
        &mut self,
        route: &Route,
        shutdown: &CancellationToken,
    ) -> Option<End> {
        self.wait_inner(route, shutdown, true).await
    }

    async fn wait_inner(
        &mut self,
        route: &Route,
        shutdown: &CancellationToken,
        stop_at_opening: bool,
    ) -> Option<End> {
        let mut status = route.handle.subscribe();
        // Checked: start_timeout is bounded at every entry (30 days); were
        // one to slip past, the connection times out now instead of the
        // agent panicking.
        let until = self.arrived.checked_add(route.start_timeout);
        let deadline = tokio::time::sleep_until(until.unwrap_or(self.arrived));
        tokio::pin!(deadline);
        loop {
            let now = verdict(&status.borrow_and_update(), self.arrived);
            match now {
                Verdict::Ready => return Some(End::Ready),
                Verdict::Failed(reason) => return Some(End::Failed(reason)),
                Verdict::Wait => {}
            }
            let reading = self.reading();
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        // Its actor ended: with the agent (which may hand the
                        // connection over), or because it is not managed any
                        // more.
                        if shutdown.is_cancelled() {
                            return Some(End::ShuttingDown);
                        }
                        return Some(End::Failed("the service is no longer managed".to_owned()));
                    }
                }
                () = &mut deadline => return Some(End::TimedOut),
                () = shutdown.cancelled() => return Some(End::ShuttingDown),
                read = self.read_more(), if reading => match read {
                    Err(_) => return Some(End::Gone),
                    Ok(0) if self.hung_up() => return Some(End::Gone),
                    Ok(0) => {}
                    Ok(_) => {
                        if stop_at_opening && opening(&self.received) != Opening::Undecided {
                            return None;
                        }
                    }
                },
            }
        }
    }
}
