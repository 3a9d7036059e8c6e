//! `cargo xtask soak [--minutes N]`: the chaos soak (issue #25). The real
//! agent runs services that keep cycling between asleep and awake, each
//! behind nginx, while steady clients use them for the whole run
//! (`soak_clients.rs`) and faults are injected on a schedule drawn from a
//! printed seed (`soak_faults.rs`, `soak_inject.rs`). Each fault has a
//! window: client failures inside one are explained by it, failures
//! outside every window are bugs. The report (`soak_report.rs`,
//! `target/soak/report.json` and a summary) counts both, lists each
//! unexplained failure with the agent's log lines around it, the agent's
//! RSS and open fds (`soak_agent.rs`), anomalies (the agent died, a check
//! of a fault failed) and the kernel and Docker leftovers after the run
//! (`soak_leftovers.rs`). The command fails when any of those is found.
//!
//! This module holds the run's context ([`Soak`], which the injections
//! act through) and the main loop.

use std::{
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _};
use autostop_fixtures::{agent::AgentConfig, dockerd};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{
    run, setup,
    soak_agent::{spawn_sampler, AgentRunner},
    soak_clients,
    soak_config::{self, AGENT_EXTRA},
    soak_faults::{FaultKind, Schedule},
    soak_inject, soak_leftovers,
    soak_plan::{check_variants, clients, print_plan, utc_offset_s},
    soak_record::{secs, Anomaly, Clock, FaultRecord},
    soak_report,
    soak_rng::Rng,
    soak_stack::{FileSettings, Stack},
};

/// Runs this long or longer are long runs: dockerd restarts are on by
/// default.
const LONG_RUN_MINUTES: f64 = 10.0;
/// Clients alone before the first fault.
pub const WARMUP: Duration = Duration::from_secs(20);
/// Clients alone after the last fault.
pub const TAIL: Duration = Duration::from_secs(10);
/// How long past its time a run may go on to inject every kind once.
const OWED_GRACE: Duration = Duration::from_secs(120);
/// How a fault's note about a failed harness step begins.
pub const HARNESS: &str = "harness step failed";
/// How often the main loop looks at the agent between faults.
pub const POLL: Duration = Duration::from_millis(100);

/// What `cargo xtask soak` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of the client run (at least one round of every fault).
    pub minutes: f64,
    /// The schedule's seed (printed; from the clock when absent).
    pub seed: Option<u64>,
    /// Soak the release build instead of the debug one.
    pub release: bool,
    /// Restart dockerd among the faults (default: on for long runs).
    pub dockerd_restarts: Option<bool>,
}

/// The run's context: what the injections act on and record into.
pub struct Soak {
    /// The run's clock.
    pub clock: Clock,
    /// The agent.
    pub runner: AgentRunner,
    /// Containers, compose project, nginx.
    pub stack: Stack,
    /// The config file's settings in force.
    pub settings: FileSettings,
    /// The `[agent]` table of every config written.
    pub agent_table: String,
    /// Faults injected so far.
    pub faults: Vec<FaultRecord>,
    /// Anomalies seen so far.
    pub anomalies: Vec<Anomaly>,
}

impl Soak {
    /// Run ms now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Records (and prints) an anomaly.
    pub fn anomaly(&mut self, what: String) {
        let at = self.now();
        println!("soak {}: ANOMALY: {what}", secs(at));
        self.anomalies.push(Anomaly { at, what });
    }

    /// Whether the agent still runs; an agent that exited on its own is
    /// an anomaly (with its last log lines), and is started again by the
    /// main loop.
    pub fn agent_alive(&mut self) -> bool {
        if let Some(how) = self.runner.exited(&self.clock) {
            // The panic message and errors, not the backtrace between them.
            let log = self.runner.log_tail(usize::MAX);
            let mut telling: Vec<&String> = log
                .iter()
                .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
                .collect();
            telling = telling.split_off(telling.len().saturating_sub(6));
            let last = &log[log.len().saturating_sub(3)..];
            let lines: Vec<&str> = telling
                .into_iter()
                .chain(last)
                .map(String::as_str)
                .collect();
            self.anomaly(format!(
                "the agent {how}; its log says:\n    {}",
                lines.join("\n    ")
            ));
        }
        self.runner.agent().is_ok()
    }

