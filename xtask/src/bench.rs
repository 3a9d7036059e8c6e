//! `cargo xtask bench`: measurements, never assertions. Each comparison
//! alternates A and B in one run over several rounds and reports medians.
//! Writes `target/bench/report.json` and prints a Markdown table
//! (`bench_report.rs`). The end-to-end sections share one busybox image and
//! the stack helpers of `bench_stack.rs`.
//!
//! - `datapath`: the traffic classifier's kernel cost per packet
//!   (`kernel.bpf_stats_enabled`: run_time_ns / run_cnt) and loopback UDP
//!   throughput with the classifier attached vs not attached, and the
//!   program's own time per packet from `BPF_PROG_TEST_RUN`
//!   (`bench_testrun.rs`);
//! - `cold` (`bench_cold.rs`): first-byte time of a cold start through nginx
//!   minus the app's own start-to-first-byte time, blocking and dynamic;
//! - `warm` (`bench_warm.rs`): requests/s and latency through nginx to a
//!   warm service with vs without the agent (`bench_load.rs` is the load);
//! - `herd` (`bench_herd.rs`): 1,000 connections to a stopped service;
//! - `agent` (`bench_agent.rs`): the agent's RSS with 50 services and its
//!   idle CPU;
//! - `hibernate` (`bench_hibernate.rs`): a 300 MiB app's first answer after
//!   hibernate vs stop (cold boot) vs pause, resident memory in each state
//!   and the page-in volume.
//! - `scale` (`bench_scale.rs`): 500 managed services: idle CPU and
//!   wake-ups all stopped and with 50 ready, RSS, adoption time, API and
//!   CLI latency, the cold-start overhead with 499 neighbours over alone,
//!   and the classifier's cost with 500 targets over 1
//!   ([`datapath_scaling`]).
//! - `handover` (`bench_handover.rs`): `autostop upgrade` under a prober:
//!   the longest time a new connection was not accepted, and the
//!   upgrade's wall time.

