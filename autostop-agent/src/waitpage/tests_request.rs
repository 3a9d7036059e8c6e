//! Tests of request-head reading and classification: limits (size, total
//! timeout against slowloris), malformed input, byte-exact replay data and
//! the navigation/XHR/API decision table.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::request::{classify, read_head, read_head_from, Head, HeadError, Kind};

const LIMIT: usize = 16 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

async fn head_of(bytes: &[u8]) -> Result<Head, HeadError> {
    let mut reader = bytes;
    read_head(&mut reader, TIMEOUT, LIMIT).await
}

async fn kind(request: &str) -> Kind {
    classify(&head_of(request.as_bytes()).await.expect("parses"))
}

const CHROME_NAV: &str = "GET /dashboard HTTP/1.1\r\nHost: app\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n\r\n";

#[tokio::test]
async fn classification_table() {
    let table: &[(&str, &str, Kind)] = &[
        ("browser GET", CHROME_NAV, Kind::Navigation),
        (
            "old browser without Sec-Fetch",
            "GET / HTTP/1.1\r\nAccept: text/html,*/*;q=0.8\r\n\r\n",
            Kind::Navigation,
        ),
        ("curl default", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n", Kind::Other),
        ("no Accept", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", Kind::Other),
        ("JSON API", "GET /api/v1 HTTP/1.1\r\nAccept: application/json\r\n\r\n", Kind::Other),
        (
            "XHR",
            "GET /x HTTP/1.1\r\nAccept: text/html, */*\r\nX-Requested-With: XMLHttpRequest\r\n\r\n",
            Kind::Other,
        ),
        (
            "fetch cors",
            "GET /x HTTP/1.1\r\nAccept: text/html\r\nSec-Fetch-Mode: cors\r\n\r\n",
            Kind::Other,
        ),
        (
            "navigate wins over X-Requested-With",
            "GET / HTTP/1.1\r\nAccept: text/html\r\nX-Requested-With: com.app\r\nsec-fetch-mode: Navigate\r\n\r\n",
            Kind::Navigation,
        ),
        (
            "text/html refused with q=0",
            "GET / HTTP/1.1\r\nAccept: text/html;q=0, */*\r\n\r\n",
            Kind::Other,
        ),
        (
            "POST html form",
            "POST /login HTTP/1.1\r\nAccept: text/html\r\nSec-Fetch-Mode: navigate\r\nContent-Length: 0\r\n\r\n",
            Kind::Other,
        ),
        ("HEAD html", "HEAD / HTTP/1.1\r\nAccept: text/html\r\n\r\n", Kind::Navigation),
        (
            "WebSocket upgrade",
            "GET /ws HTTP/1.1\r\nAccept: text/html\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            Kind::Other,
        ),
        ("status poll", "GET /.autostop/status HTTP/1.1\r\nAccept: */*\r\nSec-Fetch-Mode: cors\r\n\r\n", Kind::StatusPoll),
        ("status poll with query", "GET /.autostop/status?t=1 HTTP/1.1\r\n\r\n", Kind::StatusPoll),
        ("status path but POST", "POST /.autostop/status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Kind::Other),
        ("wait script", "GET /.autostop/wait.js HTTP/1.1\r\nAccept: */*\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: script\r\n\r\n", Kind::WaitScript),
        ("wait script with query", "GET /.autostop/wait.js?v=2 HTTP/1.1\r\n\r\n", Kind::WaitScript),
        ("wait script HEAD", "HEAD /.autostop/wait.js HTTP/1.1\r\n\r\n", Kind::WaitScript),
        ("script path but POST", "POST /.autostop/wait.js HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Kind::Other),
        ("another script", "GET /.autostop/other.js HTTP/1.1\r\nSec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\n\r\n", Kind::Other),
    ];
    for (label, request, want) in table {
        assert_eq!(kind(request).await, *want, "{label}");
    }
}

#[tokio::test]
async fn parsed_fields_and_replay_bytes_include_body() {
    let sent =
        b"POST /api/items?x=1 HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\nhello world";
    let head = head_of(sent).await.expect("parses");
    assert_eq!(head.raw, sent);
    assert_eq!(head.body_prefix(), b"hello world");
    assert_eq!(head.method, "POST");
    assert_eq!(head.path, "/api/items?x=1");
    assert_eq!(head.path_only(), "/api/items");
    assert_eq!(head.minor_version, 1);
    assert_eq!(head.header("content-length"), Some("11"));
    assert_eq!(head.header("HOST"), Some("app"));
}

#[tokio::test]
async fn head_split_over_many_writes_is_reassembled() {
    let sent = CHROME_NAV.as_bytes();
    let (mut client, mut server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for piece in sent.chunks(7) {
            client.write_all(piece).await.expect("write");
            tokio::task::yield_now().await;
        }
        client
    });
    let head = read_head(&mut server, TIMEOUT, LIMIT)
        .await
        .expect("parses");
    assert_eq!(head.raw, sent);
    assert_eq!(head.head_len, sent.len());
    assert_eq!(classify(&head), Kind::Navigation);
    drop(writer.await.expect("writer"));
}

#[tokio::test]
async fn malformed_heads_are_rejected_with_their_bytes() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /a b c\r\n\r\n",
        // A TLS ClientHello: detected on the first bytes, without waiting.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
    ];
    for sent in cases {
        match head_of(sent).await {
            Err(HeadError::Malformed { raw, .. }) => assert_eq!(&raw, sent),
            other => panic!("{sent:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn oversized_head_is_too_large() {
    let mut sent = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    sent.extend(std::iter::repeat_n(b'a', 20 * 1024));
    sent.extend_from_slice(b"\r\n\r\n");
    match head_of(&sent).await {
        Err(HeadError::TooLarge { limit, raw }) => {
            assert_eq!(limit, LIMIT);
            assert_eq!(raw, &sent[..LIMIT]);
        }
        other => panic!("{other:?}"),
    }
    // The same head fits under a larger limit.
    let mut reader = sent.as_slice();
    let head = read_head(&mut reader, TIMEOUT, 32 * 1024)
        .await
        .expect("fits");
    assert_eq!(head.raw, sent);
}

#[tokio::test]
async fn early_close_is_reported_with_bytes() {
    match head_of(b"GET / HTTP/1.1\r\nHost: a\r\n").await {
        Err(HeadError::Closed { raw }) => assert_eq!(raw, b"GET / HTTP/1.1\r\nHost: a\r\n"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(head_of(b"").await, Err(HeadError::Closed { raw }) if raw.is_empty()));
}

/// A client that sends one header byte per second: every single read is
/// quick, but the head never completes, so only a total deadline stops it.
#[tokio::test(start_paused = true)]
async fn slowloris_hits_the_total_header_timeout() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let dribble = b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let writer = tokio::spawn(async move {
        for byte in dribble.iter() {
            if client.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Keep the connection open, sending nothing more.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(client);
    });
    let start = tokio::time::Instant::now();
    let result = read_head(&mut server, TIMEOUT, LIMIT).await;
    let waited = start.elapsed();
    match result {
        Err(HeadError::Timeout { raw }) => {
            assert!(!raw.is_empty());
            assert!(dribble.starts_with(&raw), "raw is what was sent");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= TIMEOUT && waited < TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn slow_but_complete_head_within_the_timeout_is_read() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        for piece in CHROME_NAV.as_bytes().chunks(60) {
            client.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client
    });
    let head = read_head(&mut server, TIMEOUT, LIMIT)
        .await
        .expect("complete in time");
    assert_eq!(head.raw, CHROME_NAV.as_bytes());
    drop(writer.await.expect("writer"));
}

#[tokio::test]
async fn head_continues_after_bytes_already_read() {
    let sent = CHROME_NAV.as_bytes();
    let (first, rest) = sent.split_at(5);
    let mut reader = rest;
    let head = read_head_from(&mut reader, first.to_vec(), TIMEOUT, LIMIT)
        .await
        .expect("parses");
    assert_eq!(head.raw, sent, "the bytes read before are kept in front");
    assert_eq!(classify(&head), Kind::Navigation);
    // A complete head needs no read at all.
    let mut nothing: &[u8] = &[];
    let head = read_head_from(&mut nothing, sent.to_vec(), TIMEOUT, LIMIT)
        .await
        .expect("parses");
    assert_eq!(head.raw, sent);
    // Errors hand the bytes back.
    let mut closed: &[u8] = &[];
    let err = read_head_from(&mut closed, b"GET / HT".to_vec(), TIMEOUT, LIMIT)
        .await
        .expect_err("closed early");
    assert_eq!(err.into_raw(), b"GET / HT");
}
