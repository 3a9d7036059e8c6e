//! `hibernate` section of `cargo xtask bench` (issue #20): for the heavy
//! app of the hibernate tests (`memapp`: 300 MiB touched, a 20 s boot),
//! the time to the whole first answer (TTFB; the answer is a few bytes)
//! after the agent (a) stopped it (`sleep = "stop"`: a cold boot), (b)
//! hibernated it (paused, memory to a 1 GiB swap file this section makes
//! and removes), (c) paused it only (the same with the swap file off); the
//! app's resident memory (its cgroup's `memory.usage_in_bytes`) awake and
//! in each state, and the page-in volume of the first request after a
//! hibernation (the cgroup's swap before minus after); and once, a first
//! request that touches every page (`/all`: the worst case). The disk's
//! read speed (`dd iflag=direct` of a file just written) is reported
//! beside it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use autostop_fixtures::{
    docker::inspect,
    http, memapp,
    swap::{self, SwapFile},
};
use serde_json::{json, Value};

use crate::bench_stack::{
    free_port, median, percentile, round_to, section_dir, start_agent, unique, Agent, Image,
};

/// Hibernate and pause rounds.
const ROUNDS: usize = 5;
/// Cold rounds (each is a 20 s boot).
const COLD_ROUNDS: usize = 2;
/// The app's memory and boot.
const MEM_MB: u32 = 300;
const BOOT_S: u32 = 20;
/// Idle timeout of the bench service.
const IDLE: &str = "2s";
/// How long a state change may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(120);

fn service(port: u16, container: &str, sleep: &str) -> String {
    format!(
        "[[service]]\nname = \"heavy\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{container}\"]\nidle_timeout = \"{IDLE}\"\nstart_timeout = \"90s\"\n\
         sleep = \"{sleep}\"\n"
    )
}

fn pid(container: &str) -> anyhow::Result<u32> {
    Ok(inspect(container, "{{.State.Pid}}")?.parse()?)
}

fn resident(container: &str) -> anyhow::Result<u64> {
    Ok(swap::container_cgroup_value(
        pid(container)?,
        "memory.usage_in_bytes",
    )?)
}

fn swapped(container: &str) -> anyhow::Result<u64> {
    Ok(swap::container_cgroup_stat(pid(container)?, "swap")?)
}

/// One request to the app: seconds to the whole answer; fails unless the
/// answer is the app's, with its memory intact.
fn ttfb(port: u16) -> anyhow::Result<f64> {
    ttfb_of(port, "/")
}

/// Like [`ttfb`] for `path` (`/all`: the app checks every page).
fn ttfb_of(port: u16, path: &str) -> anyhow::Result<f64> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let began = Instant::now();
    let response = http::get(addr, path, &[], Duration::from_secs(120))
        .with_context(|| format!("GET {path} on {addr}"))?;
    let took = began.elapsed().as_secs_f64();
    let body = response.text();
    if response.status != 200 || memapp::intact_count(&body).is_none() {
        bail!("unexpected answer {} {body:?}", response.status);
    }
    Ok(took)
}

fn wait_state(agent: &Agent, state: &str) -> anyhow::Result<()> {
    agent
        .wait_state("heavy", state, STATE_TIMEOUT)
        .with_context(|| format!("waiting for {state}"))
}