    /// Polls `cond` every [`POLL`] for up to `cap`; when it first held
    /// (run ms), or `None` (also when the agent died meanwhile).
    pub fn wait_for(&mut self, cap: Duration, mut cond: impl FnMut(&Self) -> bool) -> Option<u64> {
        let until = self.now() + cap.as_millis() as u64;
        loop {
            if !self.agent_alive() {
                return None;
            }
            if cond(self) {
                return Some(self.now());
            }
            if self.now() >= until {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Sleeps `pause`, watching the agent.
    pub fn pause(&mut self, pause: Duration) {
        let until = self.now() + pause.as_millis() as u64;
        while self.now() < until {
            self.agent_alive();
            thread::sleep(POLL);
        }
    }

    /// The agent's service list (empty when it does not answer).
    pub fn services(&self) -> Vec<Value> {
        self.runner.services().unwrap_or_default()
    }

    /// The names every agent must list: the file's and `lbl`.
    pub fn expected(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.stack.services.iter().map(|s| s.name).collect();
        if self.settings.spare {
            names.push("spare");
        }
        names
    }

    /// Whether the agent lists every expected service, none `unknown`.
    pub fn adopted(&self) -> bool {
        let list = self.services();
        self.expected().iter().all(|name| {
            list.iter()
                .any(|s| s["name"] == *name && s["state"] != "unknown")
        })
    }

    /// Writes the valid config for `settings` (not yet in force: a reload
    /// follows).
    pub fn write_valid(&self, settings: FileSettings) -> anyhow::Result<()> {
        let text = soak_config::valid(&self.stack, &self.agent_table, settings);
        Ok(self.runner.config().replace(text.as_bytes())?)
    }

    /// SIGHUP to the agent.
    pub fn sighup(&self) -> anyhow::Result<()> {
        Ok(self.runner.agent()?.signal(Signal::SIGHUP as i32)?)
    }
}

/// Runs the soak and writes its report; fails when it found anything.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(setup::Mode::Quiet, setup::Scope::Everything).context("setup")?;
    run::cargo_build_agent(opts.release)?;
    let binary = run::agent_binary(opts.release);
    let dockerd_restarts = opts
        .dockerd_restarts
        .unwrap_or(opts.minutes >= LONG_RUN_MINUTES);
    if dockerd_restarts && !dockerd::restart_allowed() {
        bail!(
            "this soak restarts the machine's dockerd (on by default from {LONG_RUN_MINUTES} \
             minutes), which stops every container on it: set {}=1, or pass \
             --no-dockerd-restarts",
            dockerd::RESTART_DOCKERD_ENV
        );
    }
    let seed = opts.seed.unwrap_or_else(Rng::clock_seed);
    let dir = run::target_dir().join("soak");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| dockerd_restarts || *k != FaultKind::DockerdRestart)
        .collect();
    print_plan(opts, seed, &binary, &kinds);

    let before = soak_leftovers::snapshot()?;
    let clock = Clock::start();
    let mut stack = Stack::create()?;
    stack.start_nginx(&dir.join("nginx"))?;
    let config = AgentConfig::in_dir(&dir.join("agent"), "")?;
    let agent_table = config.agent_table_with(AGENT_EXTRA);
    let mut soak = Soak {
        clock,
        runner: AgentRunner::new(config, binary, &dir),
        stack,
        settings: FileSettings::default(),
        agent_table,
        faults: Vec::new(),
        anomalies: Vec::new(),
    };
    soak.write_valid(soak.settings)?;
    check_variants(&mut soak)?;
    soak.runner.start(&soak.clock)?;
    if soak
        .wait_for(Duration::from_secs(60), Soak::adopted)
        .is_none()
    {
        bail!("the agent did not adopt every service within 60 s");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(Arc::clone(&soak.runner.pid), soak.clock, Arc::clone(&stop));
    let (tx, rx) = mpsc::channel();
    let root = Rng::new(seed);
    let clients: Vec<_> = clients(&soak.stack)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            soak_clients::spawn(
                c,
                root.fork(i as u64 + 1),
                soak.clock,
                tx.clone(),
                Arc::clone(&stop),
            )
        })
        .collect();
    drop(tx);

