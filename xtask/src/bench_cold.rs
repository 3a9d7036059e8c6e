//! `cold` section of `cargo xtask bench`: what a cold start costs on top of
//! the app's own start. Each round measures, for the same stopped container,
//! (A) `docker start` then polling the container address until the app's
//! first response byte, and (B) one request through nginx to the sleeping
//! service with the agent running, start to first response byte. The
//! overhead of a round is B − A; rounds alternate A and B. A B request
//! that does not get the app's page is counted as a failure (target 0) and
//! its round redone.
//!
//! `docker start` alone varies by ±100 ms here, which drowns B − A over a
//! few rounds. So each side is also split at the container's own
//! `State.StartedAt` (the app's process start): the part after it (app
//! start → first byte: the app's listen delay plus, in B, readiness
//! detection and the forward through the agent and nginx) compares with
//! no Docker noise, and the part before it (request → process start, in B
//! the wake path plus Docker's start) is reported beside it.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::bench_stack::{
    container_ip, create_container, docker, docker_out, free_port, httpd_script, percentile,
    round_to, section_dir, unique, Agent, Containers, Image, Nginx,
};

const ROUNDS: usize = 15;
/// Pause between a stop and the next measured start.
const SETTLE: Duration = Duration::from_secs(1);
/// The app listens this long after its container starts.
const APP_DELAY: &str = "1";

/// Runs the section in both modes.
pub fn cold(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let mut modes = serde_json::Map::new();
    for mode in ["blocking", "dynamic"] {
        modes.insert(
            mode.to_owned(),
            measure(work, image, mode).with_context(|| format!("{mode} mode"))?,
        );
    }
    Ok(Value::Object(modes))
}

