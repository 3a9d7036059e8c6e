//! Shared fixtures for autostop's privileged integration tests.
//!
//! These tests need root, a BPF-enabled kernel with tcx, and (for later
//! suites) Docker and nginx. They never skip: a missing capability fails the
//! test with a message naming it, so a CI run cannot pass without running
//! them. Fixtures are Drop guards, so a failing test still cleans up.

pub mod activity;
pub mod agent;
pub mod daemon;
pub mod docker;
pub mod e2e;
pub mod netlab;
pub mod netns;
pub mod notify;
pub mod packaging;
pub mod tls;
pub mod wire;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Fails the test unless it runs as root with bpffs mounted.
pub fn require_root_and_bpf() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
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
    if let Some(path) = std::env::var_os("AUTOSTOP_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/autostop
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("autostop"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "agent binary {} not found: build it first (`cargo build -p autostop-agent`) or set AUTOSTOP_AGENT_BIN",
        path.display()
    );
    path
}

/// Path of the agent built with the `test-hooks` feature (fault
/// injection): `AUTOSTOP_TEST_HOOKS_BIN`, or `autostop-test-hooks` beside
/// [`agent_binary`]'s default.
pub fn test_hooks_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AUTOSTOP_TEST_HOOKS_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("autostop-test-hooks"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "test-hooks agent {} not found: build it with `cargo xtask build --test-hooks` \
         (or set AUTOSTOP_TEST_HOOKS_BIN)",
        path.display()
    );
    path
}

/// The agent running as its own process, with its stdout read line by line.
/// Dropping it kills the process if it still runs.
pub struct AgentProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl AgentProcess {
    /// Starts `autostop ARGS…` with stdout captured (stderr is inherited so
    /// its logs show in the test output).
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(agent_binary())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the agent");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Process id, for sending signals.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Waits for the next JSON line whose `event` equals `event`.
    pub fn wait_event(&self, event: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("no {event:?} event from the agent within {timeout:?}: {e}")
            });
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if value["event"] == event {
                return value;
            }
        }
    }

    /// Every JSON line printed so far (does not wait).
    pub fn drain_events(&self) -> Vec<serde_json::Value> {
        self.lines
            .try_iter()
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; the child is not reaped
        // yet, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
        wait_for_exit(&mut self.child, timeout, signal)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// Waits until `child` (an agent sent `signal`) exits; fails after `timeout`.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: Duration,
    signal: i32,
) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit within {timeout:?} of signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
