//! Dynamic mode: browsers get the wait page, its script and its poll the
//! status; every other client is held and replayed byte for byte, whatever
//! it speaks.

use super::*;

const DYNAMIC: crate::config::Mode = crate::config::Mode::Dynamic;

/// Reads `want.len()` bytes from `c` and checks they are `want`.
async fn expect_echo(c: &mut TcpStream, want: &[u8], what: &str) {
    let mut back = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("{what}: no echo in time"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(back == want, "{what}: echo differs");
}

#[tokio::test]
async fn dynamic_mode_serves_browsers_the_page_and_holds_api_clients() {
    let h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(30)).await;
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
async fn the_wait_script_is_served_once_by_the_agent_without_a_wake() {
    let mut h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(30)).await;
    let mut script = TcpStream::connect(h.addr).await.expect("connect");
    script
        .write_all(
            b"GET /.autostop/wait.js HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\
              Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: script\r\n\r\n",
        )
        .await
        .expect("write");
    let reply = read_all(&mut script).await;
    assert!(
        reply.starts_with("HTTP/1.1 200 ") && reply.contains("text/javascript"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert!(reply.ends_with(crate::waitpage::WAIT_SCRIPT), "script body");
    // An asset of a page that already woke the service; no page counted.
    assert_eq!(h.wakes(), 0);
    assert_eq!(h.stats.wait_pages.load(Ordering::Relaxed), 0);
    h.stop().await;
}

#[tokio::test]
async fn heads_the_agent_cannot_read_are_held_and_replayed_to_the_app() {
    let h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(3600)).await;
    let good: &[u8] = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    let malformed: &[u8] = b"GET /a b c\r\nBad Header\r\n\r\n";
    let garbage: &[u8] = b"\x01\x02 not http at all\r\n\r\n";
    let mut huge = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 40 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let mut clients = Vec::new();
    for bytes in [good, malformed, garbage, &huge] {
        let mut c = TcpStream::connect(h.addr).await.expect("connect");
        c.write_all(bytes).await.expect("write");
        clients.push((c, bytes));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.set_state(ServiceState::Ready);
    for (i, (c, bytes)) in clients.iter_mut().enumerate() {
        expect_echo(c, bytes, &format!("client {i}")).await;
    }
    assert_eq!(
        h.stats.bad_heads.load(Ordering::Relaxed),
        2,
        "malformed, huge"
    );
    assert_eq!(h.stats.wait_pages.load(Ordering::Relaxed), 0);
    h.stop().await;
}

/// The start of a ClientHello and a complete HTTP/2 opening (preface plus
/// an empty SETTINGS frame).
const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03\
    \x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00\
    \x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00\
    \x00\x00\x02\x13\x01\x01\x00";
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn tls_and_http2_clients_are_held_and_replayed_byte_for_byte() {
    let mut h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(3600)).await;
    let mut tls = TcpStream::connect(h.addr).await.expect("connect");
    tls.write_all(CLIENT_HELLO).await.expect("write");
    let mut h2 = TcpStream::connect(h.addr).await.expect("connect");
    h2.write_all(H2_OPENING).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.wakes(), 2, "both woke the service");
    h.set_state(ServiceState::Ready);
    expect_echo(&mut tls, CLIENT_HELLO, "TLS").await;
    expect_echo(&mut h2, H2_OPENING, "HTTP/2").await;
    // Nothing but the echo reached them: no plaintext 400 in front.
    assert_eq!(h.stats.bad_heads.load(Ordering::Relaxed), 0);
    h.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_held_for_a_server_that_speaks_first() {
    let mut h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(3600)).await;
    let mut silent = TcpStream::connect(h.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.wakes(), 1, "a silent client is held, so it wakes");
    h.set_state(ServiceState::Ready);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Spliced: what it says now reaches the app.
    silent.write_all(b"HELO there").await.expect("write");
    expect_echo(&mut silent, b"HELO there", "silent client").await;
    h.stop().await;
}

#[tokio::test]
async fn a_late_navigation_on_a_silent_connection_still_gets_the_wait_page() {
    let h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(3600)).await;
    // A browser's preconnected socket: its request comes later.
    let mut c = TcpStream::connect(h.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nSec-Fetch-Mode: navigate\r\n\r\n")
        .await
        .expect("write");
    let page = read_all(&mut c).await;
    assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
    assert!(page.contains("data-status="), "the wait page: {page}");
    assert_eq!(h.stats.wait_pages.load(Ordering::Relaxed), 1);
    h.stop().await;
}

#[tokio::test]
async fn clients_that_leave_during_the_head_or_the_hold_are_counted_gone() {
    let h = Harness::start_with(DYNAMIC, 2, Duration::from_secs(3600)).await;
    for bytes in [
        &b"GET / HT"[..],
        b"",
        b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut c = TcpStream::connect(h.addr).await.expect("connect");
        c.write_all(bytes).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(c);
    }
    let noticed = async {
        while h.stats.hung_up.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), noticed)
        .await
        .expect("all three noticed");
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 0);
    h.stop().await;
}

/// The page and its poll carry the start's steps with generic labels:
/// none while stopped, the container's phase while starting, and the step
/// marked failed (with the public text only) once the start failed.
#[tokio::test]
async fn the_page_and_the_poll_show_the_start_steps() {
    let h = Harness::start_with(DYNAMIC, 16, Duration::from_secs(30)).await;
    let get = |path: &'static str| async move {
        let mut c = TcpStream::connect(h.addr).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n");
        c.write_all(head.as_bytes()).await.expect("write");
        read_all(&mut c).await
    };
    let json = |reply: String| -> serde_json::Value {
        let (_, body) = reply.split_once("\r\n\r\n").expect("body");
        serde_json::from_str(body).expect("status JSON")
    };
    let stopped = json(get("/.autostop/status").await);
    assert_eq!(stopped["steps"], serde_json::json!([]));

    h.set_state(ServiceState::Starting);
    let starting = json(get("/.autostop/status").await);
    assert_eq!(
        starting["steps"],
        serde_json::json!([{"label": "container 1 of 1", "phase": "health_pending",
            "text": "health check pending", "for_s": 0}])
    );
    let page = get("/").await;
    assert!(
        page.contains("<li>container 1 of 1: health check pending</li>"),
        "{page}"
    );

    h.set_state(internal_failure());
    let failed = json(get("/.autostop/status").await);
    assert_eq!(failed["steps"][0]["phase"], "failed");
    assert_eq!(failed["error"], crate::waitpage::PUBLIC_FAILURE);
    assert_no_internals(&failed.to_string(), "status JSON");
    h.stop().await;
}
