//! `warm` section of `cargo xtask bench`: what the agent costs a warm
//! service. Load through nginx → published port → container (busybox
//! httpd), (A) with the agent running, its programs attached and the
//! service ready, vs (B) the same stack with no agent loaded (the agent is
//! started and stopped around each A round). Rounds alternate which side
//! goes first; medians of requests/s and p50/p99 latency are reported, and
//! the ratios are medians of each round's A/B ratio (adjacent in time).
//!
//! The load generator, nginx, docker-proxy, the container and the agent all
//! share the machine's cores, so absolute numbers measure the whole box.

use std::{
    net::SocketAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{
    bench_load,
    bench_stack::{
        cpu_seconds, create_container, docker, dockerd_pid, free_port, httpd_script, median,
        round_to, section_dir, start_agent, unique, wait_for, wait_healthy, Agent, Containers,
        Image, Nginx,
    },
};

/// Rounds per side.
const ROUNDS: usize = 7;
/// Wait after the agent reads the service ready, before the load.
const SETTLE: Duration = Duration::from_secs(2);
/// Client connections of the load (keep-alive, each one in flight).
const CONCURRENCY: usize = 16;
/// Unrecorded load before each round.
const WARMUP: Duration = Duration::from_secs(1);
/// Recorded load per round.
const ROUND: Duration = Duration::from_secs(5);

/// Runs the section.
pub fn warm(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let dir = section_dir(work, "warm")?;
    let name = unique("warm");
    let port = free_port()?;
    create_container(image, &name, port, &httpd_script("0"))?;
    let _container = Containers(vec![name.clone()]);
    docker(&["start", &name])?;
    let nginx_port = free_port()?;
    let _nginx = Nginx::start_quiet(&dir, nginx_port, port)?;
    let front = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let app_answers = || {
        autostop_fixtures::http::get(front, "/", &[], Duration::from_secs(10))
            .is_ok_and(|r| r.status == 200)
    };
    wait_for(app_answers, Duration::from_secs(30)).context("the app through nginx")?;
    let services = format!(
        "[[service]]\nname = \"warm\"\nport = {port}\nmode = \"blocking\"\ncontainers = [\"{name}\"]\n\
         idle_timeout = \"1h\"\n"
    );

    let (mut rps, mut p50, mut p99, mut errors) =
        ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]], [0, 0]);
    let mut agent_setup_s = Vec::new();
    // CPU use during the load, % of one core (warm-up included).
    let (mut agent_cpu, mut dockerd_cpu) = (Vec::new(), [vec![], vec![]]);
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for with_agent in order {
            let agent = if with_agent {
                let started = Instant::now();
                let agent = start_agent(&dir, &services)?;
                agent.wait_state("warm", "ready", Duration::from_secs(30))?;
                let health = wait_healthy(&agent)?;
                if !health.contains("\"datapath_attached\":true") {
                    bail!("the agent's datapath is not attached: {health}");
                }
                agent_setup_s.push(started.elapsed().as_secs_f64());
                // Let its start-up work (first Docker refresh, label scan,
                // samples) finish: the load measures the warm steady state.
                thread::sleep(SETTLE);
                Some(agent)
            } else {
                None
            };
            let dockerd = dockerd_pid()?;
            let agent_pid = agent.as_ref().map(Agent::pid);
            let before = (
                cpu_seconds(dockerd)?,
                agent_pid.map(cpu_seconds).transpose()?,
            );
            let result = bench_load::run(front, CONCURRENCY, WARMUP, ROUND)?;
            let load_s = (WARMUP + ROUND).as_secs_f64();
            let percent = |s: f64| s / load_s * 100.0;
            dockerd_cpu[usize::from(!with_agent)].push(percent(cpu_seconds(dockerd)? - before.0));
            if let (Some(pid), Some(before)) = (agent_pid, before.1) {
                agent_cpu.push(percent(cpu_seconds(pid)? - before));
            }
            if let Some(agent) = agent {
                // The agent must not have touched the warm service.
                if agent.state("warm").ok().as_deref() != Some("ready") {
                    bail!("the service left ready during the load");
                }
                agent.stop();
            }
            let side = usize::from(!with_agent);
            rps[side].push(result.rps());
            p50[side].push(result.latency_ms(0.5));
            p99[side].push(result.latency_ms(0.99));
            errors[side] += result.errors;
        }
    }
    // Ratios pair each A round with the B round next to it in time, so
    // slow drift (other load on the box) cancels; then the median.
    let paired = |v: &[Vec<f64>; 2]| {
        let mut ratios: Vec<f64> = v[0].iter().zip(&v[1]).map(|(a, b)| a / b).collect();
        median(&mut ratios)
    };
    let (rps_ratio, p99_ratio) = (paired(&rps), paired(&p99));
    let [rps_with, rps_without] = rps.map(|mut v| median(&mut v));
    let [p50_with, p50_without] = p50.map(|mut v| median(&mut v));
    let [p99_with, p99_without] = p99.map(|mut v| median(&mut v));
    Ok(json!({
        "rps_ratio": round_to(rps_ratio, 3),
        "p99_ratio": round_to(p99_ratio, 3),
        "ratio_of_medians": {
            "rps": round_to(rps_with / rps_without, 3),
            "p99": round_to(p99_with / p99_without, 3),
        },
        "rps_with_agent": rps_with.round(),
        "rps_without_agent": rps_without.round(),
        "p50_ms_with_agent": round_to(p50_with, 3),
        "p50_ms_without_agent": round_to(p50_without, 3),
        "p99_ms_with_agent": round_to(p99_with, 3),
        "p99_ms_without_agent": round_to(p99_without, 3),
        "errors_with_agent": errors[0],
        "errors_without_agent": errors[1],
        "agent_cpu_percent_during_load": round_to(median(&mut agent_cpu), 2),
        "dockerd_cpu_percent_with_agent": round_to(median(&mut dockerd_cpu[0]), 2),
        "dockerd_cpu_percent_without_agent": round_to(median(&mut dockerd_cpu[1]), 2),
        "agent_settle_s": SETTLE.as_secs_f64(),
        "agent_start_to_ready_s_median": round_to(median(&mut agent_setup_s), 2),
        "rounds": ROUNDS,
        "round_seconds": ROUND.as_secs_f64(),
        "concurrency": CONCURRENCY,
        "load": format!(
            "{CONCURRENCY} keep-alive HTTP/1.1 clients (xtask threads) → nginx (1 worker, new upstream \
             connection per request) → published port (docker-proxy) → busybox httpd; \
             everything shares the machine's cores"
        ),
        "targets": { "rps_ratio_min": 0.99, "p99_ratio_max": 1.02 },
    }))
}
