//! The listener of [`super::serve`] on a real loopback socket (no root):
//! idle and slowloris connections are closed after the header-read timeout,
//! the connection cap holds further clients back, and the CLI's client
//! works through every check.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::tests::{local_router, Fake};
use super::{serve_with, Action, ServeLimits};
use crate::client::Client;

/// Serves the fake control on 127.0.0.1:0 with `limits`.
async fn start(
    fake: Arc<Fake>,
    limits: ServeLimits,
) -> (std::net::SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        serve_with(listener, local_router(fake, None), limits, stop)
            .await
            .expect("serve");
    });
    (addr, shutdown, task)
}

/// Reads until the server closes; `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_and_slow_heads_are_closed_after_the_header_timeout() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let (addr, shutdown, task) = start(Arc::new(Fake::default()), limits).await;
    // Sends nothing at all.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    // Sends half a head, then nothing.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /api/services HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("write");
    // Control: a complete request on a keep-alive connection is answered,
    // and the connection is then closed once idle for the same timeout.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let wait = Duration::from_secs(10);
    assert!(
        closed_within(&mut idle, wait).await.is_some(),
        "an idle connection stayed open"
    );
    assert!(
        closed_within(&mut slow, wait).await.is_some(),
        "a slow head stayed open"
    );
    let answered = closed_within(&mut kept, wait)
        .await
        .expect("keep-alive connection closed");
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );
    shutdown.cancel();
    task.await.expect("serve task");
}

#[tokio::test]
async fn the_connection_cap_holds_further_clients_back() {
    let limits = ServeLimits {
        max_connections: 1,
        ..ServeLimits::default()
    };
    let (addr, shutdown, task) = start(Arc::new(Fake::default()), limits).await;
    let holder = TcpStream::connect(addr).await.expect("connect");
    // Let the server take the first connection (and its only permit).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = TcpStream::connect(addr).await.expect("connect (backlog)");
    waiting
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut waiting, Duration::from_millis(500))
            .await
            .is_none(),
        "a second connection was served past the cap of 1"
    );
    drop(holder);
    let answer = closed_within(&mut waiting, Duration::from_secs(10))
        .await
        .expect("served once the first connection closed");
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    shutdown.cancel();
    task.await.expect("serve task");
}

#[tokio::test]
async fn the_cli_client_passes_every_check() {
    let fake = Arc::new(Fake::default());
    let (addr, shutdown, task) = start(fake.clone(), ServeLimits::default()).await;
    // An agent listening on every address is reached through loopback.
    let mut unspecified = addr;
    unspecified.set_ip(std::net::Ipv4Addr::UNSPECIFIED.into());
    for client in [
        Client { addr, token: None },
        Client {
            addr: unspecified,
            token: None,
        },
    ] {
        let services = client.services().await.expect("status");
        assert_eq!(services[0].name, "web");
        client.act("web", "hold").await.expect("hold");
        client
            .set_idle_timeout("web", "10m")
            .await
            .expect("set-timeout");
    }
    assert_eq!(fake.actions.lock().expect("lock").len(), 2);
    assert_eq!(fake.actions.lock().expect("lock")[0].1, Action::Hold);
    assert_eq!(fake.timeouts.lock().expect("lock").len(), 2);
    shutdown.cancel();
    task.await.expect("serve task");
}
