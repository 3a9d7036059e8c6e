//! Hibernate and thaw a service's containers: `docker pause`, then their
//! memory cgroups reclaimed to swap on a blocking thread (see
//! [`crate::cgroup`]), when the host's free swap can take what they hold;
//! thaw is `docker unpause` of the paused ones.
//!
//! A reclaim that fails or runs out of time is not an error: the
//! containers stay paused (still a fast wake) and the status says why.
//! A failed pause is one: what was paused is unpaused again.

use std::time::Duration;

use tracing::{info, warn};

use super::resolve::{resolve, Member};
use super::runtime::{ctx, DockerRuntime};
use super::DockerError;
use crate::cgroup::{self, MemoryCgroup, MemoryUsage};
use crate::service::Hibernation;

/// How long the reclaim of a service may take (a few GB to a slow disk);
/// past it the containers stay paused and the reclaim finishes alone,
/// limits restored by the blocking thread itself.
pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether Docker reports the container paused.
pub(super) fn is_paused(m: &Member) -> bool {
    m.inspect.state.as_ref().and_then(|s| s.paused) == Some(true)
}

fn is_running(m: &Member) -> bool {
    m.inspect.state.as_ref().and_then(|s| s.running) == Some(true)
}

impl DockerRuntime {
    pub(super) async fn hibernate_inner(&self, service: &str) -> Result<Hibernation, DockerError> {
        let svc = self.config(service)?;
        let members = resolve(self.client(), &svc).await?.members;
        let mut paused_now: Vec<&Member> = Vec::new();
        for m in members.iter().filter(|m| is_running(m) && !is_paused(m)) {
            info!(service, container = %m.name, event = "container_pause");
            if let Err(e) = self.client().pause(&m.id).await {
                for done in paused_now {
                    if let Err(undo) = self.client().unpause(&done.id).await {
                        warn!(service, container = %done.name, error = %undo, "unpausing after a failed hibernate");
                    }
                }
                return Err(ctx(service, &m.name, e));
            }
            paused_now.push(m);
        }
        let pids: Vec<(String, u32)> = members
            .iter()
            .filter(|m| is_running(m))
            .filter_map(|m| {
                let pid = m.inspect.state.as_ref()?.pid?;
                Some((m.name.clone(), u32::try_from(pid).ok().filter(|p| *p > 0)?))
            })
            .collect();
        let work = tokio::task::spawn_blocking(move || reclaim_all(&pids));
        Ok(match tokio::time::timeout(RECLAIM_TIMEOUT, work).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => paused_only(format!("reclaim task failed: {e}")),
            Err(_) => paused_only(format!(
                "reclaim still running after {RECLAIM_TIMEOUT:?}: paused, memory partly in swap"
            )),
        })
    }

    pub(super) async fn thaw_inner(&self, service: &str) -> Result<(), DockerError> {
        let svc = self.config(service)?;
        let members = resolve(self.client(), &svc).await?.members;
        for m in members.iter().filter(|m| is_paused(m)) {
            info!(service, container = %m.name, event = "container_unpause");
            self.client()
                .unpause(&m.id)
                .await
                .map_err(|e| ctx(service, &m.name, e))?;
        }
        Ok(())
    }
}

fn paused_only(note: String) -> Hibernation {
    Hibernation {
        reclaimed: false,
        note: Some(note),
        ..Hibernation::default()
    }
}

/// Reclaims the cgroups of the containers whose main processes are `pids`
/// (blocking: the kernel reclaims inside the `write`).
fn reclaim_all(pids: &[(String, u32)]) -> Hibernation {
    let mut cgroups: Vec<(String, MemoryCgroup)> = Vec::new();
    for (name, pid) in pids {
        match cgroup::cgroup_of_pid(*pid) {
            Ok(cg) => cgroups.push((name.clone(), cg)),
            Err(e) => return paused_only(format!("container {name}: {e}: paused without reclaim")),
        }
    }
    let total = |cgroups: &[(String, MemoryCgroup)]| {
        cgroups
            .iter()
            .filter_map(|(_, cg)| cg.usage().ok())
            .fold(MemoryUsage::default(), |a, b| a + b)
    };
    let awake = total(&cgroups);
    let mut h = Hibernation {
        awake: awake.resident,
        resident: awake.resident,
        swap: awake.swap,
        reclaimed: false,
        note: None,
    };
    match cgroup::swap_free() {
        Ok(free) if free >= awake.resident => {}
        Ok(free) => {
            h.note = Some(no_room_note(free, awake.resident));
            return h;
        }
        Err(e) => {
            h.note = Some(format!("free swap unknown ({e}): paused without reclaim"));
            return h;
        }
    }
    let mut failures = Vec::new();
    for (name, cg) in &cgroups {
        match cgroup::reclaim(cg.version, &cg.knobs()) {
            Ok(report) => {
                info!(container = %name, before = report.before.resident, after = report.after.resident,
                    swap = report.after.swap, stopped_early = report.stopped_early, event = "reclaimed");
            }
            Err(e) => failures.push(format!("container {name}: {e}")),
        }
    }
    let after = total(&cgroups);
    h.resident = after.resident;
    h.swap = after.swap;
    h.reclaimed = failures.len() < cgroups.len();
    if !failures.is_empty() {
        h.note = Some(format!("reclaim failed ({}): paused", failures.join("; ")));
    }
    h
}

/// What the status says when swap cannot take the service's memory.
pub fn no_room_note(free_swap: u64, resident: u64) -> String {
    if free_swap == 0 {
        "no free swap on the host: paused without reclaim".to_owned()
    } else {
        format!(
            "free swap ({} MiB) is less than the service holds ({} MiB): paused without reclaim",
            free_swap >> 20,
            resident >> 20
        )
    }
}
