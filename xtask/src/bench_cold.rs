//! `cold` section of `cargo xtask bench`: what a cold start costs on top of
//! the app's own start. Each round measures, for the same stopped container,
//! (A) `docker start` then polling the container address until the app's
//! first response byte, and (B) one request through nginx to the sleeping
//! service with the agent running, start to first response byte. The
//! overhead of a round is B − A; rounds alternate A and B. A B request
//! that does not get the app's page is counted as a failure (target 0) and
//! its round redone.
//!
//! `docker start` alone varies by tens of ms from one start to the next,
//! which drowns B − A (two different starts) over a few rounds. So the
//! reported overhead takes the container's own start-to-listen time from
//! the very start it measures: the app prints the time just before it
//! execs its server (`adjtimex`, µs), and the agent logs the time just
//! before it calls Docker's start (`event="container_start"`). Overhead =
//! (request → first byte) − (start call → listen mark): the wake path,
//! readiness detection and the forward through agent and nginx, with no
//! Docker start in it. The same figure for A (start call = the bench's own
//! call) is the measurement's floor: exec to listen, the 1 ms poll and a
//! request straight to the app. B − A and a split at the container's
//! `State.StartedAt` are reported beside it.

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
    container_ip, create_container, docker, free_port, httpd_script, percentile, round_to,
    section_dir, start_agent, unique, Containers, Image, Nginx,
};

const ROUNDS: usize = 15;
/// Pause between a stop and the next measured start.
const SETTLE: Duration = Duration::from_secs(1);
/// The app listens this long after its container starts.
const APP_DELAY: &str = "1";
/// What the agent logs right before it calls Docker's start.
pub(crate) const START_CALL_EVENT: &str = "event=\"container_start\"";
/// What the agent logs once its readiness probe got through.
const READY_EVENT: &str = "event=\"ready\"";

/// Runs the section in both modes.
pub fn cold(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let mut modes = serde_json::Map::new();
    let mut handbacks = Vec::new();
    for mode in ["blocking", "dynamic"] {
        let value = measure(work, image, mode).with_context(|| format!("{mode} mode"))?;
        handbacks.extend(
            value["rounds_detail"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|round| round["handback_ms"].as_f64()),
        );
        modes.insert(mode.to_owned(), value);
    }
    // Both modes' rounds: the hand-back does not depend on the mode.
    modes.insert(
        "handback_ms_p50".to_owned(),
        json!(round_to(percentile(&mut handbacks.clone(), 0.5), 2)),
    );
    modes.insert(
        "handback_ms_p99".to_owned(),
        json!(round_to(percentile(&mut handbacks, 0.99), 2)),
    );
    modes.insert("handback_target_ms_p99".to_owned(), json!(5));
    Ok(Value::Object(modes))
}

