//! autostop's privileged integration tests: one test binary, one module per
//! area, so aya, bollard, axum and the agent link once instead of once per
//! area. Fixtures live in the `autostop-tests` library (`tests/src/`) and,
//! for what `xtask` shares, in the `autostop-fixtures` crate.
//!
//! Every test needs root and the real kernel (most also Docker, nginx or
//! Chromium) and is named `privileged_*`; its full name is `AREA::NAME`,
//! so one area runs with a module filter:
//!
//! ```text
//! cargo build -p autostop-agent
//! cargo test -p autostop-tests --test privileged -- --test-threads=1 coldstart::
//! ```
//!
//! The tests run one at a time (`--test-threads=1`): they share the host's
//! Docker, nftables and BPF state.
//!
//! [`daemon`] restarts and reconfigures the machine's own dockerd, which
//! stops every container on it. It runs alone: `cargo xtask test` runs
//! this binary with `--skip daemon::` and then `daemon::` by itself, and
//! its harness refuses to restart dockerd unless
//! `AUTOSTOP_TEST_RESTART_DOCKERD=1` says that nobody else uses Docker
//! (see `autostop_tests::daemon`).

mod agent;
mod agent_longlived;
mod agent_ops;
mod api;
mod api_streams;
mod api_token;
mod capabilities;
mod check;
mod churn;
mod coldstart;
mod conntrack;
mod counters;
mod daemon;
mod dashboard;
mod dashboard_day;
mod datapath;
mod docker;
mod e2e;
mod exposure;
mod failfast;
mod handover;
mod hibernate;
mod kernel_log;
mod labels;
mod liveness;
mod netfilter;
mod packaging;
mod ports;
mod project;
mod schedule;
mod state_file;
mod steering;
mod waitpage;
