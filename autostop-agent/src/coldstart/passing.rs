//! Held connections across a hand-over ([`crate::handover`]): an agent
//! that stops for a new one passes each connection still waiting for a
//! cold start ([`Passed`]: the socket and the bytes read from it) instead
//! of closing it, and hands the tasks of connections it already forwards
//! to the end of its run, to finish there; the new agent serves what it
//! was passed as if it had accepted it itself.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{held::Held, hold::HoldOutcome, lookup, serve_held, ColdStart, Route};

/// A held connection on its way to (or from) another agent.
#[derive(Debug)]
pub struct Passed {
    /// The service it waits for.
    pub service: String,
    /// The published port it arrived on.
    pub port: u16,
    /// The client's socket.
    pub stream: std::net::TcpStream,
    /// Every byte read from the client so far, in order.
    pub received: Vec<u8>,
    /// The client's end of stream was read.
    pub eof: bool,
    /// How long it has waited already.
    pub waited: Duration,
}

/// Where a stopping agent's connections go when it hands over.
#[derive(Debug, Clone)]
pub struct Handoff {
    passed: mpsc::UnboundedSender<Passed>,
    drains: mpsc::UnboundedSender<JoinSet<()>>,
}

/// The receiving ends of a [`Handoff`], kept by the agent's run.
#[derive(Debug)]
pub struct HandoffTake {
    /// Connections that were held.
    pub passed: mpsc::UnboundedReceiver<Passed>,
    /// Connection tasks still forwarding, to finish before the process
    /// exits.
    pub drains: mpsc::UnboundedReceiver<JoinSet<()>>,
}

impl Handoff {
    /// A hand-off and its receiving ends.
    pub fn channel() -> (Self, HandoffTake) {
        let (passed, passed_rx) = mpsc::unbounded_channel();
        let (drains, drains_rx) = mpsc::unbounded_channel();
        (
            Self { passed, drains },
            HandoffTake {
                passed: passed_rx,
                drains: drains_rx,
            },
        )
    }

    /// Whether connections go to a new agent rather than being closed.
    pub(super) fn active() -> bool {
        crate::handover::handing_over()
    }

    /// Passes `held` (its wait ended by the shutdown) to the new agent;
    /// `Err` gives it back when this agent is not handing over.
    pub(super) fn pass(&self, held: Held, port: u16, route: &Route) -> Result<HoldOutcome, Held> {
        if !Self::active() {
            return Err(held);
        }
        let waited = held.arrived.elapsed();
        let eof = held.eof();
        let Held {
            stream, received, ..
        } = held;
        let Ok(stream) = stream.into_std() else {
            return Ok(HoldOutcome::Closed);
        };
        let _ = self.passed.send(Passed {
            service: route.service.clone(),
            port,
            stream,
            received,
            eof,
            waited,
        });
        Ok(HoldOutcome::Passed)
    }

    /// Keeps `connections` (tasks forwarding to ready services) running
    /// past the accept loop when handing over; `Err` gives them back.
    pub(super) fn drain(&self, connections: JoinSet<()>) -> Result<(), JoinSet<()>> {
        if !Self::active() {
            return Err(connections);
        }
        self.drains.send(connections).map_err(|e| e.0)
    }
}

/// Serves the connections an old agent passed, as if accepted here.
pub(super) async fn serve_passed(
    passed: Vec<Passed>,
    ctx: &std::sync::Arc<ColdStart>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for conn in passed {
        let Some(route) = lookup(&ctx.routes, conn.port) else {
            tracing::warn!(service = %conn.service, port = conn.port, "a passed connection's port has no service here; closed");
            continue;
        };
        let Ok(stream) = conn
            .stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(conn.stream))
        else {
            continue;
        };
        let Ok(permit) = route.held.clone().try_acquire_owned() else {
            super::hold::refuse(stream);
            continue;
        };
        let arrived = Instant::now()
            .checked_sub(conn.waited)
            .unwrap_or_else(Instant::now);
        let held = Held::resumed(stream, conn.received, conn.eof, arrived, permit);
        let (ctx, shutdown) = (std::sync::Arc::clone(ctx), shutdown.clone());
        tasks.spawn(async move {
            serve_held(held, conn.port, route, &ctx, &shutdown).await;
        });
    }
}
