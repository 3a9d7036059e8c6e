//! Cold-start listener tests on loopback, no root: a plain listener stands
//! in for the steered one (routing only looks at the local port), a watch
//! channel stands in for the state machine, and an echo server for the app.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, RwLock},
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
use crate::service::{Command, ServiceSettings, ServiceState, ServiceStatus};

struct FixedUpstream(SocketAddr);

#[async_trait::async_trait]
impl Upstreams for FixedUpstream {
    async fn upstream(&self, _: &str, _: u16) -> Result<SocketAddr, String> {
        Ok(self.0)
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
    ignored: super::IgnoredSources,
    status: watch::Sender<ServiceStatus>,
    commands: mpsc::Receiver<Command>,
    stats: Arc<ColdStartStats>,
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
        let routes: Routes = Arc::new(RwLock::new(HashMap::from([(addr.port(), route)])));
        let upstream = Arc::new(FixedUpstream(echo_server().await));
        let stats = Arc::new(ColdStartStats::default());
        let shutdown = CancellationToken::new();
        let ignored = super::IgnoredSources::default();
        let ctx = Arc::new(ColdStart {
            ignored_sources: Arc::clone(&ignored),
            routes,
            upstreams: upstream,
            stats: stats.clone(),
            themes: Arc::new(crate::waitpage::ThemeSet::builtin()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        });
        let server = tokio::spawn(serve(vec![listener], ctx, shutdown.clone()));
        Self {
            addr,
            ignored,
            status,
            commands,
            stats,
            shutdown,
            server,
        }
    }

    fn set_state(&self, state: ServiceState) {
        self.status.send_modify(|s| {
            s.state = state;
            s.since = tokio::time::Instant::now();
        });
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

#[tokio::test]
async fn held_connection_is_forwarded_once_ready_with_its_bytes_intact() {
    let mut h = Harness::start(16, Duration::from_secs(30)).await;
    let mut client = TcpStream::connect(h.addr).await.expect("connect");
    client
        .write_all(b"\x00\x01raw bytes, not HTTP")
        .await
        .expect("write");
    // The wake reaches the state machine while the client is held.
    let wake = tokio::time::timeout(Duration::from_secs(5), h.commands.recv()).await;
    assert!(matches!(wake, Ok(Some(Command::Wake { .. }))), "{wake:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.stats.forwarded.load(Ordering::Relaxed),
        0,
        "nothing forwarded before ready"
    );
    h.set_state(ServiceState::Ready);
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echoed, b"\x00\x01raw bytes, not HTTP");
    // Still open after the first exchange: no time cap on the splice.
    client.write_all(b"again").await.expect("write again");
    let mut again = [0u8; 5];
    client.read_exact(&mut again).await.expect("read again");
    assert_eq!(&again, b"again");
    drop(client);
    h.stop().await;
}

#[tokio::test]
async fn an_ignored_source_is_refused_while_stopped_and_held_while_starting() {
    let mut h = Harness::start(16, Duration::from_secs(30)).await;
    h.ignored
        .write()
        .expect("lock")
        .push("127.0.0.0/8".parse().expect("cidr"));

    // Stopped: the monitor's connection is reset and wakes nothing.
    assert_closed_by_agent(h.addr, Duration::from_secs(5), "refused, not held").await;
    assert_eq!(h.stats.ignored_refused.load(Ordering::Relaxed), 1);
    assert!(
        h.commands.try_recv().is_err(),
        "no wake from an ignored source"
    );

    // Starting (someone else woke it): held and forwarded like any client.
    h.set_state(ServiceState::Starting);
    let mut during = TcpStream::connect(h.addr).await.expect("connect");
    during.write_all(b"ping").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(ServiceState::Ready);
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), during.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echoed, b"ping");
    assert_eq!(h.stats.ignored_refused.load(Ordering::Relaxed), 1);
    h.stop().await;
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

#[tokio::test]
async fn two_hundred_concurrent_connections_are_all_answered() {
    let h = Harness::start(1024, Duration::from_secs(30)).await;
    let mut clients = Vec::new();
    for i in 0..200u32 {
        let addr = h.addr;
        clients.push(tokio::spawn(async move {
            echo_round_trip(addr, &format!("client {i:04}")).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.set_state(ServiceState::Ready);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("answered in time")
            .expect("client task");
    }
    assert_eq!(h.stats.accepted.load(Ordering::Relaxed), 200);
    h.stop().await;
}

/// The hand-over window paces connections to the app, it does not cap
/// them: three windows' worth, each kept open until all are answered, all
/// get through.
#[tokio::test]
async fn connections_beyond_the_handover_window_are_forwarded_while_others_stay_open() {
    let h = Harness::start(1024, Duration::from_secs(30)).await;
    let count = 3 * super::HANDOVER_WINDOW;
    let all_answered = Arc::new(tokio::sync::Barrier::new(count));
    let mut clients = Vec::new();
    for i in 0..count {
        let (addr, all_answered) = (h.addr, Arc::clone(&all_answered));
        clients.push(tokio::spawn(async move {
            let c = echo_round_trip(addr, &format!("long-lived {i:02}")).await;
            // Open until every other connection was answered too.
            all_answered.wait().await;
            drop(c);
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.set_state(ServiceState::Ready);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("answered in time")
            .expect("client task");
    }
    h.stop().await;
}

#[tokio::test]
async fn failed_start_answers_http_clients_with_502_and_closes_raw_ones() {
    let h = Harness::start(16, Duration::from_secs(30)).await;
    let mut http = TcpStream::connect(h.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut raw = TcpStream::connect(h.addr).await.expect("connect");
    raw.write_all(b"\x16\x03\x01binary").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(ServiceState::Failed {
        reason: "exit code 1".to_owned(),
    });
    let reply = read_all(&mut http).await;
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    assert!(reply.contains("exit code 1"), "{reply}");
    assert_eq!(
        read_all(&mut raw).await,
        "",
        "raw client is closed without bytes"
    );
    assert_eq!(h.stats.failed.load(Ordering::Relaxed), 2);
    h.stop().await;
}

#[tokio::test]
async fn start_timeout_answers_504() {
    let h = Harness::start(16, Duration::from_millis(300)).await;
    let mut http = TcpStream::connect(h.addr).await.expect("connect");
    http.write_all(b"POST /api HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let reply = read_all(&mut http).await;
    assert!(reply.starts_with("HTTP/1.1 504 "), "{reply}");
    h.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once_and_counted() {
    let h = Harness::start(2, Duration::from_secs(30)).await;
    let _a = TcpStream::connect(h.addr).await.expect("connect");
    let _b = TcpStream::connect(h.addr).await.expect("connect");
    // Let the two be accepted and hold their permits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_closed_by_agent(
        h.addr,
        Duration::from_secs(2),
        "third connection must be closed",
    )
    .await;
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 1);
    h.stop().await;
}

#[tokio::test]
async fn forwarded_connections_give_back_their_hold_permit() {
    // A ready service whose port is still steered for a moment: open
    // forwarded connections must not count against the hold limit.
    let h = Harness::start(2, Duration::from_secs(30)).await;
    h.set_state(ServiceState::Ready);
    let mut open = Vec::new();
    for i in 0..5 {
        let mut client = TcpStream::connect(h.addr).await.expect("connect");
        let line = format!("connection {i}\n");
        client.write_all(line.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; line.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
            .await
            .expect("echoed in time")
            .expect("echoed, not refused");
        assert_eq!(buf, line.as_bytes());
        open.push(client);
    }
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 0);
    h.stop().await;
}

#[tokio::test]
async fn dynamic_mode_serves_browsers_the_page_and_holds_api_clients() {
    let h = Harness::start_with(crate::config::Mode::Dynamic, 16, Duration::from_secs(30)).await;
    let mut browser = TcpStream::connect(h.addr).await.expect("connect");
    browser
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html,application/xhtml+xml\r\n\r\n")
        .await
        .expect("write");
    let page = read_all(&mut browser).await;
    assert!(
        page.starts_with("HTTP/1.1 503 "),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(
        page.contains("Retry-After:") && page.contains("no-store"),
        "headers"
    );
    assert_eq!(h.stats.wait_pages.load(Ordering::Relaxed), 1);

    let mut poll = TcpStream::connect(h.addr).await.expect("connect");
    poll.write_all(b"GET /.autostop/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let json = read_all(&mut poll).await;
    assert!(
        json.starts_with("HTTP/1.1 200 ") && json.contains(r#""service":"web""#),
        "{json}"
    );

    let mut api = TcpStream::connect(h.addr).await.expect("connect");
    let request = b"GET /v1/items HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    api.write_all(request).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(ServiceState::Ready);
    // The echo "app" returns the request exactly as the client sent it.
    let mut echoed = vec![0u8; request.len()];
    tokio::time::timeout(Duration::from_secs(5), api.read_exact(&mut echoed))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(echoed, request);
    h.stop().await;
}

#[tokio::test]
async fn dynamic_mode_closes_malformed_heads_without_disturbing_others() {
    let h = Harness::start_with(crate::config::Mode::Dynamic, 16, Duration::from_secs(30)).await;
    let mut good = TcpStream::connect(h.addr).await.expect("connect");
    good.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("write");
    let mut bad = TcpStream::connect(h.addr).await.expect("connect");
    bad.write_all(b"\x01\x02 not http at all\r\n\r\n")
        .await
        .expect("write");
    let reply = read_all(&mut bad).await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let mut huge = TcpStream::connect(h.addr).await.expect("connect");
    let mut big = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let _ = huge.write_all(&big).await;
    let reply = read_all(&mut huge).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400 "),
        "{reply}"
    );
    h.set_state(ServiceState::Ready);
    let mut echoed = [0u8; 45];
    tokio::time::timeout(Duration::from_secs(5), good.read_exact(&mut echoed))
        .await
        .expect("in time")
        .expect("the good client is still served");
    assert_eq!(h.stats.bad_heads.load(Ordering::Relaxed), 2);
    h.stop().await;
}
