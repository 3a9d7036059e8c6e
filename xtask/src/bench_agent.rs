//! `agent` section of `cargo xtask bench`: the agent's own footprint with
//! 50 configured services (50 created, never started, FROM-scratch
//! containers). Once every service reads `stopped` and the agent has
//! settled, its resident set (`VmRSS`, with the anonymous/file split) is
//! read from `/proc/<pid>/status`, then its CPU time (utime + stime from
//! `/proc/<pid>/stat`) over 60 idle seconds, with dockerd's over the same
//! window (the agent's polling costs dockerd CPU too).

use std::{fs, path::Path, thread, time::Duration};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::bench_stack::{
    cpu_sample, cpu_seconds, create_container, dockerd_pid, free_port, httpd_script, round_to,
    section_dir, start_agent, unique, wait_for, Containers, Image,
};

/// Configured services (one container each).
const SERVICES: usize = 50;
/// Quiet time after every service reads stopped, before measuring.
const SETTLE: Duration = Duration::from_secs(10);
/// The idle CPU window.
const IDLE: Duration = Duration::from_secs(60);

/// Runs the section.
pub fn agent(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let dir = section_dir(work, "agent")?;
    let mut containers = Containers(Vec::new());
    let mut services = String::new();
    for i in 0..SERVICES {
        let name = unique(&format!("idle-{i}"));
        // free_port() never hands out a port twice: each service has its own.
        let port = free_port()?;
        create_container(image, &name, port, &httpd_script("0"))?;
        services.push_str(&format!(
            "[[service]]\nname = \"idle{i}\"\nport = {port}\nmode = \"blocking\"\n\
             containers = [\"{name}\"]\nidle_timeout = \"1h\"\n\n"
        ));
        containers.0.push(name);
    }
    let agent = start_agent(&dir, &services)?;
    wait_for(
        || {
            agent
                .api_ok("/api/services")
                .ok()
                .and_then(|body| serde_json::from_str::<Vec<Value>>(&body).ok())
                .is_some_and(|list| {
                    list.len() == SERVICES && list.iter().all(|s| s["state"] == "stopped")
                })
        },
        Duration::from_secs(60),
    )
    .context("waiting for 50 stopped services")?;
    thread::sleep(SETTLE);
    let pid = agent.pid();
    let status = proc_status(pid)?;
    let dockerd = dockerd_pid()?;
    let (cpu_before, dockerd_before) = (cpu_sample(pid)?, cpu_seconds(dockerd)?);
    thread::sleep(IDLE);
    let (cpu_after, dockerd_after) = (cpu_sample(pid)?, cpu_seconds(dockerd)?);
    let status_after = proc_status(pid)?;
    agent.stop();
    drop(containers);
    let cpu_s = cpu_after.seconds_since(&cpu_before);
    let idle_percent = |s: f64| round_to(s / IDLE.as_secs_f64() * 100.0, 4);
    let field = |s: &Status, key: &str| s.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let rss = field(&status, "VmRSS").context("VmRSS")?;
    Ok(json!({
        "rss_bytes": rss,
        "rss_anon_bytes": field(&status, "RssAnon"),
        "rss_file_bytes": field(&status, "RssFile"),
        "rss_bytes_after_idle": field(&status_after, "VmRSS"),
        "peak_rss_bytes": field(&status_after, "VmHWM"),
        "threads": field(&status, "Threads"),
        "idle_cpu_percent": idle_percent(cpu_s),
        "dockerd_cpu_percent_meanwhile": idle_percent(dockerd_after - dockerd_before),
        "idle_cpu_seconds": round_to(cpu_s, 6),
        "services": SERVICES,
        "idle_seconds": IDLE.as_secs(),
        "targets": { "rss_bytes_max": 15 * 1024 * 1024, "idle_cpu_percent": 0 },
    }))
}

/// `/proc/<pid>/status` fields as (name, value); kB values in bytes.
type Status = Vec<(String, u64)>;

fn proc_status(pid: u32) -> anyhow::Result<Status> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).context("agent status")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let mut words = value.split_whitespace();
            let number: u64 = words.next()?.parse().ok()?;
            let scale = if words.next() == Some("kB") { 1024 } else { 1 };
            Some((key.to_owned(), number * scale))
        })
        .collect())
}
