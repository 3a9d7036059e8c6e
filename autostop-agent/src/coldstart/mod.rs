//! The cold-start listener: the socket(s) the kernel steers new connections
//! to while a service is stopped or warming up.
//!
//! Each accepted connection is routed by its local port (the kernel keeps
//! the original destination, so `getsockname()` is the service's published
//! port), wakes the service and is held until the service's state machine
//! pushes `Ready`; then the agent connects to the container's own address,
//! replays every byte the client sent meanwhile and copies bytes both ways
//! until either side closes, with no time cap.
//!
//! - Blocking mode holds every connection; the agent answers nothing
//!   itself except the errors below.
//! - Dynamic mode ([`dynamic`]) answers HTTP/1 browsers with the themed
//!   wait page and the page's status poll with JSON; every other client
//!   (other HTTP/1 requests, TLS, HTTP/2, silent or unknown protocols) is
//!   held and replayed like blocking mode.
//! - Fail fast ([`gate`]): a connection that arrives while the service is
//!   `failed` and no start is coming (crash-loop guard latched, retry
//!   backoff pending) is answered at once (503), and a held one as soon as
//!   its start fails (502): an HTTP/1 client gets a short reply with a
//!   fixed public text, any other client a close. A start that simply
//!   takes too long still ends at `start_timeout` (504).
//! - While held, the client is read ([`held`]): its bytes are kept for the
//!   replay, and a client that hangs up frees its place at once.
//!
//! Held connections are bounded per service (`max_held_connections`);
//! beyond the bound a connection is refused at once and counted.

mod dynamic;
mod gate;
mod held;
mod hold;
mod passing;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Mode,
    metrics::Metrics,
    service::{ServiceHandle, ServiceState},
    waitpage::ThemeSet,
};

pub use hold::{HoldOutcome, HANDOVER_WINDOW};
pub use passing::{Handoff, HandoffTake, Passed};

/// Finds where a ready service's port lives now (the container address can
/// change each time its containers start, so it is asked at forward time),
/// and how far a start has come.
#[async_trait::async_trait]
pub trait Upstreams: Send + Sync {
    /// Address to forward connections for `published_port` of `service` to.
    async fn upstream(&self, service: &str, published_port: u16) -> Result<SocketAddr, String>;

    /// The steps of `service`'s current (or last) start, for the wait page:
    /// required services first, then its containers in start order.
    fn progress(&self, service: &str) -> crate::progress::Progress;
}

/// Who else may own a steered port: asked before a connection is held.
#[async_trait::async_trait]
pub trait PortOwners: Send + Sync {
    /// Whether a connection of `service` that arrived on `local` may be
    /// held (and wake it): false when another program listens there (the
    /// port is being given back to it).
    async fn may_hold(&self, service: &str, local: SocketAddr) -> bool;
}

/// No other owner is ever found (tests of the listener alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOtherOwners;

#[async_trait::async_trait]
impl PortOwners for NoOtherOwners {
    async fn may_hold(&self, _service: &str, _local: SocketAddr) -> bool {
        true
    }
}

/// How connections to one published port are handled.
#[derive(Clone)]
pub struct Route {
    /// Service name, for logs and upstream lookups.
    pub service: String,
    /// Blocking (hold silently) or dynamic (wait page for browsers).
    pub mode: Mode,
    /// Wait-page theme (dynamic mode).
    pub theme: Option<String>,
    /// The service's actor: wakes go to it, readiness comes from it.
    pub handle: ServiceHandle,
    /// Longest a held connection waits for readiness before giving up.
    pub start_timeout: Duration,
    /// Bounds the connections held at once for this service.
    pub held: Arc<Semaphore>,
    /// Paces the hand-over of held connections to the ready service (see
    /// [`HANDOVER_WINDOW`]); one per service, shared by its ports.
    pub handover: Arc<Semaphore>,
}

