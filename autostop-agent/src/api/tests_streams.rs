//! Event streams' own slots through [`super::serve_with`] on a loopback
//! socket (no root): streams do not take the request slots, the one past
//! `max_event_streams` gets 503 with `Retry-After`, a closed stream frees
//! its slot, and a reader that stops reading is dropped.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::broadcast,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::tests::{local_router, Fake, FakeFeed};
use super::{serve_with, ServeLimits};
use crate::events::{Event, Feed};

/// A feed of `missed` events, then whatever `live` sends, until `closing`.
fn feed(
    missed: Vec<Event>,
    live: broadcast::Sender<Event>,
) -> impl FnOnce(CancellationToken) -> FakeFeed {
    move |closing| {
        Arc::new(move |_| Feed {
            missed: missed.clone(),
            live: live.subscribe(),
            closing: closing.clone(),
        })
    }
}

/// Serves a fake with `feed` on 127.0.0.1:0 within `limits` (its streams
/// end at shutdown).
async fn start(
    feed: impl FnOnce(CancellationToken) -> FakeFeed,
    limits: ServeLimits,
) -> (std::net::SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let fake = Arc::new(Fake {
        feed: Some(feed(shutdown.clone())),
        ..Fake::default()
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        serve_with(listener, local_router(fake, None), limits, stop)
            .await
            .expect("serve");
    });
    (addr, shutdown, task)
}

const EVENTS: &[u8] = b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Reads a response head (lowercased) from `stream`, within 5 s.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0_u8; 1];
            if stream.read(&mut byte).await.expect("read") == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response head within 5 s");
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Opens a connection and asks for the events stream: the connection and
/// the response head.
async fn open_stream(addr: std::net::SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(EVENTS).await.expect("request");
    let head = read_head(&mut stream).await;
    (stream, head)
}

#[tokio::test]
async fn streams_have_their_own_slots_and_the_one_past_the_cap_gets_503() {
    let (live, _) = broadcast::channel(16);
    let limits = ServeLimits {
        max_connections: 1,
        max_event_streams: 2,
        ..ServeLimits::default()
    };
    let (addr, shutdown, task) = start(feed(Vec::new(), live.clone()), limits).await;
    // Two streams on a listener with a single request slot.
    let (first, head) = open_stream(addr).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let (_second, head) = open_stream(addr).await;
    assert!(head.starts_with("http/1.1 200"), "second stream: {head}");
    // The third is refused, told when to retry, and closed.
    let (mut third, head) = open_stream(addr).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 5\r\n"), "{head}");
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut body))
        .await
        .expect("closed after the refusal")
        .expect("read");
    assert!(body.contains("agent.max_event_streams"), "{body}");
    // Requests still have their slot.
    let mut request = TcpStream::connect(addr).await.expect("connect");
    request
        .write_all(b"GET /api/services HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let answer = read_head(&mut request).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    // A stream that ends gives its slot back.
    drop(first);
    let reopened = async {
        loop {
            let (stream, head) = open_stream(addr).await;
            if head.starts_with("http/1.1 200") {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reopened)
        .await
        .expect("a stream once the first one closed");
    shutdown.cancel();
    task.await.expect("serve task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_dropped_and_its_slot_freed() {
    // 2,000 events of 16 KiB: far more than the socket buffers hold.
    let big = "x".repeat(16 * 1024);
    let missed: Vec<Event> = (1..=2000)
        .map(|id| Event {
            id,
            kind: "manual".into(),
            action: Some(big.clone()),
            ..Event::default()
        })
        .collect();
    let (live, _) = broadcast::channel(16);
    let limits = ServeLimits {
        max_event_streams: 1,
        stream_stall_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let (addr, shutdown, task) = start(feed(missed, live.clone()), limits).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(addr).await.expect("connect");
    stalled.write_all(EVENTS).await.expect("request");
    // It reads nothing: once the buffers are full the stream stalls, and
    // its slot is given to the next reader.
    let next = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (stream, head) = open_stream(addr).await;
            if head.starts_with("http/1.1 200") {
                return stream;
            }
            assert!(head.starts_with("http/1.1 503"), "{head}");
        }
    };
    let _next = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("the stalled reader's slot was never freed");
    // What it was sent before it stalled, then the end of the connection.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the stalled stream was not closed ({read:?}, {} bytes read)",
        got.len()
    );
    let text = String::from_utf8_lossy(&got);
    let sent = text.matches("\"kind\":\"manual\"").count();
    assert!(
        text.starts_with("HTTP/1.1 200") && (1..2000).contains(&sent),
        "{sent} events before the close ({} bytes)",
        got.len()
    );
    shutdown.cancel();
    task.await.expect("serve task");
}
