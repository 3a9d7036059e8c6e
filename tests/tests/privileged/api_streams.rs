//! Privileged end to end: event streams have their own slots
//! (`agent.max_event_streams`, 16 by default) against `autostop run`. 80
//! local clients that open `GET /api/events` and never read (any local
//! user can, without a token on a loopback listener) leave `autostop
//! status` answering; the 17th stream is refused with 503 and
//! `Retry-After`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use autostop_tests::agent::{
    cli, container, httpd_script, service_toml, setup, AgentConfig, RunningAgent,
};
use autostop_tests::docker::free_port;

/// Asks for the events stream on a new connection and reads nothing.
fn open_stream(api: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(api).expect("connect to the API");
    let request =
        format!("GET /api/events HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request");
    stream
}

/// The response head on `stream` (lowercased), read byte by byte so the
/// stream's events stay unread.
fn head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no complete head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

#[test]
fn privileged_idle_event_readers_leave_autostop_status_answering() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("streams-ok", 0));
    let config = AgentConfig::new(&service_toml("web", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("web", "stopped", Duration::from_secs(10));

    // More idle readers than the API has request slots (64).
    let mut readers: Vec<TcpStream> = (0..80).map(|_| open_stream(agent.status)).collect();
    let opened = Instant::now();
    let (ok, out) = cli(&config, &["status"], Duration::from_secs(30));
    eprintln!("autostop status with 80 readers: {:?}", opened.elapsed());
    assert!(ok && out.contains("web"), "{out}");

    // 16 streams served, the others told to come back.
    let mut streams = Vec::new();
    let mut refused = 0;
    for (i, reader) in readers.iter_mut().enumerate() {
        let head = head(reader);
        if head.starts_with("http/1.1 200") {
            streams.push(i);
        } else {
            assert!(
                head.starts_with("http/1.1 503") && head.contains("retry-after: 5\r\n"),
                "reader {i}: {head}"
            );
            refused += 1;
        }
    }
    assert_eq!((streams.len(), refused), (16, 64), "served {streams:?}");
    // With the 16 streams still open, the 17th is refused too.
    let mut seventeenth = open_stream(agent.status);
    let refusal = head(&mut seventeenth);
    assert!(
        refusal.starts_with("http/1.1 503") && refusal.contains("retry-after: 5\r\n"),
        "{refusal}"
    );
    let mut body = String::new();
    seventeenth
        .read_to_string(&mut body)
        .expect("closed after the refusal");
    assert!(body.contains("agent.max_event_streams"), "{body}");
    // Streams that end give their slots back.
    drop(readers);
    let reopened = autostop_tests::eventually(Duration::from_secs(10), || {
        head(&mut open_stream(agent.status)).starts_with("http/1.1 200")
    });
    assert!(reopened, "no stream slot came back once the readers left");
}
