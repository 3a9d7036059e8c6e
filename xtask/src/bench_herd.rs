//! `herd` section of `cargo xtask bench`: a thundering herd on a sleeping
//! service. 1,000 connections are opened straight to the published port of
//! a stopped blocking-mode service (no nginx in between, so nginx's worker
//! limits play no part) and each sends one request before any is answered;
//! the app listens 1 s after its container starts. Counts the connections
//! answered with the app's page and the starts, both from the agent's
//! `autostop_starts_total` and from Docker's own `start` events.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::bench_stack::{
    create_container, free_port, httpd_script, raise_nofile, round_to, section_dir, start_agent,
    unique, Containers, Image,
};

/// Connections in the herd.
const CONNECTIONS: usize = 1000;
/// How long the whole herd may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Runs the section.
pub fn herd(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let nofile = raise_nofile()?;
    let dir = section_dir(work, "herd")?;
    let name = unique("herd");
    let port = free_port()?;
    create_container(image, &name, port, &httpd_script("1"))?;
    let _container = Containers(vec![name.clone()]);
    let agent = start_agent(
        &dir,
        &format!(
            "[[service]]\nname = \"herd\"\nport = {port}\nmode = \"blocking\"\ncontainers = [\"{name}\"]\n\
             idle_timeout = \"1h\"\nstart_timeout = \"60s\"\n"
        ),
    )?;
    agent.wait_state("herd", "stopped", Duration::from_secs(30))?;
    let starts_before = agent.metric("autostop_starts_total", "herd")?;
    let since = unix_now();

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut streams = Vec::with_capacity(CONNECTIONS);
    let mut connect_errors = 0;
    for _ in 0..CONNECTIONS {
        match open(addr) {
            Ok(stream) => streams.push(stream),
            Err(_) => connect_errors += 1,
        }
    }
    let opened_ms = started.elapsed().as_secs_f64() * 1000.0;
    let deadline = started + ANSWER_WITHIN;
    let mut answered = 0;
    for mut stream in streams {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            continue;
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        if answer.starts_with("HTTP/1.") && answer.contains("cold bench") {
            answered += 1;
        }
    }
    let all_answered_ms = started.elapsed().as_secs_f64() * 1000.0;
    let starts = agent.metric("autostop_starts_total", "herd")? - starts_before;
    let state = agent.state("herd").unwrap_or_default();
    // Readiness → ports on the stock path, while the herd is handed over.
    let handback_ms = crate::bench_cold::last_handback_ms(&dir.join("agent.log"))?;
    agent.stop();
    let docker_starts =
        autostop_fixtures::docker::start_events(&name, since).context("docker events")?;
    Ok(json!({
        "connections": CONNECTIONS,
        "answered": answered,
        "starts": starts.round(),
        "docker_start_events": docker_starts,
        "connect_errors": connect_errors,
        "state_after": state,
        "open_all_ms": round_to(opened_ms, 1),
        "all_answered_ms": round_to(all_answered_ms, 1),
        "handback_ms": round_to(handback_ms, 2),
        "app_listen_delay_s": 1,
        "path": "direct to the published port (blocking mode, no nginx)",
        "nofile_limit": nofile,
        "targets": { "connections": 1000, "answered": 1000, "starts": 1 },
    }))
}

/// Opens one connection and sends its request (answered once ready).
fn open(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    Ok(stream)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