/// Counters of the listener, read by the status API and tests.
#[derive(Debug, Default)]
pub struct ColdStartStats {
    /// Connections accepted on the agent's listener.
    pub accepted: AtomicU64,
    /// Connections forwarded to a ready service.
    pub forwarded: AtomicU64,
    /// Connections refused because too many were held already.
    pub refused_over_limit: AtomicU64,
    /// Connections answered because the start failed or timed out while
    /// they were held.
    pub failed: AtomicU64,
    /// Connections answered at once because no start was coming (crash-loop
    /// guard latched, retry backoff pending).
    pub fail_fast: AtomicU64,
    /// Held connections whose client hung up before the service was ready.
    pub hung_up: AtomicU64,
    /// Connections for a port no service claims (a race with a reload).
    pub unrouted: AtomicU64,
    /// Wait pages served (dynamic mode).
    pub wait_pages: AtomicU64,
    /// Dynamic mode: HTTP/1 request heads the agent could not read
    /// (malformed, too large or too slow), held and replayed to the app.
    pub bad_heads: AtomicU64,
    /// Connections from an ignored source to a stopped service, refused.
    pub ignored_refused: AtomicU64,
    /// Connections reset because another program listens on their port
    /// (steered before the agent saw that program).
    pub yielded: AtomicU64,
}

/// One version of the routing table: published port → route.
pub type RouteTable = Arc<HashMap<u16, Route>>;

/// The routing table as the agent last published it (it publishes a new
/// one whenever a service is added, removed or reconfigured).
pub type Routes = watch::Receiver<RouteTable>;

/// `agent.ignore_sources` as the agent last published it (on start and
/// reload): connections from these networks never wake a service.
pub type IgnoredSources = watch::Receiver<Vec<ipnet::IpNet>>;

/// Everything a steered connection may need.
pub struct ColdStart {
    /// Published port → service.
    pub routes: Routes,
    /// Where ready services live.
    pub upstreams: Arc<dyn Upstreams>,
    /// Listener counters.
    pub stats: Arc<ColdStartStats>,
    /// Wait-page themes (built-in and user).
    pub themes: Arc<ThemeSet>,
    /// Agent metrics (wait pages served, fail-fast answers, hang-ups).
    pub metrics: Arc<Metrics>,
    /// Monitoring networks: their connections to a stopped service are
    /// refused instead of waking it (they are held like any other while a
    /// start someone else caused is under way).
    pub ignored_sources: IgnoredSources,
    /// Asked before a connection is held: a port another program listens
    /// on is not the agent's to hold.
    pub owners: Arc<dyn PortOwners>,
    /// Where held connections go when the agent hands over.
    pub handoff: Handoff,
}

/// Accepts on `listeners` until `shutdown`, handling each connection in its
/// own task, and serves `passed` (connections an old agent held);
/// returns once every connection task has finished (or, handing over,
/// was handed to [`Handoff::drain`]).
pub async fn serve(
    listeners: Vec<TcpListener>,
    passed: Vec<Passed>,
    ctx: Arc<ColdStart>,
    shutdown: CancellationToken,
) {
    let mut accept_loops = JoinSet::new();
    let mut resumed = JoinSet::new();
    passing::serve_passed(passed, &ctx, &shutdown, &mut resumed).await;
    if !resumed.is_empty() {
        accept_loops.spawn(finish_tasks(resumed, Arc::clone(&ctx), shutdown.clone()));
    }
    for listener in listeners {
        accept_loops.spawn(accept_loop(listener, Arc::clone(&ctx), shutdown.clone()));
    }
    while accept_loops.join_next().await.is_some() {}
}

/// Waits for `tasks` until `shutdown`, then ends them as the accept loop
/// ends its own.
async fn finish_tasks(mut tasks: JoinSet<()>, ctx: Arc<ColdStart>, shutdown: CancellationToken) {
    tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => {}
        () = shutdown.cancelled() => end_tasks(tasks, &ctx).await,
    }
}

/// Connection tasks at shutdown: handed to the hand-over's drain, or
/// aborted (their clients see a close; new connections reach the stock
/// datapath once steering is dropped).
async fn end_tasks(mut tasks: JoinSet<()>, ctx: &ColdStart) {
    if passing::Handoff::active() {
        // Held connections pass themselves on at once; what is left
        // forwards to a ready service and finishes at the run's end.
        tokio::time::sleep(PASS_GRACE).await;
        while tasks.try_join_next().is_some() {}
        match ctx.handoff.drain(tasks) {
            Ok(()) => return,
            Err(back) => tasks = back,
        }
    }
    tasks.shutdown().await;
}

/// How long held connections get to pass themselves on when the agent
/// hands over, before the accept loop gives its other tasks to the drain.
const PASS_GRACE: Duration = Duration::from_millis(100);