use std::{
    fs,
    net::UdpSocket,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use autostop_fixtures::agent::AgentProcess;
use serde_json::{json, Value};

use crate::{
    bench_stack::{self, median, round_to},
    bench_testrun, run, setup,
};

/// Rounds of the datapath section (each: throughput with and without the
/// classifier, then its timed round and the empty program's).
const ROUNDS: usize = 7;
/// Length of one throughput round.
const ROUND: Duration = Duration::from_secs(2);
/// UDP payload of the load (small packets stress per-packet cost).
const PAYLOAD: usize = 64;
/// How long `autostop watch` gets to load and attach its programs.
const WATCH_ATTACH: Duration = Duration::from_secs(30);

/// Every section, in the order they run.
pub const SECTIONS: &[&str] = &[
    "datapath",
    "cold",
    "warm",
    "herd",
    "agent",
    "hibernate",
    "scale",
    "handover",
];

/// Runs the `only` sections (all when empty) and writes the report.
pub fn run(only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!(
            "unknown section {unknown:?}; sections: {}",
            SECTIONS.join(", ")
        );
    }
    let wanted = |section: &str| only.is_empty() || only.iter().any(|s| s == section);
    setup::run(setup::Mode::Quiet, setup::Scope::Everything).context("setup")?;
    run::cargo_build_agent(true)?;
    let dir = run::workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    bench_stack::remove_leftovers();
    let mut report = serde_json::Map::new();
    report.insert("machine".to_owned(), machine());
    report.insert("command".to_owned(), json!("cargo xtask bench"));
    if wanted("datapath") {
        report.insert(
            "datapath".to_owned(),
            datapath().context("datapath benchmark")?,
        );
    }
    let image = bench_stack::build_image()?;
    type Section = fn(&std::path::Path, &bench_stack::Image) -> anyhow::Result<Value>;
    let sections: [(&str, Section); 7] = [
        ("cold", crate::bench_cold::cold),
        ("warm", crate::bench_warm::warm),
        ("herd", crate::bench_herd::herd),
        ("agent", crate::bench_agent::agent),
        ("hibernate", crate::bench_hibernate::hibernate),
        ("scale", crate::bench_scale::scale),
        ("handover", crate::bench_handover::handover),
    ];
    // A failing section is reported (its error in the JSON and the table)
    // and the others still run; the command fails at the end.
    let mut failed = Vec::new();
    for (name, section) in sections {
        if wanted(name) {
            eprintln!("bench: {name}");
            let value = section(&dir, &image).unwrap_or_else(|e| {
                failed.push(name);
                json!({ "error": format!("{e:#}") })
            });
            report.insert(name.to_owned(), value);
        }
    }
    drop(image);
    let report = Value::Object(report);
    fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("{}", crate::bench_report::markdown(&report));
    println!("report: {}", dir.join("report.json").display());
    if !failed.is_empty() {
        bail!("sections failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The agent's `watch` mode attached to `lo`, counting one UDP target
/// (and, with `steer`, its sk_lookup program loaded with those bindings).
struct Watcher {
    /// Stopped (SIGTERM, the programs detached) when the watcher drops.
    _process: AgentProcess,
    program_id: u64,
    steering_program_id: Option<u64>,
}

impl Watcher {
    /// `calibrate`: attach the object's empty classifier instead, whose
    /// per-run time is what `bpf_stats` itself costs on this machine.
    fn start(port: u16, calibrate: bool) -> anyhow::Result<Self> {
        Self::start_steering(port, calibrate, &[])
    }

    /// Like [`Self::start`], with the sk_lookup program's maps holding
    /// `steer` (`ADDR:PORT` or `*:PORT`).
    fn start_steering(port: u16, calibrate: bool, steer: &[String]) -> anyhow::Result<Self> {
        Self::launch(&[port], calibrate, steer)
    }

    /// The watcher counting UDP to 127.0.0.1 on each of `ports`.
    fn launch(ports: &[u16], calibrate: bool, steer: &[String]) -> anyhow::Result<Self> {
        let targets: Vec<String> = ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}/udp"))
            .collect();
        let process = AgentProcess::start(
            Command::new(run::agent_binary(true))
                .args(["watch", "--json", "--interval", "1h", "--iface", "lo"])
                .args(targets.iter().flat_map(|t| ["--target", t.as_str()]))
                .args(calibrate.then_some("--calibrate"))
                .args(steer.iter().flat_map(|b| ["--steer", b.as_str()]))
                .stderr(Stdio::null()),
        )
        .context("starting autostop watch")?;
        let attached = process.wait_event("attached", WATCH_ATTACH)?;
        let program_id = attached["program_id"].as_u64().context("program_id")?;
        let steering_program_id = attached["steering_program_id"].as_u64();
        Ok(Self {
            _process: process,
            program_id,
            steering_program_id,
        })
    }

    /// (run_time_ns, run_cnt) from the kernel.
    fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let out = Command::new("bpftool")
            .args(["prog", "show", "id", &self.program_id.to_string(), "-j"])
            .output()
            .context("bpftool")?;
        let v: Value = serde_json::from_slice(&out.stdout).context("bpftool json")?;
        Ok((
            v["run_time_ns"].as_u64().unwrap_or(0),
            v["run_cnt"].as_u64().unwrap_or(0),
        ))
    }
}

/// Packets per second received on loopback during one round.
fn udp_round(port: u16) -> anyhow::Result<f64> {
    let receiver = UdpSocket::bind(("127.0.0.1", port))?;
    receiver.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(("127.0.0.1", port))?;
    let payload = [0x5au8; PAYLOAD];
    let started = Instant::now();
    let before = received.load(Ordering::Relaxed);
    while started.elapsed() < ROUND {
        for _ in 0..256 {
            let _ = sender.send(&payload);
        }
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    Ok(got as f64 / elapsed.as_secs_f64())
}

fn datapath() -> anyhow::Result<Value> {
    let port = free_udp_port()?;
    let set_stats = |on: bool| {
        fs::write(
            "/proc/sys/kernel/bpf_stats_enabled",
            if on { "1" } else { "0" },
        )
    };
    let (mut with, mut without, mut per_packet) = (Vec::new(), Vec::new(), Vec::new());
    let (mut empty_per_run, mut test_run, mut empty_test_run) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut unmatched_test_run = Vec::new();
    // with / without of each round (the two sides adjacent in time).
    let mut ratios = Vec::new();
    let frame = bench_testrun::udp_frame(port, PAYLOAD);
    // The same packet to a port no target has: the classifier's early exit.
    let unmatched_frame = bench_testrun::udp_frame(port.wrapping_add(1), PAYLOAD);
    // run_time_ns / run_cnt of a program under the same load, in a round
    // of its own, then its BPF_PROG_TEST_RUN time on the load's packet and
    // on the unmatched one.
    let timed_round = |calibrate: bool| -> anyhow::Result<(Option<f64>, [f64; 2])> {
        let watcher = Watcher::start(port, calibrate)?;
        set_stats(true).context("enabling kernel.bpf_stats_enabled")?;
        let (t0, c0) = watcher.stats()?;
        udp_round(port)?;
        let (t1, c1) = watcher.stats()?;
        set_stats(false)?;
        let per_run = (c1 > c0).then(|| (t1 - t0) as f64 / (c1 - c0) as f64);
        let test_run = [
            bench_testrun::ns_per_run(watcher.program_id, &frame)?,
            bench_testrun::ns_per_run(watcher.program_id, &unmatched_frame)?,
        ];
        Ok((per_run, test_run))
    };
    for round in 0..ROUNDS {
        // Alternate which side goes first so drift hits both equally.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        // Throughput with the classifier attached as in production (no
        // bpf_stats: its two clock reads per run are the bench's, not the
        // program's) and without any program, back to back.
        let mut pair = [0.0f64; 2];
        for attached in order {
            let _watcher = attached.then(|| Watcher::start(port, false)).transpose()?;
            pair[usize::from(attached)] = udp_round(port)?;
        }
        let [without_pps, with_pps] = pair;
        with.push(with_pps);
        without.push(without_pps);
        ratios.push(with_pps / without_pps);
        let (ns, test_ns) = timed_round(false)?;
        per_packet.extend(ns);
        test_run.push(test_ns[0]);
        unmatched_test_run.push(test_ns[1]);
        let (empty_ns, empty_test_ns) = timed_round(true)?;
        empty_per_run.extend(empty_ns);
        empty_test_run.push(empty_test_ns[0]);
    }
    if per_packet.is_empty() {
        bail!("the classifier never ran: is it attached to lo?");
    }
    // The per-packet figures stand without the lookup costs: a kernel that
    // refuses BPF_PROG_TEST_RUN for sk_lookup leaves its error here.
    let lookups = lookup_costs().unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    let (with_pps, without_pps) = (median(&mut with), median(&mut without));
    let ns_per_packet = median(&mut per_packet);
    let empty_ns = (!empty_per_run.is_empty()).then(|| median(&mut empty_per_run));
    Ok(json!({
        "ns_per_packet": round_to(ns_per_packet, 2),
        // What bpf_stats' two clock reads cost per run here: the same figure
        // for a program that returns at once (`watch --calibrate`).
        "empty_program_ns_per_run": empty_ns.map(|e| round_to(e, 2)),
        "ns_per_packet_above_empty_program": empty_ns.map(|e| round_to(ns_per_packet - e, 2)),
        // The program alone, timed by BPF_PROG_TEST_RUN over a million
        // runs on the load's packet: no per-run clock reads inside.
        "test_run_ns_per_packet": round_to(median(&mut test_run), 2),
        "test_run_empty_program_ns": round_to(median(&mut empty_test_run), 2),
        // A packet to a port no service uses (most traffic on `lo` and the
        // replies to containers' own connections on a bridge).
        "test_run_unmatched_ns_per_packet": round_to(median(&mut unmatched_test_run), 2),
        "test_run_repeat": bench_testrun::REPEAT,
        // The sk_lookup program per new-connection lookup (not per packet).
        "lookup": lookups,
        // Median of the rounds' ratios; the ratio of the medians beside it.
        "throughput_ratio": round_to(median(&mut ratios.clone()), 3),
        "throughput_ratio_of_medians": round_to(with_pps / without_pps, 3),
        "throughput_ratio_each_round": ratios.iter().map(|r| round_to(*r, 3)).collect::<Vec<_>>(),
        "pps_with_programs": with_pps.round(),
        "pps_without_programs": without_pps.round(),
        "rounds": ROUNDS,
        "round_seconds": ROUND.as_secs_f64(),
        "load": format!("{PAYLOAD}-byte UDP datagrams on loopback, every packet matched as service traffic"),
        "targets": { "ns_per_packet_max": 50, "throughput_ratio_min": 0.98 },
    }))
}

/// The sk_lookup program's cost per lookup, by `BPF_PROG_TEST_RUN`, for a
/// connection to a port nobody steers, to a port steered on every address
/// (the Docker default), to one steered on one address (127.0.0.1), and to
/// that port on another local address (not Docker's: not steered).
fn lookup_costs() -> anyhow::Result<Value> {
    let (any, exact, idle) = (free_udp_port()?, free_udp_port()?, free_udp_port()?);
    let steer = [format!("*:{any}"), format!("127.0.0.1:{exact}")];
    let watcher = Watcher::start_steering(free_udp_port()?, false, &steer)?;
    let id = watcher
        .steering_program_id
        .context("watch did not report the sk_lookup program")?;
    let mut cases = serde_json::Map::new();
    for (name, local, port) in [
        ("unsteered_ns", [127, 0, 0, 1], idle),
        ("steered_any_address_ns", [127, 0, 0, 1], any),
        ("steered_one_address_ns", [127, 0, 0, 1], exact),
        (
            "other_address_of_a_one_address_port_ns",
            [127, 0, 0, 2],
            exact,
        ),
    ] {
        let mut runs = Vec::new();
        for _ in 0..ROUNDS {
            runs.push(bench_testrun::ns_per_lookup(id, local, port)?);
        }
        cases.insert(name.to_owned(), json!(round_to(median(&mut runs), 2)));
    }
    Ok(Value::Object(cases))
}

/// The classifier's `BPF_PROG_TEST_RUN` time per counted packet with
/// `targets` targets over the same with one (the packet to the first), in
/// alternating rounds; `ratio` is the ratio of the medians.
pub fn datapath_scaling(targets: usize) -> anyhow::Result<Value> {
    let port = free_udp_port()?;
    // Other ports the many-target watcher counts besides `port`: numbers
    // only (nothing listens), all different from it.
    let others = (0u16..)
        .map(|i| 20_000u16.wrapping_add(i))
        .filter(|p| *p != port)
        .take(targets.saturating_sub(1));
    let mut many_ports = vec![port];
    many_ports.extend(others);
    let frame = bench_testrun::udp_frame(port, PAYLOAD);
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_many in order {
            let ports = if with_many {
                &many_ports[..]
            } else {
                &many_ports[..1]
            };
            let watcher = Watcher::launch(ports, false, &[])?;
            let ns = bench_testrun::ns_per_run(watcher.program_id, &frame)?;
            if with_many {
                many.push(ns);
            } else {
                one.push(ns);
            }
        }
    }
    let (one_ns, many_ns) = (median(&mut one.clone()), median(&mut many.clone()));
    Ok(json!({
        "ratio": round_to(many_ns / one_ns, 3),
        "test_run_ns_per_packet_one_target": round_to(one_ns, 2),
        "test_run_ns_per_packet_many_targets": round_to(many_ns, 2),
        "targets": targets,
        "rounds": ROUNDS,
        "one_target_each_round": one.iter().map(|v| round_to(*v, 2)).collect::<Vec<_>>(),
        "many_targets_each_round": many.iter().map(|v| round_to(*v, 2)).collect::<Vec<_>>(),
    }))
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What the numbers were measured on.
fn machine() -> Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let clock = read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .trim()
        .to_owned();
    json!({ "cpu": cpu, "cores": cores, "kernel": kernel, "clocksource": clock })
}
