//! `scale` section of `cargo xtask bench`: the agent with 500 managed
//! services (500 created, never started, `FROM scratch` busybox containers,
//! each publishing its own 127.0.0.1 port; a generated config). Made and
//! removed through Docker's API, four calls in flight
//! ([`crate::bench_dockerapi`]); a guard removes them even when the section
//! fails. Measured, in this order:
//!
//! - `adopt_s`: agent start to every service read `stopped` in the API;
//! - `rss_bytes`, then `idle_cpu_percent_stopped` and `wakeups_per_s` over
//!   60 s with every service stopped (and dockerd's CPU meanwhile);
//! - `api_services_ms_p99` over 300 `GET /api/services`, and
//!   `status_wall_ms` (median of 10 runs of `autostop status`);
//! - the cold-start overhead of one of them (`bench_cold`'s same-start
//!   figure: request → first byte minus the agent's start call → the app's
//!   listen mark), 7 rounds with 499 neighbours, then with an agent
//!   managing that one service only: `cold_overhead_ratio`;
//! - `idle_cpu_percent_ready` and its wake-ups over 60 s with 50 of them
//!   ready and idle;
//! - `datapath_ratio`: the classifier's `BPF_PROG_TEST_RUN` time per
//!   counted packet with 500 targets over 1 (`bench_testrun`).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{
    bench_cold::{agent_event, first_byte, listen_mark, ms_between, START_CALL_EVENT},
    bench_dockerapi::{self as api, in_flight},
    bench_scale_probe::{proc_field, Window},
    bench_stack::{
        free_port, httpd_script, median, percentile, round_to, section_dir, start_agent, unique,
        wait_for, Agent, Image, LABEL,
    },
    run,
};

/// Managed services (one container each).
pub const SERVICES: usize = 500;
/// Services started for the ready window.
const READY: usize = 50;
/// Quiet time before each idle window.
const SETTLE: Duration = Duration::from_secs(10);
/// Each idle window.
const IDLE: Duration = Duration::from_secs(60);
/// `GET /api/services` requests timed.
const API_REQUESTS: usize = 300;
/// `autostop status` runs timed.
const STATUS_RUNS: usize = 10;
/// Cold starts timed on each side.
const COLD_ROUNDS: usize = 7;
/// Docker API calls in flight.
const WORKERS: usize = 4;

/// Containers made through the API, removed (four at a time) when dropped.
struct ApiContainers(Vec<String>);

impl Drop for ApiContainers {
    fn drop(&mut self) {
        if let Err(e) = in_flight(&self.0, WORKERS, |name| api::remove(name)) {
            eprintln!("bench scale: removing containers: {e:#}");
        }
    }
}