fn measure(work: &Path, image: &Image, mode: &str) -> anyhow::Result<Value> {
    let name = unique(&format!("cold-{mode}"));
    let port = free_port()?;
    create_container(image, &name, port, &httpd_script(APP_DELAY))?;
    let _container = Containers(vec![name.clone()]);
    let dir = section_dir(work, &format!("cold-{mode}"))?;
    let nginx_port = free_port()?;
    let _nginx = Nginx::start_quiet(&dir, nginx_port, port)?;
    let agent = start_agent(
        &dir,
        &format!(
            "[[service]]\nname = \"bench\"\nport = {port}\nmode = \"{mode}\"\ncontainers = [\"{name}\"]\n\
             idle_timeout = \"1h\"\nstart_timeout = \"60s\"\n"
        ),
    )?;
    agent.wait_state("bench", "stopped", Duration::from_secs(30))?;

    let agent_log = dir.join("agent.log");
    let mut overhead = Vec::new();
    // Per round: (request or start call → first byte) − (start call →
    // listen mark), through the agent and direct.
    let (mut same_start, mut floor) = (Vec::new(), Vec::new());
    // Every round's four parts, so an outlier shows on which side of the
    // app's process start it happened.
    let mut detail = Vec::new();
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    // Through the agent: readiness → ports on the stock path, per round.
    let mut handbacks = Vec::new();
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
        let mut own_start = [0.0f64; 2];
        // Through the agent: request → start call, and listen mark → first
        // byte (the two parts of its overhead).
        let mut parts = (0.0f64, 0.0f64);
        // Through the agent: listen mark → the agent's ready log line.
        let mut detection = 0.0f64;
        let mut handback = 0.0f64;
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
            // When Docker was asked to start the container.
            let mut start_call = began;
            let took = if via_agent {
                let front = SocketAddr::from(([127, 0, 0, 1], nginx_port));
                match first_byte(front, Duration::from_secs(60)) {
                    Ok(took) => {
                        start_call = agent_event(&agent_log, START_CALL_EVENT, began)?;
                        took
                    }
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
            let side = usize::from(via_agent);
            pair[side] = took;
            let to_process = ms_between(began, process_started(&name)?);
            split[side] = (took - to_process, to_process);
            let mark = listen_mark(&name, began)?;
            let listening = ms_between(start_call, mark);
            own_start[side] = took - listening;
            if via_agent {
                let to_call = ms_between(began, start_call);
                parts = (to_call, took - to_call - listening);
                detection = ms_between(mark, agent_event(&agent_log, READY_EVENT, began)?);
                handback = last_handback_ms(&agent_log)?;
            }
        }
        direct.push(pair[0]);
        through.push(pair[1]);
        handbacks.push(handback);
        overhead.push(pair[1] - pair[0]);
        same_start.push(own_start[1]);
        floor.push(own_start[0]);
        for side in 0..2 {
            after_start[side].push(split[side].0);
            before_start[side].push(split[side].1);
        }
        detail.push(json!({
            "overhead_ms": round_to(own_start[1], 1),
            "floor_ms": round_to(own_start[0], 1),
            "request_to_start_call_ms": round_to(parts.0, 1),
            "listen_mark_to_first_byte_ms": round_to(parts.1, 1),
            "listen_mark_to_ready_ms": round_to(detection, 1),
            "handback_ms": round_to(handback, 2),
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
    let each: Vec<f64> = same_start.iter().map(|v| round_to(*v, 1)).collect();
    Ok(json!({
        "overhead_ms_p50": round_to(percentile(&mut same_start.clone(), 0.5), 1),
        "overhead_ms_p99": round_to(percentile(&mut same_start, 0.99), 1),
        "overhead_ms_each_round": each,
        "handback_ms_p50": round_to(percentile(&mut handbacks.clone(), 0.5), 2),
        "handback_ms_p99": round_to(percentile(&mut handbacks, 0.99), 2),
        "floor_ms_p50": round_to(percentile(&mut floor, 0.5), 1),
        "paired_difference_ms_p50": round_to(percentile(&mut overhead.clone(), 0.5), 1),
        "paired_difference_ms_p99": round_to(percentile(&mut overhead, 0.99), 1),
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
    let text = docker(&["inspect", "-f", "{{.State.StartedAt}}", name])?;
    humantime::parse_rfc3339(text.trim())
        .with_context(|| format!("StartedAt of {name}: {:?}", text.trim()))
}

/// The time the app printed just before it execs its server, in this
/// start (after `began`): the `time.tv_sec` / `time.tv_usec` lines of
/// busybox `adjtimex` in the container's output.
pub(crate) fn listen_mark(name: &str, began: SystemTime) -> anyhow::Result<SystemTime> {
    let out = docker(&["logs", "--tail", "2", name])?;
    let field = |key: &str| -> anyhow::Result<u64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {key} in the output of {name}: {out:?}"))
    };
    let mark = SystemTime::UNIX_EPOCH
        + Duration::from_secs(field("time.tv_sec:")?)
        + Duration::from_micros(field("time.tv_usec:")?);
    if mark < began {
        bail!("{name} printed no listen mark in this start (last: {out:?})");
    }
    Ok(mark)
}

/// The time of the agent's last log line with `event` (one of the
/// `*_EVENT` fields above), which must be after `began`.
pub(crate) fn agent_event(
    log: &Path,
    event: &str,
    began: SystemTime,
) -> anyhow::Result<SystemTime> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(event))
        .with_context(|| format!("no {event} in {}", log.display()))?;
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let at = humantime::parse_rfc3339(stamp)
        .with_context(|| format!("time of {line:?} in {}", log.display()))?;
    if at < began {
        bail!("the agent logged no {event} in this round (last: {line:?})");
    }
    Ok(at)
}

/// The `handback_ms` of the agent's last `ready` line: from readiness to
/// the ports being back on the stock path (warm-up element gone, SYN_SENT
/// cleared, sk_lookup entry removed), as the agent measured it.
pub(crate) fn last_handback_ms(log: &Path) -> anyhow::Result<f64> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(READY_EVENT))
        .with_context(|| format!("no {READY_EVENT} in {}", log.display()))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("handback_ms="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no handback_ms in {line:?}"))
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
pub(crate) fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Milliseconds from now to the first response byte of `GET /` at `addr`.
pub(crate) fn first_byte(addr: SocketAddr, timeout: Duration) -> anyhow::Result<f64> {
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