async fn accept_loop(listener: TcpListener, ctx: Arc<ColdStart>, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
        ctx.metrics.listener_accepted();
        let Ok(port) = stream.local_addr().map(|local| local.port()) else {
            continue;
        };
        match lookup(&ctx.routes, port) {
            Some(route) if must_not_wake(&ctx, &route, peer) => {
                ctx.stats.ignored_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(service = %route.service, %peer, "ignored source refused: it does not wake services");
                hold::refuse(stream);
            }
            Some(route) => {
                // Checked here, not in the task, so a refusal is immediate.
                let Ok(permit) = route.held.clone().try_acquire_owned() else {
                    ctx.stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                    hold::refuse(stream);
                    continue;
                };
                let (ctx, shutdown) = (Arc::clone(&ctx), shutdown.clone());
                connections.spawn(async move {
                    handle(stream, port, route, &ctx, &shutdown, permit).await;
                });
            }
            None => {
                // A service being added steers its port just before its
                // route exists: give the route a moment instead of dropping
                // the connection.
                let (ctx, shutdown) = (Arc::clone(&ctx), shutdown.clone());
                connections.spawn(async move {
                    for _ in 0..ROUTE_WAIT_STEPS {
                        tokio::time::sleep(ROUTE_WAIT_STEP).await;
                        if let Some(route) = lookup(&ctx.routes, port) {
                            let Ok(permit) = route.held.clone().try_acquire_owned() else {
                                ctx.stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                                hold::refuse(stream);
                                return;
                            };
                            handle(stream, port, route, &ctx, &shutdown, permit).await;
                            return;
                        }
                    }
                    ctx.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(port, %peer, "steered connection for a port no service claims");
                });
            }
        }
    }
    end_tasks(connections, &ctx).await;
}

/// How long (steps × step) an accepted connection waits for its route.
const ROUTE_WAIT_STEPS: u32 = 100;
const ROUTE_WAIT_STEP: Duration = Duration::from_millis(10);

/// Whether `peer` is in an ignored network while the route's service is not
/// starting: such a connection would be the one to wake it.
fn must_not_wake(ctx: &ColdStart, route: &Route, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    let ignored = ctx
        .ignored_sources
        .borrow()
        .iter()
        .any(|net| net.contains(&ip));
    ignored
        && !matches!(
            route.handle.subscribe().borrow().state,
            ServiceState::Starting | ServiceState::Ready
        )
}

fn lookup(routes: &Routes, port: u16) -> Option<Route> {
    routes.borrow().get(&port).cloned()
}

/// Handles one routed connection in its mode and counts the outcome.
/// `permit` is its place under `max_held_connections`, given back once the
/// service is ready, the client is answered or it hangs up.
async fn handle(
    stream: tokio::net::TcpStream,
    port: u16,
    route: Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    if let Ok(local) = stream.local_addr() {
        // Not waited for past the shutdown: a connection held at a
        // hand-over must be passed on with the others, not left behind.
        let may_hold = tokio::select! {
            may = ctx.owners.may_hold(&route.service, local) => may,
            () = shutdown.cancelled() => true,
        };
        if !may_hold {
            // Its handshake was made with the agent's socket: it cannot be
            // moved to the program, so it is reset at once (the next
            // attempt reaches the program on the stock path).
            ctx.stats.yielded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %route.service, %local, "connection reset: another program listens on its port");
            hold::refuse(stream);
            return;
        }
    }
    serve_held(held::Held::new(stream, permit), port, route, ctx, shutdown).await;
}

/// Serves one held connection in its mode and counts the outcome.
async fn serve_held(
    held: held::Held,
    port: u16,
    route: Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
) {
    let outcome = match route.mode {
        Mode::Blocking => hold::hold_and_forward(held, port, &route, ctx, shutdown).await,
        Mode::Dynamic => dynamic::handle(held, port, &route, ctx, shutdown).await,
    };
    let counter = match outcome {
        HoldOutcome::Forwarded => &ctx.stats.forwarded,
        HoldOutcome::Failed => &ctx.stats.failed,
        HoldOutcome::Refused => {
            ctx.metrics.fail_fast(&route.service);
            &ctx.stats.fail_fast
        }
        HoldOutcome::HungUp => {
            ctx.metrics.hung_up(&route.service);
            &ctx.stats.hung_up
        }
        HoldOutcome::Closed | HoldOutcome::Passed => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;
