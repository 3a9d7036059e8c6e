//! `handover` section of `cargo xtask bench`: `autostop upgrade` while a
//! prober connects every millisecond or so to a service in a cold start
//! (its app never answers, so its port stays steered to the agent and
//! each connection is held, then dropped by the prober) and polls the
//! status API. `gap_ms` is the longest time during which a new connection
//! was refused or not accepted within 1 s (target 0); `total_ms` the
//! upgrade command's wall time; `connect_max_ms` the slowest handshake
//! seen (connections queue in the inherited backlog meanwhile);
//! `api_gap_ms` the same gap for the status API.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{
    bench_stack::{
        create_container, free_port, httpd_script, median, round_to, section_dir, start_agent,
        unique, wait_for, Containers, Image,
    },
    run,
};

/// Upgrades measured.
const ROUNDS: usize = 5;
/// Probing before and after each upgrade.
const AROUND: Duration = Duration::from_millis(500);
/// Pause between two probes.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// What the prober saw: the longest failure gap and the slowest success.
#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    attempts: u64,
    failures: u64,
    gap: Duration,
    slowest: Duration,
}

/// Connects to `addr` until `stop`, as fast as [`PROBE_EVERY`] allows.
fn probe(addr: SocketAddr, stop: &AtomicBool) -> Probe {
    let mut p = Probe::default();
    let mut failing_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let ok = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
        let took = began.elapsed();
        p.attempts += 1;
        if ok {
            p.slowest = p.slowest.max(took);
            if let Some(since) = failing_since.take() {
                p.gap = p.gap.max(since.elapsed());
            }
        } else {
            p.failures += 1;
            failing_since.get_or_insert(began);
        }
        thread::sleep(PROBE_EVERY);
    }
    if let Some(since) = failing_since {
        p.gap = p.gap.max(since.elapsed());
    }
    p
}

fn ms(d: Duration) -> f64 {
    round_to(d.as_secs_f64() * 1000.0, 2)
}

/// Runs the section.
pub fn handover(work: &Path, image: &Image) -> anyhow::Result<Value> {
    let dir = section_dir(work, "handover")?;
    let port = free_port()?;
    let name = unique("handover");
    create_container(image, &name, port, &httpd_script("3600"))?;
    let _containers = Containers(vec![name.clone()]);
    let services = format!(
        "[[service]]\nname = \"starting\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{name}\"]\nidle_timeout = \"1h\"\nstart_timeout = \"1h\"\n\
         max_held_connections = 10000\n\n"
    );
    let agent = start_agent(&dir, &services)?;
    let config = dir.join("autostop.toml");
    let service = SocketAddr::from(([127, 0, 0, 1], port));
    // The first connection starts the cold start that never ends.
    drop(TcpStream::connect(service).context("first connection")?);
    wait_for(
        || {
            agent
                .api_ok("/api/services")
                .is_ok_and(|b| b.contains("\"starting\""))
        },
        Duration::from_secs(30),
    )
    .context("waiting for the cold start")?;

    let mut totals = Vec::new();
    let (mut worst, mut api_worst) = (Probe::default(), Probe::default());
    let mut pids = Vec::new();
    for _ in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = [service, agent.status].map(|addr| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || probe(addr, &stop))
        });
        thread::sleep(AROUND);
        let began = Instant::now();
        let out = Command::new(run::agent_binary(true))
            .args(["upgrade", "--config"])
            .arg(&config)
            .output()
            .context("autostop upgrade")?;
        let total = began.elapsed();
        thread::sleep(AROUND);
        stop.store(true, Ordering::Relaxed);
        let [p, a] = probes.map(|t| t.join().unwrap_or_default());
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("upgrade failed: {text}");
        }
        pids.push(
            text.split("(pid ")
                .last()
                .and_then(|rest| rest.split(')').next())
                .and_then(|pid| pid.parse::<i32>().ok())
                .context("the new agent's pid")?,
        );
        totals.push(ms(total));
        for (into, from) in [(&mut worst, p), (&mut api_worst, a)] {
            into.attempts += from.attempts;
            into.failures += from.failures;
            into.gap = into.gap.max(from.gap);
            into.slowest = into.slowest.max(from.slowest);
        }
    }
    if let Some(last) = pids.last() {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*last), nix::sys::signal::SIGTERM);
    }
    drop(agent);
    Ok(json!({
        "gap_ms": ms(worst.gap),
        "total_ms": median(&mut totals.clone()),
        "total_ms_each": totals,
        "connect_max_ms": ms(worst.slowest),
        "connections": worst.attempts,
        "refused": worst.failures,
        "api_gap_ms": ms(api_worst.gap),
        "api_refused": api_worst.failures,
        "rounds": ROUNDS,
        "targets": { "gap_ms": 0 },
    }))
}

/// The section's rows: metric, value, target, verdict.
pub fn rows(h: &Value) -> Vec<(&'static str, String, &'static str, Option<bool>)> {
    if !h.is_object() || h.get("error").is_some() {
        return Vec::new();
    }
    vec![
        (
            "gap_ms",
            format!(
                "{} ({} of {} connections refused over {} upgrades; slowest handshake {} ms)",
                h["gap_ms"], h["refused"], h["connections"], h["rounds"], h["connect_max_ms"]
            ),
            "0",
            Some(h["gap_ms"].as_f64() == Some(0.0)),
        ),
        (
            "total_ms",
            format!("{} median ({})", h["total_ms"], h["total_ms_each"]),
            "",
            None,
        ),
        (
            "api_gap_ms",
            format!("{} ({} refused)", h["api_gap_ms"], h["api_refused"]),
            "",
            None,
        ),
    ]
}
