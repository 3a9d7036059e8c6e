//! Hibernate and thaw a service's containers: `docker pause`, then their
//! memory cgroups reclaimed to swap on a blocking thread (see
//! [`crate::cgroup`]), when the host's free swap can take what they hold;
//! thaw is `docker unpause` of the paused ones, after the memory limits a
//! reclaim recorded are back (see [`super::limits`]).
//!
//! A reclaim that fails or runs out of time is not an error: the
//! containers stay paused (still a fast wake) and the status says why. One
//! that overruns [`RECLAIM_TIMEOUT`] is cancelled; its thread puts the
//! limits back, and a thaw or stop waits for that before it unpauses.
//! A failed pause is one: what was paused is unpaused again. Limits that
//! cannot be put back fail the thaw: the container stays paused rather
//! than run under a few MiB.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::limits::{undo_recorded, ContainerJournal, LimitJournal};
use super::resolve::Member;
use super::runtime::{ctx, DockerRuntime};
use super::DockerError;
use crate::cgroup::{self, MemoryCgroup, MemoryUsage};
use crate::service::Hibernation;

/// How long the reclaim of a service may take (a few GB to a slow disk);
/// past it the containers stay paused and the reclaim is cancelled: its
/// thread stops before its next step and puts the limits back.
pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether Docker reports the container paused.
pub(super) fn is_paused(m: &Member) -> bool {
    m.inspect.state.as_ref().and_then(|s| s.paused) == Some(true)
}

fn is_running(m: &Member) -> bool {
    m.inspect.state.as_ref().and_then(|s| s.running) == Some(true)
}

/// A container whose cgroup a reclaim works on.
struct Target {
    name: String,
    id: String,
    pid: u32,
}

impl DockerRuntime {
    pub(super) async fn hibernate_inner(&self, service: &str) -> Result<Hibernation, DockerError> {
        let svc = self.config(service)?;
        // An earlier reclaim of it that overran: stopped, limits back.
        self.reclaims.settle(service).await;
        let members = self.resolve_service(&svc).await?.members;
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
        let targets: Vec<Target> = members
            .iter()
            .filter(|m| is_running(m))
            .filter_map(|m| {
                let pid = m.inspect.state.as_ref()?.pid?;
                Some(Target {
                    name: m.name.clone(),
                    id: m.id.clone(),
                    pid: u32::try_from(pid).ok().filter(|p| *p > 0)?,
                })
            })
            .collect();
        let Some(journal) = self.limit_journal() else {
            return Ok(paused_only(
                "no state file to record memory limits in: paused without reclaim".to_owned(),
            ));
        };
        let (cancel, finished) = self.reclaims.begin(service);
        let stop = Arc::clone(&cancel);
        let work = tokio::task::spawn_blocking(move || {
            let _finished = finished;
            reclaim_all(&targets, journal.as_ref(), &stop)
        });
        Ok(match tokio::time::timeout(RECLAIM_TIMEOUT, work).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => paused_only(format!("reclaim task failed: {e}")),
            Err(_) => {
                cancel.store(true, Ordering::Release);
                paused_only(format!(
                    "reclaim still running after {RECLAIM_TIMEOUT:?}: cancelled, paused with memory partly in swap"
                ))
            }
        })
    }

    pub(super) async fn thaw_inner(&self, service: &str) -> Result<(), DockerError> {
        let svc = self.config(service)?;
        self.reclaims.settle(service).await;
        let members = self.resolve_service(&svc).await?.members;
        self.undo_limits(service, &members).await?;
        for m in members.iter().filter(|m| is_paused(m)) {
            info!(service, container = %m.name, event = "container_unpause");
            self.client()
                .unpause(&m.id)
                .await
                .map_err(|e| ctx(service, &m.name, e))?;
        }
        Ok(())
    }

    /// Puts back the memory limits recorded for `members` (a reclaim's
    /// left behind), before any of them is unpaused; an error names the
    /// container whose limits could not be put back.
    pub(super) async fn undo_limits(
        &self,
        service: &str,
        members: &[Member],
    ) -> Result<(), DockerError> {
        let Some(journal) = self.limit_journal() else {
            return Ok(());
        };
        let recorded: Vec<(String, String)> = members
            .iter()
            .filter(|m| journal.recorded(&m.id).is_some())
            .map(|m| (m.name.clone(), m.id.clone()))
            .collect();
        if recorded.is_empty() {
            return Ok(());
        }
        let work = tokio::task::spawn_blocking(move || undo_recorded(journal.as_ref(), &recorded));
        match work.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DockerError::Limits(format!("service {service}: {e}"))),
            Err(e) => Err(DockerError::Limits(format!(
                "service {service}: restoring memory limits failed: {e}"
            ))),
        }
    }
}

fn paused_only(note: String) -> Hibernation {
    Hibernation {
        reclaimed: false,
        note: Some(note),
        ..Hibernation::default()
    }
}

/// Reclaims the cgroups of `targets`' main processes (blocking: the
/// kernel reclaims inside the `write`), each under its record in
/// `journal`; `cancel` stops them between steps.
fn reclaim_all(targets: &[Target], journal: &dyn LimitJournal, cancel: &AtomicBool) -> Hibernation {
    let mut cgroups: Vec<(&Target, MemoryCgroup)> = Vec::new();
    for t in targets {
        match cgroup::cgroup_of_pid(t.pid) {
            Ok(cg) => cgroups.push((t, cg)),
            Err(e) => {
                return paused_only(format!("container {}: {e}: paused without reclaim", t.name))
            }
        }
    }
    let total = |cgroups: &[(&Target, MemoryCgroup)]| {
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
    for (t, cg) in &cgroups {
        if cancel.load(Ordering::Acquire) {
            failures.push(format!("container {}: reclaim cancelled", t.name));
            continue;
        }
        let record = ContainerJournal {
            journal,
            container: &t.id,
        };
        match cgroup::reclaim(cg.version, &cg.knobs(), &record, cancel) {
            Ok(report) => {
                info!(container = %t.name, before = report.before.resident, after = report.after.resident,
                    swap = report.after.swap, stopped_early = report.stopped_early,
                    cancelled = report.cancelled, event = "reclaimed");
            }
            Err(e) => failures.push(format!("container {}: {e}", t.name)),
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
