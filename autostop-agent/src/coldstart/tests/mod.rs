//! Cold-start listener tests on loopback, no root: a plain listener stands
//! in for the steered one (routing only looks at the local port), a watch
//! channel stands in for the state machine, and an echo server for the app.
//!
//! - `blocking`: holding, forwarding, limits, clients that hang up.
//! - `dynamic`: wait page, status poll, and everything held and replayed
//!   (API requests, unreadable heads, TLS, HTTP/2, silent clients).
//! - `failfast`: answers when no start is coming or the start fails, and
//!   what anonymous clients are (not) told.

mod blocking;
mod dynamic;
mod failfast;
mod passing;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::service::{Command, ServiceSettings, ServiceState, ServiceStatus, StartBlock};

struct FixedUpstream(SocketAddr);

#[async_trait::async_trait]
impl Upstreams for FixedUpstream {
    async fn upstream(&self, _: &str, _: u16) -> Result<SocketAddr, String> {
        Ok(self.0)
    }

    /// One container whose health check is pending (its start began just
    /// now, so after any state the harness set).
    fn progress(&self, _: &str) -> crate::progress::Progress {
        let since = tokio::time::Instant::now();
        crate::progress::Progress {
            began: Some(since),
            steps: vec![crate::progress::Step {
                kind: crate::progress::StepKind::Container,
                phase: crate::progress::Phase::HealthPending,
                since,
            }],
        }
    }
}

/// An echo server: the "app" behind the service.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct Harness {
    addr: SocketAddr,
    ignored: watch::Sender<Vec<ipnet::IpNet>>,
    status: watch::Sender<ServiceStatus>,
    commands: mpsc::Receiver<Command>,
    stats: Arc<ColdStartStats>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start(max_held: usize, start_timeout: Duration) -> Self {
        Self::start_with(crate::config::Mode::Blocking, max_held, start_timeout).await
    }

    async fn start_with(
        mode: crate::config::Mode,
        max_held: usize,
        start_timeout: Duration,
    ) -> Self {
        Self::start_passed(mode, max_held, start_timeout, |_| Vec::new()).await
    }

    /// Like [`Self::start_with`], serving what `passed` makes for the
    /// listener's port too (connections an old agent passed on).
    async fn start_passed(
        mode: crate::config::Mode,
        max_held: usize,
        start_timeout: Duration,
        passed: impl FnOnce(u16) -> Vec<super::Passed>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind agent listener");
        let addr = listener.local_addr().expect("addr");
        let settings = ServiceSettings::default();
        let mut initial = ServiceStatus::initial(&settings, tokio::time::Instant::now());
        initial.state = ServiceState::Stopped;
        let (status, status_rx) = watch::channel(initial);
        let (tx, commands) = mpsc::channel(4096);
        let route = Route {
            service: "web".to_owned(),
            mode,
            theme: Some("ghost".to_owned()),
            handle: ServiceHandle { tx, status_rx },
            start_timeout,
            held: Arc::new(Semaphore::new(max_held)),
            handover: Arc::new(Semaphore::new(super::HANDOVER_WINDOW)),
        };
        let (_publish, routes): (_, Routes) =
            watch::channel(Arc::new(HashMap::from([(addr.port(), route)])));
        let upstream = Arc::new(FixedUpstream(echo_server().await));
        let stats = Arc::new(ColdStartStats::default());
        let shutdown = CancellationToken::new();
        let (ignored, ignored_sources) = watch::channel(Vec::new());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ctx = Arc::new(ColdStart {
            ignored_sources,
            routes,
            upstreams: upstream,
            stats: stats.clone(),
            themes: Arc::new(crate::waitpage::ThemeSet::builtin()),
            metrics: Arc::clone(&metrics),
            owners: Arc::new(super::NoOtherOwners),
            handoff: super::Handoff::channel().0,
        });
        let passed = passed(addr.port());
        let server = tokio::spawn(serve(vec![listener], passed, ctx, shutdown.clone()));
        Self {
            addr,
            ignored,
            status,
            commands,
            stats,
            metrics,
            shutdown,
            server,
        }
    }

    /// The value of the exposition's sample `name{service="web"}`.
    fn metric(&self, name: &str) -> String {
        let prefix = format!("{name}{{service=\"web\"}} ");
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("no sample {prefix}"))
    }

    fn set_state(&self, state: ServiceState) {
        self.set_status(state, None);
    }

    /// Publishes `state` (entered now) with `start_block`.
    fn set_status(&self, state: ServiceState, start_block: Option<StartBlock>) {
        self.status.send_modify(|s| {
            s.state = state;
            s.since = tokio::time::Instant::now();
            s.start_block = start_block;
        });
    }

    /// Wakes received so far.
    fn wakes(&mut self) -> usize {
        std::iter::from_fn(|| self.commands.try_recv().ok())
            .filter(|c| matches!(c, Command::Wake { .. }))
            .count()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task joined");
    }
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a connection to the agent and asserts the agent closes it (EOF or
/// reset) within `within` instead of holding it.
async fn assert_closed_by_agent(addr: SocketAddr, within: Duration, what: &str) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"));
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
}

/// Connects to `addr`, sends `msg` and checks the echo service sent it
/// back; the connection stays open for the caller.
async fn echo_round_trip(addr: SocketAddr, msg: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(msg.as_bytes()).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).await.expect("read");
    assert_eq!(back, msg.as_bytes());
    c
}

/// Reads until the agent closes `stream`, failing if that takes longer
/// than `within`: proves a client was answered, not held.
async fn answer_within(stream: &mut TcpStream, within: Duration, what: &str) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{what}: not answered within {within:?}"));
    // A reset after the reply still leaves the reply read so far.
    let _ = read;
    String::from_utf8_lossy(&out).into_owned()
}

/// A service failure whose cause names internals an anonymous client
/// must never see.
fn internal_failure() -> ServiceState {
    ServiceState::Failed {
        reason: format!("{INTERNAL_NAME} ({INTERNAL_PATH}): {INTERNAL_ERROR}"),
    }
}
const INTERNAL_NAME: &str = "stack-web-1";
const INTERNAL_PATH: &str = "/opt/stack/docker-compose.yml";
const INTERNAL_ERROR: &str = "Error response from daemon: driver failed";

/// Asserts `text` carries none of [`internal_failure`]'s details.
fn assert_no_internals(text: &str, what: &str) {
    for secret in [INTERNAL_NAME, INTERNAL_PATH, INTERNAL_ERROR, "daemon"] {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
}

/// Waits (at most 5 s) until `counter` reaches `want`: outcomes are counted
/// when a connection's task ends, after the agent's lingering close.
async fn count_reaches(counter: &std::sync::atomic::AtomicU64, want: u64, what: &str) {
    let reached = async {
        while counter.load(Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), reached)
        .await
        .is_err()
    {
        panic!("{what}: {} of {want}", counter.load(Ordering::Relaxed));
    }
    assert_eq!(counter.load(Ordering::Relaxed), want, "{what}");
}
