//! `cargo xtask …`: autostop's developer commands.
//!
//! - `setup`: installs (idempotently) the toolchain and test dependencies on
//!   Debian 12 and mounts bpffs;
//! - `build`: builds the agent (and with it the eBPF object); `--test-hooks`
//!   also builds `autostop-test-hooks` for the liveness tests;
//! - `test`: setup when needed, then formatting, clippy, unit tests and the
//!   privileged integration tests, with one summary line per suite;
//! - `demo`: builds the agent and runs it in the foreground;
//! - `dist`: builds the release agent once and makes the .deb, the
//!   container image and the tarball under `target/dist/`;
//! - `bench`: measures datapath, cold, warm, herd, agent and hibernate (A/B, medians)
//!   and writes `target/bench/report.json`;
//! - `fuzz`: the property tests of every parser of untrusted input, round
//!   after round with fresh seeds for `--minutes`; writes
//!   `target/fuzz/report.json`;
//! - `soak`: the chaos soak: clients through nginx against services that
//!   keep sleeping and waking while faults are injected; writes
//!   `target/soak/report.json` and fails on a failure outside a fault's
//!   window, an anomaly or a leftover.

mod bench;
mod bench_agent;
mod bench_cold;
mod bench_dockerapi;
mod bench_handover;
mod bench_herd;
mod bench_hibernate;
mod bench_load;
mod bench_report;
mod bench_report_scale;
mod bench_scale;
mod bench_scale_probe;
mod bench_stack;
mod bench_testrun;
mod bench_warm;
mod demo;
mod dist;
mod dist_deb;
mod dist_image;
mod dist_licences;
mod fuzz;
mod run;
mod setup;
mod soak;
mod soak_agent;
mod soak_clients;
mod soak_config;
mod soak_faults;
mod soak_inject;
mod soak_leftovers;
mod soak_plan;
mod soak_record;
mod soak_report;
mod soak_rng;
mod soak_stack;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "autostop developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the BPF toolchain and test dependencies (root, Debian 12).
    Setup,
    /// Build the agent with its embedded eBPF object.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
        /// Also build target/debug/autostop-test-hooks (the agent with the
        /// `test-hooks` feature, for the liveness tests).
        #[arg(long, conflicts_with = "release")]
        test_hooks: bool,
    },
    /// Run every test: fmt, clippy, unit tests, privileged integration tests.
    Test,
    /// Build the agent and run it in the foreground with the demo settings.
    Demo,
    /// Build the release agent and package it: .deb, container image,
    /// tarball (under target/dist/).
    Dist,
    /// Measure (A/B, medians) and write target/bench/report.json.
    Bench {
        /// Sections to run (datapath, cold, warm, herd, agent, hibernate); all when none.
        sections: Vec<String>,
    },
    /// The property tests of the parsers of untrusted input, for longer:
    /// rounds with fresh seeds; writes target/fuzz/report.json.
    Fuzz {
        /// How long to keep starting rounds.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Cases per test per round (PROPTEST_CASES).
        #[arg(long, default_value_t = 2000)]
        cases: u32,
        /// Fuzz the release build (faster cases, longer build).
        #[arg(long)]
        release: bool,
    },
    /// The chaos soak: clients and faults against the agent; writes
    /// target/soak/report.json.
    Soak {
        /// How long the clients run (extended until every fault kind ran once).
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// The seed of the fault schedule and client pauses (printed; from
        /// the clock by default).
        #[arg(long)]
        seed: Option<u64>,
        /// Soak the release build instead of the debug one.
        #[arg(long)]
        release: bool,
        /// Restart the machine's dockerd among the faults (needs
        /// AUTOSTOP_TEST_RESTART_DOCKERD=1; default from 10 minutes).
        #[arg(long, conflicts_with = "no_dockerd_restarts")]
        dockerd_restarts: bool,
        /// Never restart dockerd.
        #[arg(long)]
        no_dockerd_restarts: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(setup::Mode::Always, setup::Scope::Everything).map(|_| ()),
        Command::Build {
            release,
            test_hooks,
        } => {
            if test_hooks {
                run::cargo_build_test_hooks_agent()?;
            }
            run::cargo_build_agent(release)
        }
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Dist => dist::run(),
        Command::Bench { sections } => bench::run(&sections),
        Command::Fuzz {
            minutes,
            cases,
            release,
        } => fuzz::run(&fuzz::Options {
            minutes,
            cases,
            release,
        }),
        Command::Soak {
            minutes,
            seed,
            release,
            dockerd_restarts,
            no_dockerd_restarts,
        } => soak::run(&soak::Options {
            minutes,
            seed,
            release,
            dockerd_restarts: match (dockerd_restarts, no_dockerd_restarts) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        }),
    }
}
