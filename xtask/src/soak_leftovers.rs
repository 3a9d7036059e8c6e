//! What a soak must not leave behind, looked at before the run and after
//! it: the agent's BPF programs and their links (`bpftool`), its nft
//! tables (`inet autostop` and the fixture's own), bpffs entries, swap
//! areas, network namespaces, permanent neighbour entries (the agent pins
//! one per container start until ready), paused containers and the soak's
//! own containers; and, once the agent has stopped but before the
//! containers go, memory limits it left lowered on them.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use anyhow::Context as _;
use autostop_fixtures::{docker::docker, swap::container_cgroup_value};
use serde_json::Value;

use crate::soak_stack::{Stack, LABEL};

/// Names of the agent's BPF programs (as the kernel keeps them).
const PROGRAMS: &[&str] = &["steer_lookup", "count_traffic", "calibrate_noop"];
/// cgroup v1's "no limit" rounds down to a page multiple of `i64::MAX`;
/// anything at or above this is unlimited.
const UNLIMITED: u64 = 1 << 62;

/// The host's objects of each kind, as text lines.
#[derive(Debug, Default)]
pub struct Snapshot {
    kinds: Vec<(&'static str, BTreeSet<String>)>,
}

fn lines(program: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn json(program: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    Ok(value.as_array().cloned().unwrap_or_default())
}

/// Every path under `dir`, recursively.
fn walk(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        out.insert(path.display().to_string());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

/// Looks at the host now.
pub fn snapshot() -> anyhow::Result<Snapshot> {
    let programs = json("bpftool", &["-j", "prog", "show"])?;
    let ours: BTreeSet<u64> = programs
        .iter()
        .filter(|p| PROGRAMS.iter().any(|n| p["name"] == *n))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let progs = programs
        .iter()
        .filter(|p| PROGRAMS.iter().any(|n| p["name"] == *n))
        .map(|p| format!("prog {} {}", p["id"], p["name"]))
        .collect();
    let links = json("bpftool", &["-j", "link", "show"])?
        .iter()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ours.contains(&id)))
        .map(|l| format!("link {} ({}) of prog {}", l["id"], l["type"], l["prog_id"]))
        .collect();
    let tables = lines("nft", &["list", "tables"])?
        .into_iter()
        .filter(|t| t == "table inet autostop" || t.starts_with("table inet astest"))
        .collect();
    let mut bpffs = BTreeSet::new();
    walk(Path::new("/sys/fs/bpf"), &mut bpffs);
    let swaps = fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let netns = lines("ip", &["netns", "list"])?.into_iter().collect();
    let neighbours = json("ip", &["-j", "neigh", "show", "nud", "permanent"])?
        .iter()
        .map(|n| format!("{} dev {} lladdr {}", n["dst"], n["dev"], n["lladdr"]))
        .collect();
    let paused = docker(&["ps", "-q", "--filter", "status=paused"])?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let ours_left = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}")])?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok(Snapshot {
        kinds: vec![
            ("BPF program of the agent", progs),
            ("BPF link of the agent", links),
            ("nft table", tables),
            ("bpffs entry", bpffs),
            ("swap area", swaps),
            ("network namespace", netns),
            ("permanent neighbour entry", neighbours),
            ("paused container", paused),
            ("soak container", ours_left),
        ],
    })
}

/// What is there now that was not there `before`, one line each.
pub fn after(before: &Snapshot) -> anyhow::Result<Vec<String>> {
    Ok(new_since(before, &snapshot()?))
}

/// What `now` has that `before` had not, as `kind: item` lines.
fn new_since(before: &Snapshot, now: &Snapshot) -> Vec<String> {
    let mut left = Vec::new();
    for (kind, items) in &now.kinds {
        let had = before
            .kinds
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, items)| items.clone())
            .unwrap_or_default();
        left.extend(items.difference(&had).map(|item| format!("{kind}: {item}")));
    }
    left
}

/// With the agent stopped and the containers still there: memory limits
/// the agent left lowered on them (it never may). Paused containers are
/// listed with `paused:` (by design a hibernated service stays paused for
/// the next agent; the containers are removed next, so a paused one left
/// after that is a leftover of [`after`]).
pub fn before_removal(stack: &Stack) -> Vec<String> {
    let mut found = Vec::new();
    for service in &stack.services {
        for container in &service.containers {
            let Ok(pid) = docker(&["inspect", "-f", "{{.State.Pid}}", container]) else {
                continue;
            };
            let Some(pid) = pid.parse::<u32>().ok().filter(|p| *p != 0) else {
                continue;
            };
            if let Ok(limit) = container_cgroup_value(pid, "memory.limit_in_bytes") {
                if limit < UNLIMITED {
                    found.push(format!(
                        "lowered memory limit: {} ({container}) at {limit} bytes",
                        service.name
                    ));
                }
            }
        }
    }
    found
}

/// The soak's containers paused when the agent stopped (information).
pub fn paused_at_exit(stack: &Stack) -> Vec<String> {
    stack
        .services
        .iter()
        .flat_map(|s| s.containers.iter().map(move |c| (s.name, c)))
        .filter(|(_, c)| {
            docker(&["inspect", "-f", "{{.State.Paused}}", c]).is_ok_and(|p| p == "true")
        })
        .map(|(name, c)| format!("{name} ({c})"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(kinds: &[(&'static str, &[&str])]) -> Snapshot {
        Snapshot {
            kinds: kinds
                .iter()
                .map(|(k, items)| (*k, items.iter().map(|i| (*i).to_owned()).collect()))
                .collect(),
        }
    }

    #[test]
    fn only_what_appeared_during_the_run_is_a_leftover() {
        let before = snapshot(&[("nft table", &["table inet other"]), ("swap area", &[])]);
        let now = snapshot(&[
            ("nft table", &["table inet other", "table inet autostop"]),
            ("swap area", &["/var/tmp/x"]),
            ("paused container", &["abc"]),
        ]);
        assert_eq!(
            new_since(&before, &now),
            vec![
                "nft table: table inet autostop",
                "swap area: /var/tmp/x",
                "paused container: abc"
            ]
        );
        assert!(new_since(&now, &now).is_empty());
    }
}
