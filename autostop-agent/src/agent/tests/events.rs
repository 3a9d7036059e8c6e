//! The events stream through the whole agent on the paused clock: a full
//! cycle (cold start by a request, ready, idle stop) arrives in order over
//! `GET /api/events`, a manual action and a reload too, and a client that
//! reconnects with `Last-Event-ID` gets exactly what it missed. Streams
//! have their own slots (`agent.max_event_streams`): 80 readers that never
//! read leave the API answering, and quiet streams are not taken for
//! stalled ones.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::{config_text, fakes::wake, service, Harness};
use crate::events::Event;

/// Reads `count` events from `/api/events` (after `last_id`, if given).
async fn read_events(h: &Harness, last_id: Option<u64>, count: usize) -> Vec<Event> {
    let mut stream = TcpStream::connect(h.api).await.expect("connect");
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /api/events HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut lines = BufReader::new(stream).lines();
    let mut head = true;
    let mut events = Vec::new();
    let (mut id, mut kind) = (None, None);
    while events.len() < count {
        let line = lines.next_line().await.expect("read").expect("stream open");
        if head {
            if line.starts_with("HTTP/") {
                assert!(line.contains(" 200 "), "{line}");
            }
            head = !line.is_empty();
            continue;
        }
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            let event: Event = serde_json::from_str(v.trim()).expect("event JSON");
            assert_eq!(Some(event.id), id, "SSE id is the event's");
            assert_eq!(
                kind.as_deref(),
                Some(event.kind.as_str()),
                "SSE event is its kind"
            );
            events.push(event);
        }
    }
    events
}

fn kinds(events: &[Event]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .map(|e| {
            let detail = e.trigger.clone().or(e.reason.clone()).or(e.action.clone());
            (e.kind.clone(), detail)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_and_an_idle_stop_stream_in_order_and_resume_without_loss() {
    let h = Harness::start(&service("web", 18100, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    let reader = {
        let h = &h;
        async move { read_events(h, None, 4).await }
    };
    let driver = async {
        // Let the reader subscribe first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.wake.send(wake(0, 18100)).expect("wake");
    };
    let (events, ()) = tokio::join!(reader, driver);
    let s = |k: &str, d: &str| (k.to_owned(), Some(d.to_owned()));
    assert_eq!(
        kinds(&events),
        [
            s("starting", "syn"),
            ("ready".to_owned(), None),
            s("stopping", "idle"),
            s("stopped", "idle")
        ]
    );
    assert!(
        events.windows(2).all(|w| w[1].id == w[0].id + 1),
        "{events:?}"
    );
    assert!(events[1].took_s.is_some(), "readiness carries its duration");
    assert_eq!(events[3].service.as_deref(), Some("web"));

    // A manual action and a reload, then a client resuming after the
    // ready event gets the rest, in order, nothing twice.
    let mut stream = TcpStream::connect(h.api).await.expect("connect");
    stream
        .write_all(
            b"POST /api/services/web/hold HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .expect("hold");
    let dir = h.config_path.parent().expect("dir").to_owned();
    let services = format!(
        "{}{}",
        service("web", 18100, "30s"),
        service("api", 18101, "30s")
    );
    std::fs::write(
        &h.config_path,
        config_text(h.api, &dir.join("state"), &services),
    )
    .expect("reload");
    h.until_state("api", "stopped").await;
    let rest = read_events(&h, Some(events[1].id), 4).await;
    assert_eq!(
        kinds(&rest),
        [
            s("stopping", "idle"),
            s("stopped", "idle"),
            s("manual", "hold"),
            s("reload", "added 1, removed 0, changed 0"),
        ]
    );
    assert_eq!(rest[0].id, events[2].id);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn autostop_events_prints_a_line_per_event_or_its_json() {
    let h = Harness::start(&service("web", 18102, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    let follow = |json: bool| {
        let client = crate::client::Client {
            addr: h.api,
            token: None,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            client
                .follow_events(json, move |line| {
                    let _ = tx.send(line.to_owned());
                })
                .await
        });
        (task, rx)
    };
    let (readable, mut lines) = follow(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.wake.send(wake(0, 18102)).expect("wake");
    let starting = lines.recv().await.expect("a line");
    assert!(
        starting.contains(" web ") && starting.ends_with("starting (trigger syn)"),
        "{starting}"
    );
    let ready = lines.recv().await.expect("a line");
    assert!(ready.contains(" ready (in "), "{ready}");
    readable.abort();

    // A new follower gets the buffered events first; --json prints them.
    let (json, mut lines) = follow(true);
    let first: serde_json::Value =
        serde_json::from_str(&lines.recv().await.expect("a line")).expect("JSON");
    assert_eq!(
        (first["id"].as_u64(), first["kind"].as_str()),
        (Some(1), Some("starting"))
    );
    json.abort();
    h.stop().await;
}

/// Opens a connection asking for the events stream; the connection and
/// its response head (lowercased).
async fn open_stream(h: &Harness) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(h.api).await.expect("connect");
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0_u8; 1];
            if tokio::io::AsyncReadExt::read(&mut stream, &mut byte)
                .await
                .expect("read")
                == 0
            {
                break;
            }
            head.extend_from_slice(&byte);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response head within 10 s");
    (stream, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

#[tokio::test(start_paused = true)]
async fn idle_event_readers_never_lock_the_api_and_the_17th_waits_for_a_slot() {
    let h = Harness::start(&service("web", 18103, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    // 80 readers that never read: more than the API's 64 request slots.
    let mut streams = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for i in 0..80 {
        let (stream, head) = open_stream(&h).await;
        if head.starts_with("http/1.1 200") {
            served += 1;
            streams.push(stream);
        } else {
            assert!(
                head.starts_with("http/1.1 503") && head.contains("retry-after: 5\r\n"),
                "reader {i}: {head}"
            );
            refused += 1;
        }
    }
    assert_eq!((served, refused), (16, 64), "agent.max_event_streams = 16");
    // The operator is still answered.
    let services = tokio::time::timeout(Duration::from_secs(10), h.get("/api/services"))
        .await
        .expect("GET /api/services answered with 16 streams open");
    assert!(services.contains("\"web\""), "{services}");
    // Quiet streams are polled each keep-alive, so they outlive the stall
    // timeout: minutes later each still gets its keep-alive comments.
    tokio::time::sleep(Duration::from_secs(300)).await;
    h.wake.send(wake(0, 18103)).expect("wake");
    let mut lines = BufReader::new(streams.swap_remove(0)).lines();
    let starting = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.starts_with("data:") && line.contains("\"starting\"") {
                return;
            }
        }
        panic!("the stream ended");
    };
    tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("the first stream still follows the events");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_event_streams_sets_the_cap() {
    let h = Harness::start_with(
        "max_event_streams = 2",
        &service("web", 18104, "30s"),
        &[],
        8,
        Vec::new(),
        |_| {},
    )
    .await;
    h.until_state("web", "stopped").await;
    let (_first, head) = open_stream(&h).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (_second, head) = open_stream(&h).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (_third, head) = open_stream(&h).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    h.stop().await;
}