/// Runs the section.
pub fn scale(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let dir = section_dir(work, "scale")?;
    let mut services: Vec<(String, u16)> = Vec::with_capacity(SERVICES);
    for i in 0..SERVICES {
        services.push((unique(&format!("scale-{i}")), free_port()?));
    }
    let guard = ApiContainers(services.iter().map(|(n, _)| n.clone()).collect());
    let script = httpd_script("0");
    let (label_key, label_value) = LABEL.split_once('=').context("bench label")?;
    let created = Instant::now();
    in_flight(&services, WORKERS, |(name, port)| {
        let body = api::create_body(&image.tag, *port, &script, &[(label_key, label_value)]);
        api::create(name, &body)
    })
    .context("creating the containers")?;
    let create_s = created.elapsed().as_secs_f64();
    eprintln!("bench scale: {SERVICES} containers created in {create_s:.1} s");

    let began = Instant::now();
    let agent = start_agent(&dir, &config(&services))?;
    // Adopted: none `unknown` any more (all stopped, unless a stranger's
    // connection to one of their ports woke it meanwhile).
    wait_for(
        || count_in_state(&agent, "unknown") == Some(0),
        Duration::from_secs(120),
    )
    .context("waiting for 500 adopted services")?;
    let adopt_s = began.elapsed().as_secs_f64();
    thread::sleep(SETTLE);
    // Another program's connection to a published port wakes its service
    // (that is the product working): the window says how many slept.
    let stopped_count = count_in_state(&agent, "stopped");
    let pid = agent.pid();
    let rss = proc_field(pid, "VmRSS")?;
    let stopped = Window::measure(pid, IDLE)?;
    let rss_after = proc_field(pid, "VmRSS")?;

    let mut api_ms = Vec::with_capacity(API_REQUESTS);
    for _ in 0..API_REQUESTS {
        let t = Instant::now();
        agent.api_ok("/api/services")?;
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let status_ms = status_wall_ms(&dir.join("autostop.toml"))?;

    let (name0, port0) = services[0].clone();
    let cold_many = cold_overheads(&agent, &dir, &name0, port0)?;

    for i in 1..=READY {
        act(&agent, &format!("s{i}"), "start")?;
    }
    wait_for(
        || {
            (1..=READY).all(|i| {
                agent
                    .state(&format!("s{i}"))
                    .is_ok_and(|state| state == "ready")
            })
        },
        Duration::from_secs(180),
    )
    .context("waiting for s1..s50 to be ready")?;
    thread::sleep(SETTLE);
    let ready_count = count_in_state(&agent, "ready");
    let ready = Window::measure(pid, IDLE)?;
    let peak_rss = proc_field(pid, "VmHWM")?;
    agent.stop();

    let one_dir = section_dir(work, "scale-one")?;
    let one = start_agent(&one_dir, &config(&services[..1]))?;
    one.wait_state("s0", "stopped", Duration::from_secs(30))?;
    let cold_one = cold_overheads(&one, &one_dir, &name0, port0)?;
    one.stop();
    drop(guard);

    let datapath = crate::bench::datapath_scaling(SERVICES)?;
    let (many, single) = (
        median(&mut cold_many.clone()),
        median(&mut cold_one.clone()),
    );
    let each = |v: &[f64]| v.iter().map(|x| round_to(*x, 1)).collect::<Vec<_>>();
    Ok(json!({
        "services": SERVICES,
        "containers_created_s": round_to(create_s, 1),
        "adopt_s": round_to(adopt_s, 2),
        "rss_bytes": rss,
        "rss_bytes_after_idle": rss_after,
        "peak_rss_bytes": peak_rss,
        "idle_cpu_percent_stopped": stopped.cpu_percent(),
        "wakeups_per_s": stopped.wakeups_per_s(),
        "dockerd_cpu_percent_stopped": stopped.dockerd_cpu_percent(),
        "threads": stopped.threads,
        "docker_events_stopped_window": stopped.docker_events,
        "docker_events_ready_window": ready.docker_events,
        "idle_cpu_percent_ready": ready.cpu_percent(),
        "wakeups_per_s_ready": ready.wakeups_per_s(),
        "dockerd_cpu_percent_ready": ready.dockerd_cpu_percent(),
        "ready_services": READY,
        "stopped_services_in_stopped_window": stopped_count,
        "ready_services_in_ready_window": ready_count,
        "api_services_ms_p50": round_to(percentile(&mut api_ms.clone(), 0.5), 2),
        "api_services_ms_p99": round_to(percentile(&mut api_ms, 0.99), 2),
        "api_requests": API_REQUESTS,
        "status_wall_ms": round_to(median(&mut status_ms.clone()), 1),
        "status_wall_ms_each": each(&status_ms),
        "cold_overhead_ms_p50_with_499_neighbours": round_to(many, 1),
        "cold_overhead_ms_p50_alone": round_to(single, 1),
        "cold_overhead_ms_each_with_499_neighbours": each(&cold_many),
        "cold_overhead_ms_each_alone": each(&cold_one),
        "cold_overhead_ratio": round_to(many / single, 3),
        "datapath": datapath,
        "datapath_ratio": datapath["ratio"],
        "idle_seconds": IDLE.as_secs(),
        "targets": {
            "idle_cpu_percent_stopped_max": 0.01,
            "idle_cpu_percent_ready_max": 0.05,
            "wakeups_per_s_max": 1,
            "rss_bytes_max": 40 * 1024 * 1024,
            "adopt_s_max": 5,
            "api_services_ms_p99_max": 20,
            "status_wall_ms_max": 100,
            "cold_overhead_ratio_max": 1.1,
            "datapath_ratio_max": 1.1,
        },
    }))
}

/// The `[[service]]` tables: `sN` on its container's port, blocking mode,
/// an hour's idle timeout (nothing stops during the windows).
fn config(services: &[(String, u16)]) -> String {
    services
        .iter()
        .enumerate()
        .map(|(i, (name, port))| {
            format!(
                "[[service]]\nname = \"s{i}\"\nport = {port}\nmode = \"blocking\"\n\
                 containers = [\"{name}\"]\nidle_timeout = \"1h\"\nstart_timeout = \"60s\"\n\n"
            )
        })
        .collect()
}

/// How many services the API lists in `state` (`None`: no answer).
fn count_in_state(agent: &Agent, state: &str) -> Option<usize> {
    let body = agent.api_ok("/api/services").ok()?;
    let list: Vec<Value> = serde_json::from_str(&body).ok()?;
    Some(list.iter().filter(|s| s["state"] == state).count())
}

/// Wall time of `autostop status` (the CLI's start-up included), per run.
fn status_wall_ms(config: &Path) -> anyhow::Result<Vec<f64>> {
    let mut runs = Vec::with_capacity(STATUS_RUNS);
    for _ in 0..STATUS_RUNS {
        let t = Instant::now();
        let status = Command::new(run::agent_binary(true))
            .arg("status")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .status()
            .context("autostop status")?;
        if !status.success() {
            bail!("autostop status failed: {status}");
        }
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(runs)
}

/// [`COLD_ROUNDS`] cold starts of service `s0` (container `name`, port
/// `port`) straight to its port: each round's overhead is request → first
/// byte minus the agent's start call → the app's listen mark (no Docker
/// start in it).
fn cold_overheads(agent: &Agent, dir: &Path, name: &str, port: u16) -> anyhow::Result<Vec<f64>> {
    let log = dir.join("agent.log");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut overheads = Vec::with_capacity(COLD_ROUNDS);
    for _ in 0..COLD_ROUNDS {
        if agent.state("s0")? != "stopped" {
            act(agent, "s0", "stop")?;
            agent.wait_state("s0", "stopped", Duration::from_secs(30))?;
        }
        // As in `cold`: dockerd tears the old sandbox down after a stop.
        thread::sleep(Duration::from_secs(1));
        let began = SystemTime::now();
        let took = first_byte(addr, Duration::from_secs(60)).context("cold request")?;
        let start_call = agent_event(&log, START_CALL_EVENT, began)?;
        let mark = listen_mark(name, began)?;
        overheads.push(took - ms_between(start_call, mark));
    }
    act(agent, "s0", "stop")?;
    agent.wait_state("s0", "stopped", Duration::from_secs(30))?;
    Ok(overheads)
}

/// `POST /api/services/NAME/ACTION`, which must be accepted.
fn act(agent: &Agent, name: &str, action: &str) -> anyhow::Result<()> {
    let code = agent.act(name, action)?;
    if !(200..300).contains(&code) {
        bail!("{action} {name}: HTTP {code}");
    }
    Ok(())
}
