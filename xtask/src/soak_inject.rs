//! How each fault of `soak_faults.rs` is injected, what recovery looks
//! like for it (its window's end), and the checks it makes on the way (a
//! failed check is an anomaly).

use std::{collections::BTreeMap, time::Duration};

use autostop_fixtures::{docker::docker, dockerd::DockerDaemon};

use crate::{
    soak::{Soak, HARNESS},
    soak_config::{self, Invalid},
    soak_faults::FaultKind,
    soak_record::{FaultRecord, SETTLE},
    soak_rng::Rng,
    soak_stack::{Labels, LABEL},
};

/// How long a fault waits for a service in the state it needs.
const FIND: Duration = Duration::from_secs(15);
/// How long a reload or a run-time change may take to show in the API.
const APPLY: Duration = Duration::from_secs(10);

/// Injects one fault of `kind`; its record. A harness step that fails is a
/// note beginning with [`HARNESS`] (the main loop makes it an anomaly); a
/// fault that found nothing to hit is not injected (target `-`, no
/// window) and stays owed.
pub fn inject(soak: &mut Soak, kind: FaultKind, rng: &mut Rng) -> FaultRecord {
    let mut record = FaultRecord {
        kind: kind.name(),
        target: String::new(),
        injected: soak.now(),
        recovered: None,
        window: None,
        notes: Vec::new(),
    };
    let done = match kind {
        FaultKind::ReloadValid => reload_valid(soak, rng, &mut record),
        FaultKind::ReloadInvalid => reload_invalid(soak, rng, &mut record),
        FaultKind::DockerKill => docker_kill(soak, rng, &mut record),
        FaultKind::LabelChurn => label_churn(soak, rng, &mut record),
        FaultKind::ManualStop => manual_stop(soak, rng, &mut record),
        FaultKind::ManualStart => manual_start(soak, rng, &mut record),
        FaultKind::HoldRelease => hold_release(soak, rng, &mut record),
        FaultKind::SetTimeout => set_timeout(soak, &mut record),
        FaultKind::AgentKill => agent_kill(soak, &mut record),
        FaultKind::DockerdRestart => dockerd_restart(soak, &mut record),
    };
    if let Err(e) = done {
        record.notes.push(format!("{HARNESS}: {e:#}"));
    }
    if let (Some(cap), true) = (kind.cap(), record.target != "-") {
        let cap_end = record.injected + cap.as_millis() as u64;
        let end = match record.recovered {
            Some(at) => at + SETTLE.as_millis() as u64,
            None => {
                record
                    .notes
                    .push(format!("not seen recovered within {cap:?}"));
                cap_end
            }
        };
        record.window = Some((record.injected, end));
    }
    record
}

/// A service field of the API's list.
fn field(soak: &Soak, name: &str, key: &str) -> Option<serde_json::Value> {
    soak.services()
        .into_iter()
        .find(|s| s["name"] == name)
        .map(|s| s[key].clone())
}

/// The state of `name` (empty when unlisted).
fn state(soak: &Soak, name: &str) -> String {
    field(soak, name, "state")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Every listed service's idle timeout.
fn idle_timeouts(soak: &Soak) -> BTreeMap<String, u64> {
    soak.services()
        .iter()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_owned(),
                s["idle_timeout_s"].as_u64()?,
            ))
        })
        .collect()
}

/// Waits (up to [`FIND`]) for a service in one of `states` and picks one.
fn find_in(soak: &mut Soak, rng: &mut Rng, states: &[&str]) -> Option<&'static str> {
    let names = soak.expected();
    let mut found = Vec::new();
    soak.wait_for(FIND, |soak| {
        found = names
            .iter()
            .copied()
            .filter(|n| *n != "spare" && states.contains(&state(soak, n).as_str()))
            .collect();
        !found.is_empty()
    })?;
    rng.pick(&found).copied()
}

/// Marks a fault as not injected (no window).
fn not_injected(record: &mut FaultRecord, why: &str) -> anyhow::Result<()> {
    record.target = "-".to_owned();
    record.notes.push(format!("not injected: {why}"));
    Ok(())
}