/// Runs the section.
pub fn hibernate(work: &Path, _image: &Image) -> anyhow::Result<Value> {
    let dir = section_dir(work, "hibernate")?;
    if swap::meminfo("SwapTotal")? != 0 {
        bail!("the host already has swap: the pause-only case needs none; swapoff it first");
    }
    let image = memapp::build_image(&format!("autostop-bench-memapp:{}", std::process::id()))?;
    let port = free_port()?;
    let name = unique("heavy");
    let c = memapp::container(&name, &image, port, MEM_MB, BOOT_S)?;

    // (a) stop: cold boots through the agent.
    let mut cold = Vec::new();
    {
        let agent = start_agent(&dir, &service(port, &c.name, "stop"))?;
        wait_state(&agent, "stopped")?;
        for _ in 0..COLD_ROUNDS {
            cold.push(ttfb(port)?);
            wait_state(&agent, "stopped")?;
        }
    }

    // (b) hibernate, with a swap file.
    let swapfile = SwapFile::create(&unique("swap"), 1024)?;
    let read_speed = swap::disk_read_speed()?;
    let (mut hib, mut page_in, mut hib_resident) = (Vec::new(), Vec::new(), Vec::new());
    let awake;
    let all_pages;
    {
        let agent = start_agent(&dir, &service(port, &c.name, "hibernate"))?;
        wait_state(&agent, "stopped")?;
        ttfb(port)?; // the cold boot, not measured
        wait_state(&agent, "ready")?;
        awake = resident(&c.name)?;
        for _ in 0..ROUNDS {
            wait_state(&agent, "hibernated")?;
            hib_resident.push(resident(&c.name)? as f64);
            let before = swapped(&c.name)?;
            hib.push(ttfb(port)?);
            let after = swapped(&c.name)?;
            page_in.push(before.saturating_sub(after) as f64);
            wait_state(&agent, "ready")?;
        }
        // The worst case: a first request that touches every page. Also
        // leaves it awake before the swap file goes.
        wait_state(&agent, "hibernated")?;
        let before = swapped(&c.name)?;
        let all = ttfb_of(port, "/all")?;
        let all_page_in = before.saturating_sub(swapped(&c.name)?);
        wait_state(&agent, "ready")?;
        all_pages = (all, all_page_in);
    }
    drop(swapfile);

    // (c) pause only: the same agent path with no swap on the host.
    let (mut paused, mut paused_resident) = (Vec::new(), Vec::new());
    {
        let agent = start_agent(&dir, &service(port, &c.name, "hibernate"))?;
        wait_state(&agent, "ready")?;
        for _ in 0..ROUNDS {
            wait_state(&agent, "hibernated")?;
            paused_resident.push(resident(&c.name)? as f64);
            paused.push(ttfb(port)?);
            wait_state(&agent, "ready")?;
        }
    }
    drop(c);
    drop(image);

    let hib_p50 = median(&mut hib.clone());
    let cold_p50 = median(&mut cold.clone());
    let hib_res = median(&mut hib_resident);
    Ok(json!({
        "ttfb_s_p50": round_to(hib_p50, 3),
        "ttfb_s_p90": round_to(percentile(&mut hib.clone(), 0.9), 3),
        "ttfb_s": hib.iter().map(|v| round_to(*v, 3)).collect::<Vec<_>>(),
        "cold_ttfb_s_p50": round_to(cold_p50, 3),
        "cold_ttfb_s": cold.iter().map(|v| round_to(*v, 3)).collect::<Vec<_>>(),
        "pause_ttfb_s_p50": round_to(median(&mut paused.clone()), 3),
        "pause_ttfb_s": paused.iter().map(|v| round_to(*v, 3)).collect::<Vec<_>>(),
        "speedup_vs_cold": round_to(cold_p50 / hib_p50, 1),
        "resident_awake_bytes": awake,
        "resident_hibernated_bytes": hib_res as u64,
        "resident_paused_bytes": median(&mut paused_resident) as u64,
        "resident_stopped_bytes": 0,
        "resident_ratio": round_to(hib_res / awake as f64, 3),
        "page_in_bytes_p50": median(&mut page_in) as u64,
        "all_pages_ttfb_s": round_to(all_pages.0, 3),
        "all_pages_page_in_bytes": all_pages.1,
        "disk_read_speed": read_speed,
        "app": format!("memapp: {MEM_MB} MiB touched, {BOOT_S} s boot"),
        "rounds": ROUNDS,
        "cold_rounds": COLD_ROUNDS,
    }))
}