fn measure(work: &Path, image: &Image, mode: &str) -> anyhow::Result<Value> {
    let name = unique(&format!("cold-{mode}"));
    let port = free_port()?;
    create_container(image, &name, port, &httpd_script(APP_DELAY))?;
    let _container = Containers(vec![name.clone()]);
    let dir = section_dir(work, &format!("cold-{mode}"))?;
    let nginx_port = free_port()?;
    let _nginx = Nginx::start(&dir, nginx_port, port)?;
    let agent = Agent::start(
        &dir,
        &format!(
            "[[service]]\nname = \"bench\"\nport = {port}\nmode = \"{mode}\"\ncontainers = [\"{name}\"]\n\
             idle_timeout = \"1h\"\nstart_timeout = \"60s\"\n"
        ),
    )?;
    agent.wait_state("bench", "stopped", Duration::from_secs(30))?;

    let mut overhead = Vec::new();
    // Every round's four parts, so an outlier shows on which side of the
    // app's process start it happened.
    let mut detail = Vec::new();
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    // Per side: ms from the app's process start to the first byte, and
    // from the request (or the start call) to the process start.
    let (mut after_start, mut before_start) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    // First requests through the agent that did not get the app's page
    // (the promise is none): counted and reported, the round redone.
    let mut failures: Vec<String> = Vec::new();
    let mut round = 0;
    'rounds: while overhead.len() < ROUNDS {
        if failures.len() >= ROUNDS {
            bail!("{} first requests failed: {failures:?}", failures.len());
        }
        round += 1;
        let mut pair = [0.0f64; 2];
        let mut split = [(0.0f64, 0.0f64); 2];
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for via_agent in order {
            docker(&["stop", &name])?;
            agent.wait_state("bench", "stopped", Duration::from_secs(30))?;
            // dockerd tears the old sandbox down after `stop` returns; a
            // start racing that clean-up is what made `docker start` vary
            // by ±100 ms, on both sides alike.
            thread::sleep(SETTLE);
            let began = SystemTime::now();
            let took = if via_agent {
                let front = SocketAddr::from(([127, 0, 0, 1], nginx_port));
                match first_byte(front, Duration::from_secs(60)) {
                    Ok(took) => took,
                    Err(e) => {
                        failures.push(format!("{e:#}"));
                        continue 'rounds;
                    }
                }
            } else {
                let started = Instant::now();
                start_via_api(&name)?;
                let addr: SocketAddr = format!("{}:80", container_ip(&name)?)
                    .parse()
                    .context("container address")?;
                loop {
                    if first_byte(addr, Duration::from_millis(500)).is_ok() {
                        break started.elapsed().as_secs_f64() * 1000.0;
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        bail!("the app never answered directly");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            };
            pair[usize::from(via_agent)] = took;
            let to_process = ms_between(began, process_started(&name)?);
            split[usize::from(via_agent)] = (took - to_process, to_process);
        }
        direct.push(pair[0]);
        through.push(pair[1]);
        overhead.push(pair[1] - pair[0]);
        for side in 0..2 {
            after_start[side].push(split[side].0);
            before_start[side].push(split[side].1);
        }
        detail.push(json!({
            "direct_to_process_ms": round_to(split[0].1, 1),
            "direct_after_process_ms": round_to(split[0].0, 1),
            "agent_to_process_ms": round_to(split[1].1, 1),
            "agent_after_process_ms": round_to(split[1].0, 1),
        }));
    }
    let [after_direct, after_agent] = &mut after_start;
    let [before_direct, before_agent] = &mut before_start;
    let after_overhead: Vec<f64> = after_agent
        .iter()
        .zip(after_direct.iter())
        .map(|(b, a)| b - a)
        .collect();
    agent.stop();
    let each: Vec<f64> = overhead.iter().map(|v| round_to(*v, 1)).collect();
    let p50 = percentile(&mut overhead.clone(), 0.5);
    let p99 = percentile(&mut overhead, 0.99);
    Ok(json!({
        "overhead_ms_p50": round_to(p50, 1),
        "overhead_ms_p99": round_to(p99, 1),
        "overhead_ms_each_round": each,
        "rounds_detail": detail,
        "direct_first_byte_ms_p50": round_to(percentile(&mut direct, 0.5), 1),
        "through_agent_first_byte_ms_p50": round_to(percentile(&mut through, 0.5), 1),
        "after_app_start_overhead_ms_p50": round_to(percentile(&mut after_overhead.clone(), 0.5), 1),
        "after_app_start_overhead_ms_p99": round_to(percentile(&mut after_overhead.clone(), 0.99), 1),
        "app_start_to_first_byte_ms_p50": {
            "direct": round_to(percentile(after_direct, 0.5), 1),
            "through_agent": round_to(percentile(after_agent, 0.5), 1),
        },
        "to_process_start_ms_p50": {
            "direct_start_call": round_to(percentile(before_direct, 0.5), 1),
            "through_agent_request": round_to(percentile(before_agent, 0.5), 1),
        },
        "rounds": ROUNDS,
        "failed_first_requests": failures.len(),
        "failures": failures,
        "app_listen_delay_s": APP_DELAY,
    }))
}

/// The container's last `State.StartedAt` (its process start).
fn process_started(name: &str) -> anyhow::Result<SystemTime> {
    let text = docker_out(&["inspect", "-f", "{{.State.StartedAt}}", name])?;
    humantime::parse_rfc3339(text.trim())
        .with_context(|| format!("StartedAt of {name}: {:?}", text.trim()))
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Milliseconds from now to the first response byte of `GET /` at `addr`.
fn first_byte(addr: SocketAddr, timeout: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(
        b"GET / HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )?;
    let mut byte = [0u8; 1];
    if stream.read(&mut byte)? == 0 {
        bail!("closed without a byte");
    }
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let mut rest = byte.to_vec();
    let _ = stream.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest);
    if !answer.contains("cold bench") {
        bail!(
            "unexpected answer from {addr}: {:?}",
            answer.chars().take(300).collect::<String>()
        );
    }
    Ok(took)
}

/// `docker start` through the Engine API socket, as the agent does (no
/// CLI process start-up in the measurement).
fn start_via_api(name: &str) -> anyhow::Result<()> {
    let mut socket =
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").context("docker socket")?;
    write!(
        socket,
        "POST /v1.41/containers/{name}/start HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    if !(answer.starts_with("HTTP/1.0 204") || answer.starts_with("HTTP/1.1 204")) {
        bail!("starting {name}: {}", answer.lines().next().unwrap_or(""));
    }
    Ok(())
}