fn reload_valid(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let mut next = soak.settings;
    if rng.chance(30) {
        next.spare = !next.spare;
    } else {
        next.blk_idle_s = 3 + rng.below(3);
        next.tcp_idle_s = 3 + rng.below(2);
    }
    record.target = format!(
        "blk {}s, tcp {}s, spare {}",
        next.blk_idle_s,
        next.tcp_idle_s,
        if next.spare { "on" } else { "off" }
    );
    soak.write_valid(next)?;
    record.injected = soak.now();
    soak.sighup()?;
    soak.settings = next;
    let applied = soak.wait_for(APPLY, |soak| {
        let idle = idle_timeouts(soak);
        idle.get("blk") == Some(&next.blk_idle_s)
            && idle.get("tcp") == Some(&next.tcp_idle_s)
            && idle.contains_key("spare") == next.spare
    });
    if applied.is_none() && soak.agent_alive() {
        let seen = idle_timeouts(soak);
        soak.anomaly(format!(
            "a valid reload ({}) was not in force within {APPLY:?}: {seen:?}",
            record.target
        ));
    }
    Ok(())
}

fn reload_invalid(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let variant = *rng.pick(&Invalid::ALL).unwrap_or(&Invalid::Syntax);
    record.target = variant.name().to_owned();
    let before = idle_timeouts(soak);
    let rejected = |soak: &Soak| {
        soak.runner
            .log_tail(usize::MAX)
            .iter()
            .filter(|l| l.contains("reload_rejected"))
            .count()
    };
    let rejections = rejected(soak);
    let status = soak.runner.config().status.port();
    let bytes = soak_config::invalid(
        &soak.stack,
        &soak.agent_table,
        soak.settings,
        status,
        variant,
    );
    soak.runner.config().replace(&bytes)?;
    record.injected = soak.now();
    soak.sighup()?;
    let refused = soak.wait_for(APPLY, |soak| rejected(soak) > rejections);
    // Let a wrongly applied config reach the services before looking.
    soak.pause(Duration::from_secs(1));
    let after = idle_timeouts(soak);
    let alive = soak.agent_alive();
    soak.write_valid(soak.settings)?;
    if alive {
        soak.sighup()?;
    }
    if !alive {
        soak.anomaly(format!(
            "the agent died on an invalid config ({})",
            variant.name()
        ));
    } else if refused.is_none() || after != before {
        soak.anomaly(format!(
            "an invalid config ({}) was not refused: reload_rejected logged: {}, \
             idle timeouts before {before:?}, after {after:?}",
            variant.name(),
            refused.is_some()
        ));
    }
    Ok(())
}

fn docker_kill(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let Some(name) = find_in(soak, rng, &["ready"]) else {
        return not_injected(record, "no service was ready");
    };
    let containers = soak
        .stack
        .service(name)
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let Some(container) = rng.pick(&containers).cloned() else {
        return not_injected(record, "the service has no container");
    };
    record.target = format!("{name} ({container})");
    record.injected = soak.now();
    if let Err(e) = docker(&["kill", &container]) {
        // It stopped between the look and the kill: nothing was injected.
        if e.to_string().contains("is not running") {
            return not_injected(record, "the container stopped before the kill");
        }
        return Err(e.into());
    }
    let cap = FaultKind::DockerKill.cap().unwrap_or_default();
    if soak
        .wait_for(cap, |soak| state(soak, name) != "ready")
        .is_some()
    {
        record.recovered = soak.wait_for(cap, |soak| state(soak, name) == "ready");
    }
    Ok(())
}

fn label_churn(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let now = soak.stack.labelled.1;
    let mut next = now;
    while next == now {
        next = Labels {
            idle_s: if rng.chance(50) { 3 } else { 5 },
            dynamic: rng.chance(50),
        };
    }
    record.target = format!(
        "lbl: idle-timeout {}s, mode {}",
        next.idle_s,
        if next.dynamic { "dynamic" } else { "blocking" }
    );
    record.injected = soak.now();
    soak.stack.relabel(next)?;
    let mode = if next.dynamic { "dynamic" } else { "blocking" };
    record.recovered = soak.wait_for(FaultKind::LabelChurn.cap().unwrap_or_default(), |soak| {
        field(soak, "lbl", "idle_timeout_s").and_then(|v| v.as_u64()) == Some(next.idle_s)
            && field(soak, "lbl", "mode").is_some_and(|m| m == mode)
            && !matches!(state(soak, "lbl").as_str(), "" | "unknown")
    });
    Ok(())
}

fn manual_stop(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let Some(name) = find_in(soak, rng, &["ready"]) else {
        return not_injected(record, "no service was ready");
    };
    record.target = name.to_owned();
    record.injected = soak.now();
    soak.runner.cli(&["stop", name])?;
    record.recovered = soak.wait_for(FaultKind::ManualStop.cap().unwrap_or_default(), |soak| {
        matches!(state(soak, name).as_str(), "stopped" | "starting")
    });
    Ok(())
}

