//! Fail fast: a start that fails answers its held clients at once; while
//! no start is coming (crash-loop guard latched, retry backoff pending) a
//! new client is answered at once instead of held to `start_timeout`; and
//! what they are told names no internals.

use super::*;
use crate::waitpage::{PUBLIC_FAILURE, PUBLIC_TIMEOUT};

/// Far beyond any wait in these tests: an answer proves no hold.
const HOUR: Duration = Duration::from_secs(3600);
/// Bound on an answer that must come at once (generous for a loaded
/// machine; the agent's own wait for a silent client is 300 ms).
const AT_ONCE: Duration = Duration::from_secs(5);
const TLS: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

#[tokio::test]
async fn failed_start_answers_http_clients_with_502_and_closes_raw_ones() {
    let h = Harness::start(16, HOUR).await;
    let mut http = TcpStream::connect(h.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut raw = TcpStream::connect(h.addr).await.expect("connect");
    raw.write_all(TLS).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(internal_failure());
    let reply = answer_within(&mut http, AT_ONCE, "held HTTP client").await;
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    assert!(
        reply.ends_with(&format!("\r\n\r\n{PUBLIC_FAILURE}\n")),
        "{reply}"
    );
    assert_no_internals(&reply, "502 reply");
    let closed = answer_within(&mut raw, AT_ONCE, "held TLS client").await;
    assert_eq!(closed, "", "a raw client is closed without bytes");
    drop((http, raw));
    count_reaches(&h.stats.failed, 2, "failed").await;
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
    assert!(reply.ends_with(&format!("{PUBLIC_TIMEOUT}\n")), "{reply}");
    h.stop().await;
}

/// Clients of every kind, arriving while the crash-loop guard is latched.
/// Each is read to its end and then closed.
async fn clients_of_every_kind(addr: SocketAddr) -> (String, String, String) {
    let mut http = TcpStream::connect(addr).await.expect("connect");
    http.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut tls = TcpStream::connect(addr).await.expect("connect");
    tls.write_all(TLS).await.expect("write");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let (a, b, c) = tokio::join!(
        answer_within(&mut http, AT_ONCE, "HTTP client"),
        answer_within(&mut tls, AT_ONCE, "TLS client"),
        answer_within(&mut silent, AT_ONCE, "silent client"),
    );
    (a, b, c)
}

#[tokio::test]
async fn crash_loop_answers_every_new_client_at_once_in_both_modes() {
    for mode in [crate::config::Mode::Blocking, crate::config::Mode::Dynamic] {
        let mut h = Harness::start_with(mode, 16, HOUR).await;
        h.set_status(internal_failure(), Some(StartBlock::CrashLoop));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (http, tls, silent) = clients_of_every_kind(h.addr).await;
        assert!(http.starts_with("HTTP/1.1 503 "), "{mode:?}: {http}");
        assert!(
            !http.contains("Retry-After"),
            "{mode:?}: no retry time for a latched guard: {http}"
        );
        assert!(http.contains(PUBLIC_FAILURE), "{mode:?}: {http}");
        assert_no_internals(&http, "503 reply");
        assert_eq!(tls, "", "{mode:?}: TLS client closed without bytes");
        assert_eq!(silent, "", "{mode:?}: silent client closed");
        count_reaches(&h.stats.fail_fast, 3, "answered at once").await;
        assert_eq!(h.metric("autostop_connections_fail_fast_total"), "3");
        assert_eq!(h.wakes(), 0, "{mode:?}: a latched guard ignores wakes");
        h.stop().await;
    }
}

#[tokio::test]
async fn backoff_answers_with_retry_after_and_still_schedules_the_retry() {
    let mut h = Harness::start(16, HOUR).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let retry_at = tokio::time::Instant::now() + Duration::from_secs(3);
    h.set_status(internal_failure(), Some(StartBlock::Backoff { retry_at }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut http = TcpStream::connect(h.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let reply = answer_within(&mut http, AT_ONCE, "HTTP client in a backoff").await;
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(
        reply.contains("Retry-After: 3\r\n") || reply.contains("Retry-After: 2\r\n"),
        "{reply}"
    );
    assert_eq!(h.wakes(), 1, "the wake schedules the retry");
    h.stop().await;
}

/// Sends `msg` to the agent and returns the connection (held).
async fn held_client(addr: SocketAddr, msg: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(msg).await.expect("write");
    c
}

#[tokio::test]
async fn an_elapsed_backoff_or_a_manual_start_holds_again() {
    let mut h = Harness::start(16, HOUR).await;
    let retry_at = tokio::time::Instant::now();
    h.set_status(internal_failure(), Some(StartBlock::Backoff { retry_at }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut after_backoff = held_client(h.addr, b"one").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.wakes(), 1, "its wake retries the start");
    h.set_state(ServiceState::Ready);
    let mut back = [0u8; 3];
    tokio::time::timeout(AT_ONCE, after_backoff.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("echoed, not refused");
    assert_eq!(&back, b"one");

    // Latched, then an operator's `autostop start`: starting again, so a
    // new client is held like any other.
    h.set_status(internal_failure(), Some(StartBlock::CrashLoop));
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.set_state(ServiceState::Starting);
    let mut after_manual = held_client(h.addr, b"two").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(ServiceState::Ready);
    tokio::time::timeout(AT_ONCE, after_manual.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("echoed, not refused");
    assert_eq!(&back, b"two");
    assert_eq!(h.stats.fail_fast.load(Ordering::Relaxed), 0);
    h.stop().await;
}

#[tokio::test]
async fn visitors_of_a_failed_dynamic_service_see_no_internals() {
    let h = Harness::start_with(crate::config::Mode::Dynamic, 16, HOUR).await;
    h.set_status(internal_failure(), Some(StartBlock::CrashLoop));
    tokio::time::sleep(Duration::from_millis(10)).await;

    let mut browser = TcpStream::connect(h.addr).await.expect("connect");
    browser
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
        .await
        .expect("write");
    let page = answer_within(&mut browser, AT_ONCE, "browser").await;
    assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(page.contains(PUBLIC_FAILURE), "the page says it failed");
    assert!(
        page.contains("<title>web"),
        "the configured name is the title"
    );
    assert_no_internals(&page, "wait page");

    let mut poll = TcpStream::connect(h.addr).await.expect("connect");
    poll.write_all(b"GET /.autostop/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let json = answer_within(&mut poll, AT_ONCE, "status poll").await;
    let body = json.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect("status JSON");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["error"], PUBLIC_FAILURE);
    assert_no_internals(&json, "status JSON");
    h.stop().await;
}
