//! `cargo xtask fuzz [--minutes N] [--cases N] [--release]`: the longer run
//! of the property tests of every parser of untrusted input (the agent's
//! `prop_*` tests: wait-page heads, API heads and bodies, labels,
//! durations, keep_warm windows, config files, compose YAML, state.json,
//! `Last-Event-ID`, /proc and netlink answers).
//!
//! `cargo xtask test` runs each of them with proptest's default case
//! count; here they run round after round, each round with `--cases`
//! cases per test and fresh random seeds (proptest seeds every run from
//! the OS), until `--minutes` have passed. The run prints every target with
//! the cases it ran and writes `target/fuzz/report.json`. A failure stops
//! the run with proptest's minimal failing input; proptest also saves its
//! seed under `autostop-agent/proptest-regressions/`, where it belongs in
//! a commit so every later run tries it first.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::run;

/// What `cargo xtask fuzz` was asked for.
pub struct Options {
    /// How long to keep starting rounds.
    pub minutes: f64,
    /// Cases per test per round (`PROPTEST_CASES`).
    pub cases: u32,
    /// Test the release build (faster cases, longer build).
    pub release: bool,
}

/// The test filter naming the property tests.
const FILTER: &str = "prop_";

fn test_command(opts: &Options) -> Command {
    let mut cmd = run::cargo();
    cmd.args(["test", "-p", "autostop-agent", "--lib"]);
    if opts.release {
        cmd.arg("--release");
    }
    cmd
}

/// Runs the rounds and reports; fails on the first failing case.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !(opts.minutes.is_finite() && opts.minutes > 0.0) || opts.cases == 0 {
        bail!("--minutes must be above 0 and --cases at least 1");
    }
    // Built once, then run directly: edits made meanwhile neither rebuild
    // it nor read as a failing case.
    let binary = build(opts)?;
    let targets = list_targets(&binary)?;
    if targets.is_empty() {
        bail!("no `{FILTER}*` test found: the filter or the tests moved");
    }
    println!(
        "fuzz: {} targets, {} cases each per round, for {} min",
        targets.len(),
        opts.cases,
        opts.minutes
    );
    let budget = Duration::from_secs_f64(opts.minutes * 60.0);
    let started = Instant::now();
    let mut rounds: u64 = 0;
    while started.elapsed() < budget {
        let output = Command::new(&binary)
            .arg(FILTER)
            .current_dir(run::workspace_root().join("autostop-agent"))
            .env("PROPTEST_CASES", opts.cases.to_string())
            .output()
            .context("running the property tests")?;
        if !output.status.success() {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            bail!(
                "a property test failed in round {} (after {} full rounds); its minimal input is above",
                rounds + 1,
                rounds
            );
        }
        rounds += 1;
        println!(
            "fuzz: round {rounds} passed ({:.1} min)",
            started.elapsed().as_secs_f64() / 60.0
        );
    }
    let cases = rounds * u64::from(opts.cases);
    let by_target: BTreeMap<&str, u64> = targets.iter().map(|t| (t.as_str(), cases)).collect();
    for target in &targets {
        println!("fuzz: {target}: {cases} cases, 0 failures");
    }
    println!(
        "fuzz: {} targets, {rounds} rounds, {} cases in all, {:.1} min, no failure",
        targets.len(),
        cases * targets.len() as u64,
        started.elapsed().as_secs_f64() / 60.0
    );
    let dir = run::workspace_root().join("target/fuzz");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = json!({
        "minutes": started.elapsed().as_secs_f64() / 60.0,
        "rounds": rounds,
        "cases_per_round": opts.cases,
        "targets": by_target,
        "failures": 0,
    });
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("fuzz: report in {}", path.display());
    Ok(())
}

/// Builds the agent's unit-test binary; its path.
fn build(opts: &Options) -> anyhow::Result<PathBuf> {
    let output = test_command(opts)
        .args(["--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the tests")?;
    if !output.status.success() {
        bail!("building the tests failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|message| {
            let test = message["profile"]["test"].as_bool() == Some(true);
            let path = message["executable"].as_str()?;
            test.then(|| PathBuf::from(path))
        })
        .context("cargo named no test executable")
}

/// The property tests' names, from the test binary's `--list`.
fn list_targets(binary: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new(binary)
        .args([FILTER, "--list", "--format", "terse"])
        .output()
        .context("listing the property tests")?;
    if !output.status.success() {
        bail!(
            "listing the property tests failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}
