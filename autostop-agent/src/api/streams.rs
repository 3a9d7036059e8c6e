//! Event streams' own slots. A connection is accepted into one of the
//! listener's request slots; when its request turns into an event stream
//! (`GET /api/events`), it trades that slot for one of the
//! `max_event_streams` stream slots, so readers that stay (the dashboard,
//! `autostop events`, or idle sockets anyone on the host can open) never
//! take the slots `autostop status` and the controls need. With every
//! stream slot taken, the request is answered 503 with `Retry-After`.
//!
//! A stream's response ends its connection (`Connection: close`), so the
//! connection never serves another request without a request slot. A
//! reader that stops reading is dropped: once the socket's buffers and
//! hyper's write buffer are full, the stream is no longer polled, and a
//! stream not polled for [`ServeLimits::stream_stall_timeout`] (a healthy
//! one is polled at least every keep-alive period) has its connection
//! closed. Events it missed wait in the replay buffer for its reconnection
//! with `Last-Event-ID`.
//!
//! [`ServeLimits::stream_stall_timeout`]: super::ServeLimits

use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// What a request can ask of the connection it came on (a request
/// extension, set by [`super::serve_with`]; absent when the router is used
/// without it, as in the router's own tests: then streams are not capped).
#[derive(Clone)]
pub(super) struct ConnectionTie {
    /// The listener's stream slots, shared by its connections.
    slots: Arc<Semaphore>,
    /// How many there are (for the refusal's text).
    max: usize,
    /// Tells the connection's task it is now a stream, with the stream's
    /// progress signal.
    turned: mpsc::Sender<watch::Receiver<()>>,
}

/// Every stream slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} event streams are open, the most this agent serves at once (agent.max_event_streams): retry later")]
pub(super) struct StreamsBusy {
    /// `agent.max_event_streams`.
    pub max: usize,
}

/// An event stream's slot, held by its response body: released when the
/// stream ends or its connection closes.
pub(super) struct StreamLease {
    _slot: OwnedSemaphorePermit,
    /// Signalled each time the response body is polled.
    progress: watch::Sender<()>,
}

impl StreamLease {
    /// The body was polled: the stream is moving.
    pub(super) fn polled(&self) {
        self.progress.send_replace(());
    }
}

impl ConnectionTie {
    /// A tie for one connection and the receiving end its task watches.
    pub(super) fn new(
        slots: Arc<Semaphore>,
        max: usize,
    ) -> (Self, mpsc::Receiver<watch::Receiver<()>>) {
        let (turned, ties) = mpsc::channel(1);
        (Self { slots, max, turned }, ties)
    }

    /// Takes a stream slot, or refuses when none is free.
    pub(super) fn open_stream(&self) -> Result<StreamLease, StreamsBusy> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| StreamsBusy { max: self.max })?;
        let (progress, watched) = watch::channel(());
        // Full only if this connection already turned: it cannot, as a
        // stream's response closes its connection.
        let _ = self.turned.try_send(watched);
        Ok(StreamLease {
            _slot: slot,
            progress,
        })
    }
}

/// Runs one connection: holds its request slot until the connection ends
/// or turns into an event stream, and then closes it if the stream stalls
/// for `stall`.
pub(super) async fn run_connection<E: Display>(
    connection: impl Future<Output = Result<(), E>>,
    request_slot: OwnedSemaphorePermit,
    mut ties: mpsc::Receiver<watch::Receiver<()>>,
    stall: Duration,
) {
    tokio::pin!(connection);
    let mut request_slot = Some(request_slot);
    let mut progress: Option<watch::Receiver<()>> = None;
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "status API connection closed");
                }
                return;
            }
            Some(watched) = ties.recv(), if progress.is_none() => {
                // The request slot goes back to the listener at once.
                request_slot.take();
                progress = Some(watched);
            }
            () = stalled(progress.as_mut(), stall), if progress.is_some() => {
                tracing::debug!(?stall, "status API: an events reader stopped reading; its stream is closed");
                return;
            }
        }
    }
}

/// Completes once `progress` has not been signalled for `stall`; never
/// while the stream moves, nor once it ended (its connection then closes on
/// its own).
async fn stalled(progress: Option<&mut watch::Receiver<()>>, stall: Duration) {
    let Some(progress) = progress else {
        return std::future::pending().await;
    };
    loop {
        match tokio::time::timeout(stall, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}
