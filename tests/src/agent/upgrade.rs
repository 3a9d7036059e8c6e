//! Hand-over helpers: `autostop upgrade` through the CLI, stopping an
//! agent this test did not start, the warm-up tables of a config's agents,
//! and Docker's own count of container starts.

use std::time::Duration;

use autostop_fixtures::wait::alive;

use super::{cli, AgentConfig};

/// Bound on an upgrade (the new agent loads its programs and adopts).
const UPGRADE: Duration = Duration::from_secs(90);

/// `autostop upgrade` (with `args`); the new agent's PID on success.
pub fn upgrade(config: &AgentConfig, args: &[&str]) -> Result<i32, String> {
    let mut all = vec!["upgrade"];
    all.extend_from_slice(args);
    let (ok, text) = cli(config, &all, UPGRADE);
    if !ok {
        return Err(text);
    }
    text.split("(pid ")
        .last()
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .ok_or(text)
}

/// SIGTERMs `pid` (an agent this test did not start) and waits it out.
pub fn stop_agent(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    assert!(
        crate::eventually(Duration::from_secs(15), || !alive(pid)),
        "agent {pid} did not stop"
    );
}

/// The warm-up tables of `config`'s agents (its name and the alternate).
pub fn warmup_tables(config: &AgentConfig) -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let base = config.nft_table.clone();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|t| *t == base || *t == format!("{base}_b"))
        .map(str::to_owned)
        .collect()
}

/// Docker `start` events of `container` since `since` (Unix seconds).
pub fn docker_starts(container: &str, since: u64) -> usize {
    autostop_fixtures::docker::start_events(container, since).expect("docker events")
}
