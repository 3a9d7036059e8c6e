//! `cargo xtask demo`: builds the agent and runs it in the foreground.
//!
//! For now the demo attaches the traffic classifier to `lo` (and `docker0`
//! when present) and prints live counters for a few demo ports. Ctrl-C
//! reaches the agent, which detaches everything before it exits.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::{run, setup};

/// Demo destinations: traffic to these counts, the rest is only "seen".
const DEMO_TARGETS: &[&str] = &["127.0.0.1:8080/tcp", "[::1]:8080/tcp", "127.0.0.1:5353/udp"];

/// Runs setup when needed, builds and runs the agent until Ctrl-C.
pub fn run() -> anyhow::Result<()> {
    setup::run(setup::Mode::Quiet).context("setup")?;
    run::cargo_build_agent(false)?;
    let mut cmd = Command::new(run::agent_binary(false));
    cmd.args(["watch", "--interval", "2s", "--iface", "lo"]);
    if Path::new("/sys/class/net/docker0").exists() {
        cmd.args(["--iface", "docker0"]);
    }
    for target in DEMO_TARGETS {
        cmd.args(["--target", target]);
    }
    println!("demo: try `curl http://127.0.0.1:8080/` or `echo hi > /dev/udp/127.0.0.1/5353` in another shell");
    // The agent gets Ctrl-C too (same process group) and exits cleanly;
    // xtask only waits for it.
    run::status(&mut cmd)
}