fn manual_start(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let Some(name) = find_in(soak, rng, &["stopped", "hibernated"]) else {
        return not_injected(record, "no service was asleep");
    };
    record.target = name.to_owned();
    record.injected = soak.now();
    let status = soak.runner.agent()?.act(name, "start")?;
    let ready = soak.wait_for(Duration::from_secs(30), |soak| state(soak, name) == "ready");
    if ready.is_none() && soak.agent_alive() {
        let now = state(soak, name);
        soak.anomaly(format!(
            "a manual start of {name} (HTTP {status}) was not ready within 30 s: {now}"
        ));
    }
    Ok(())
}

fn hold_release(soak: &mut Soak, rng: &mut Rng, record: &mut FaultRecord) -> anyhow::Result<()> {
    let Some(name) = find_in(soak, rng, &["ready"]) else {
        return not_injected(record, "no service was ready");
    };
    record.target = name.to_owned();
    record.injected = soak.now();
    soak.runner.cli(&["hold", name])?;
    let idle = field(soak, name, "idle_timeout_s")
        .and_then(|v| v.as_u64())
        .unwrap_or(5);
    let mut left = None;
    soak.wait_for(Duration::from_secs(idle + 3), |soak| {
        let now = state(soak, name);
        if matches!(
            now.as_str(),
            "stopping" | "stopped" | "hibernating" | "hibernated"
        ) {
            left = Some(now);
        }
        left.is_some()
    });
    let status = soak.runner.agent()?.act(name, "release")?;
    if let Some(now) = left {
        soak.anomaly(format!(
            "{name} went {now} while on hold (release answered {status})"
        ));
    }
    Ok(())
}

fn set_timeout(soak: &mut Soak, record: &mut FaultRecord) -> anyhow::Result<()> {
    let now = field(soak, "dyn", "idle_timeout_s").and_then(|v| v.as_u64());
    let next = if now == Some(3) { 5 } else { 3 };
    record.target = format!("dyn {next}s");
    record.injected = soak.now();
    soak.runner
        .cli(&["set-timeout", "dyn", &format!("{next}s")])?;
    let applied = soak.wait_for(APPLY, |soak| {
        field(soak, "dyn", "idle_timeout_s").and_then(|v| v.as_u64()) == Some(next)
    });
    if applied.is_none() && soak.agent_alive() {
        soak.anomaly(format!(
            "set-timeout dyn {next}s not in force within {APPLY:?}"
        ));
    }
    Ok(())
}

fn agent_kill(soak: &mut Soak, record: &mut FaultRecord) -> anyhow::Result<()> {
    let before = idle_timeouts(soak);
    record.target = format!("pid {}", soak.runner.agent()?.pid());
    record.injected = soak.now();
    soak.runner.kill(&soak.clock)?;
    soak.runner.start(&soak.clock)?;
    let cap = FaultKind::AgentKill.cap().unwrap_or_default();
    record.recovered = soak.wait_for(cap, Soak::adopted);
    let after = idle_timeouts(soak);
    if record.recovered.is_some() && after != before {
        soak.anomaly(format!(
            "idle timeouts changed over an agent restart: before {before:?}, after {after:?}"
        ));
    }
    Ok(())
}

fn dockerd_restart(soak: &mut Soak, record: &mut FaultRecord) -> anyhow::Result<()> {
    let daemon = DockerDaemon::take(Some(LABEL))?;
    record.target = "dockerd".to_owned();
    record.injected = soak.now();
    let restarted = daemon.restart();
    drop(daemon);
    restarted?;
    // Recovered once every service with clients went through a cold start
    // again (its containers stopped with dockerd; the clients wake each
    // one) and every other one (the spare a reload adds, which nobody
    // visits) is adopted.
    let cap = FaultKind::DockerdRestart.cap().unwrap_or_default();
    let names: Vec<&'static str> = soak.stack.services.iter().map(|s| s.name).collect();
    let mut asleep = BTreeMap::new();
    let mut woke = BTreeMap::new();
    record.recovered = soak.wait_for(cap, |soak| {
        if !soak.adopted() {
            return false;
        }
        for name in &names {
            let now = state(soak, name);
            if now != "ready" && !now.is_empty() && now != "unknown" {
                asleep.insert(*name, true);
            } else if now == "ready" && asleep.contains_key(name) {
                woke.insert(*name, true);
            }
        }
        woke.len() == names.len()
    });
    Ok(())
}