    let quiet_from = drive(&mut soak, opts, Schedule::new(root.fork(0), &kinds));

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let outcomes: Vec<_> = rx.into_iter().collect();
    let samples = sampler.join().unwrap_or_default();
    let ended = soak.now();
    let exit = soak.runner.stop(&soak.clock);
    let mut leftovers = soak_leftovers::before_removal(&soak.stack);
    let paused_at_exit = soak_leftovers::paused_at_exit(&soak.stack);
    let log = soak_report::stamp_agent_log(&soak.clock, soak.runner.log_lines());
    let nginx_log = soak
        .stack
        .nginx
        .as_ref()
        .map(|n| n.error_log())
        .unwrap_or_default();
    let nginx_log = soak_report::stamp_nginx_log(&soak.clock, &nginx_log, utc_offset_s());
    let Soak {
        runner,
        stack,
        faults,
        mut anomalies,
        ..
    } = soak;
    if let Err(e) = exit {
        anomalies.push(Anomaly {
            at: ended,
            what: format!("the agent did not stop cleanly: {e:#}"),
        });
    }
    drop(stack);
    leftovers.extend(soak_leftovers::after(&before)?);

    let report = soak_report::Report {
        seed,
        minutes: opts.minutes,
        dockerd_restarts,
        ended,
        quiet_from,
        outcomes,
        faults,
        anomalies,
        samples,
        lives: runner.lives.clone(),
        leftovers,
        paused_at_exit,
        log,
        nginx_log,
    };
    let json = report.to_json();
    let path = dir.join("report.json");
    fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("{}", report.summary());
    println!("report: {}", path.display());
    let verdict = report.verdict();
    if !verdict.is_empty() {
        bail!("soak found problems: {}", verdict.join("; "));
    }
    Ok(())
}

/// Injects faults until the run's time is up and every kind ran once;
/// returns when faults stopped restarting the agent (run ms), for the
/// footprint comparison.
fn drive(soak: &mut Soak, opts: &Options, mut schedule: Schedule) -> u64 {
    let length = (opts.minutes * 60_000.0).max(0.0) as u64;
    let faults_until = length.saturating_sub(TAIL.as_millis() as u64);
    let quiet_after =
        WARMUP.as_millis() as u64 + faults_until.saturating_sub(WARMUP.as_millis() as u64) / 2;
    let mut quiet_from = None;
    soak.pause(WARMUP);
    loop {
        if soak.runner.agent().is_err() && !restart_after_crash(soak) {
            break;
        }
        if soak.now() >= faults_until && schedule.first_round_done() {
            break;
        }
        if soak.now() >= faults_until + OWED_GRACE.as_millis() as u64 {
            let owed: Vec<&str> = schedule.owed().iter().map(|k| k.name()).collect();
            soak.anomaly(format!("fault kinds never injected: {}", owed.join(", ")));
            break;
        }
        let quiet = soak.now() >= quiet_after;
        let kind = schedule.next(quiet);
        if quiet && schedule.first_round_done() && !kind.restarts_something() {
            quiet_from.get_or_insert(soak.now());
        }
        let record = soak_inject::inject(soak, kind, schedule.rng());
        schedule.done(kind, record.target != "-");
        println!(
            "soak {}: {} {} → {}",
            secs(record.injected),
            record.kind,
            record.target,
            match record.window {
                Some((a, b)) => format!("window {}..{}", secs(a), secs(b)),
                None => "no window".to_owned(),
            }
        );
        for note in record.notes.iter().filter(|n| n.starts_with(HARNESS)) {
            soak.anomaly(format!("{} {}: {note}", record.kind, record.target));
        }
        soak.faults.push(record);
        let gap = schedule.gap();
        soak.pause(gap);
    }
    if soak.runner.agent().is_err() {
        restart_after_crash(soak);
    }
    soak.pause(TAIL);
    quiet_from.unwrap_or(soak.now())
}

/// Starts the agent again after it exited on its own (three tries).
fn restart_after_crash(soak: &mut Soak) -> bool {
    for attempt in 1..=3 {
        match soak.runner.start(&soak.clock) {
            Ok(()) => return true,
            Err(e) => soak.anomaly(format!(
                "restarting the agent (try {attempt}) failed: {e:#}"
            )),
        }
        thread::sleep(Duration::from_secs(2));
    }
    false
}
