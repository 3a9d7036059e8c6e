//! Shared fixtures for autostop's privileged integration tests (the
//! `privileged` test binary, `tests/tests/privileged/`).
//!
//! These tests need root, a BPF-enabled kernel with tcx, and (for later
//! suites) Docker and nginx. They never skip: a missing capability fails the
//! test with a message naming it, so a CI run cannot pass without running
//! them. Fixtures are Drop guards, so a failing test still cleans up.
//!
//! What xtask needs too (the agent launcher, the HTTP client, free ports,
//! busybox images, Docker CLI and nginx) lives once in `autostop-fixtures`
//! and returns errors; the modules here wrap it for tests, where every
//! error is a test failure ([`OrFail`]), and add what needs the agent's
//! library or aya.

pub mod activity;
pub mod agent;
pub mod daemon;
pub mod docker;
pub mod e2e;
pub mod host;
pub mod netlab;
pub mod netns;
pub mod notify;
pub mod packaging;
pub mod serve_thread;
pub mod tls;
pub mod wire;

pub use autostop_fixtures::eventually;

use std::{
    path::PathBuf,
    process::{Command, ExitStatus},
    time::Duration,
};

/// Fails the test unless it runs as root with bpffs mounted.
pub fn require_root_and_bpf() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "privileged test: needs root (CAP_BPF, CAP_NET_ADMIN); run `cargo xtask test` as root"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf")),
        "privileged test: bpffs is not mounted; run `cargo xtask setup`"
    );
}

/// Path of the agent binary: `AUTOSTOP_AGENT_BIN`, or `autostop` in the
/// target directory this test binary was built into.
pub fn agent_binary() -> PathBuf {
    autostop_fixtures::agent::agent_binary().or_fail()
}

/// Path of the agent built with the `test-hooks` feature (fault
/// injection): `AUTOSTOP_TEST_HOOKS_BIN`, or `autostop-test-hooks` beside
/// [`agent_binary`]'s default.
pub fn test_hooks_binary() -> PathBuf {
    autostop_fixtures::agent::test_hooks_binary().or_fail()
}

/// Turns a shared fixture's error into a test failure naming it.
pub trait OrFail<T> {
    /// The value, or a panic with the error's message (at the caller).
    fn or_fail(self) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    #[track_caller]
    fn or_fail(self) -> T {
        self.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The agent running as its own process (`autostop watch --json` …), with
/// its stdout read line by line; stopped on drop.
pub struct AgentProcess(autostop_fixtures::agent::AgentProcess);

impl AgentProcess {
    /// Starts `autostop ARGS…` with stdout captured (stderr is inherited so
    /// its logs show in the test output).
    #[track_caller]
    pub fn spawn(args: &[&str]) -> Self {
        let mut command = Command::new(agent_binary());
        command.args(args);
        Self(autostop_fixtures::agent::AgentProcess::start(&mut command).or_fail())
    }

    /// Process id, for sending signals.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.pid()).expect("pid fits in i32")
    }

    /// Waits for the next JSON line whose `event` equals `event`.
    #[track_caller]
    pub fn wait_event(&self, event: &str, timeout: Duration) -> serde_json::Value {
        self.0.wait_event(event, timeout).or_fail()
    }

    /// Every JSON line printed so far (does not wait).
    pub fn drain_events(&self) -> Vec<serde_json::Value> {
        self.0.drain_events()
    }

    /// Sends `signal` and waits for the process to exit.
    #[track_caller]
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        self.0.signal_and_wait(signal, timeout).or_fail()
    }
}

/// Whether the kernel still lists a program with this id.
pub fn program_loaded(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|program| program.id() == id)
}

/// Ids of the kernel links that hold program `id`.
pub fn links_of_program(id: u32) -> Vec<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|link| link.program_id() == id)
        .map(|link| link.id())
        .collect()
}
