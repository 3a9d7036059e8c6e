//! Pushing a frozen cgroup's memory to swap.
//!
//! v1: lower `memory.limit_in_bytes` by halves towards [`MIN_RESIDENT`]
//! (each write makes the kernel reclaim down to it, or answer `EBUSY`
//! when it cannot), with `memory.swappiness` at 100 so anonymous pages
//! go first, then put the limit and swappiness back as they were, whatever
//! happened. Before the first change the originals are recorded in the
//! [`Journal`] (no record, no change), and the cgroup's lock is held from
//! before they are read until they are back (see [`super::undo`]). A set
//! `cancel` stops the stepping before its next write; the limits go back
//! the same way. The memsw limit is never touched: moving pages to swap
//! does not change mem+swap, and a lower memory limit is always below it.
//! v2: one write of the bytes to reclaim to `memory.reclaim` (`EAGAIN`
//! means it reclaimed less); nothing is changed that would need undoing.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use super::locate::{usage, CgroupVersion};
use super::undo::{
    undo_locked, Journal, SavedLimits, LIMIT, SWAPPINESS, SWAPPINESS_WHILE_RECLAIMING,
};
use super::{read_u64, CgroupError, Knobs, MemoryUsage};

/// What reclaim aims to leave resident (page tables, kernel memory and the
/// pages the kernel will not give up stay anyway).
pub const MIN_RESIDENT: u64 = 4 << 20;

/// At most this many limit steps (halving from 64 GiB reaches 4 MiB in 14).
const MAX_STEPS: usize = 40;

const PAGE: u64 = 4096;

/// What one reclaim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Before it.
    pub before: MemoryUsage,
    /// After it (limits back as they were).
    pub after: MemoryUsage,
    /// The kernel refused to go lower before [`MIN_RESIDENT`] was reached
    /// (v1 `EBUSY`, v2 `EAGAIN`): what is left is what it could not move.
    pub stopped_early: bool,
    /// `cancel` was set: it stopped between two steps.
    pub cancelled: bool,
}

/// Reclaims the (frozen) cgroup's memory to swap; see the module docs.
/// Another process holding the cgroup's lock is [`CgroupError::Busy`]
/// (nothing changed).
pub fn reclaim(
    version: CgroupVersion,
    knobs: &dyn Knobs,
    journal: &dyn Journal,
    cancel: &AtomicBool,
) -> Result<ReclaimReport, CgroupError> {
    match version {
        CgroupVersion::V1 => reclaim_v1(knobs, journal, cancel),
        CgroupVersion::V2 => reclaim_v2(knobs),
    }
}

fn reclaim_v1(
    knobs: &dyn Knobs,
    journal: &dyn Journal,
    cancel: &AtomicBool,
) -> Result<ReclaimReport, CgroupError> {
    let lock = knobs.lock(Duration::ZERO)?;
    // An earlier reclaim's record (its agent died before clearing it):
    // those are the cgroup's own limits, back first.
    if let Some(pending) = journal.pending() {
        undo_locked(knobs, &pending, &lock)?;
        journal.restored(&pending);
    }
    let before = usage(CgroupVersion::V1, knobs)?;
    let saved = SavedLimits {
        dir: knobs.dir(),
        instance: lock.instance,
        limit_in_bytes: read_u64(knobs, LIMIT)?,
        swappiness: read_u64(knobs, SWAPPINESS)?,
    };
    if let Err(reason) = journal.record(&saved) {
        // Nothing was changed: a record that reached the file later has
        // nothing to undo either.
        journal.restored(&saved);
        return Err(CgroupError::NotRecorded {
            path: saved.dir,
            reason,
        });
    }
    let stepped = knobs
        .write(SWAPPINESS, &SWAPPINESS_WHILE_RECLAIMING.to_string())
        .and_then(|()| step_down_v1(knobs, cancel));
    // Put everything back whatever happened: the cgroup must wake with its
    // own limits. The record goes only once both are back.
    let restored = knobs.write(LIMIT, &saved.limit_in_bytes.to_string());
    let swappiness_back = knobs.write(SWAPPINESS, &saved.swappiness.to_string());
    if restored.is_ok() && swappiness_back.is_ok() {
        journal.restored(&saved);
    }
    drop(lock);
    let stepped = stepped?;
    restored?;
    swappiness_back?;
    let after = usage(CgroupVersion::V1, knobs)?;
    Ok(ReclaimReport {
        before,
        after,
        stopped_early: stepped == Stepped::Busy,
        cancelled: stepped == Stepped::Cancelled,
    })
}

/// How the stepping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stepped {
    /// Usage reached [`MIN_RESIDENT`].
    Done,
    /// The kernel said `EBUSY` first (or the steps ran out).
    Busy,
    /// `cancel` was set.
    Cancelled,
}

/// Halves the limit until usage is at [`MIN_RESIDENT`].
fn step_down_v1(knobs: &dyn Knobs, cancel: &AtomicBool) -> Result<Stepped, CgroupError> {
    for _ in 0..MAX_STEPS {
        if cancel.load(Ordering::Acquire) {
            return Ok(Stepped::Cancelled);
        }
        let resident = read_u64(knobs, "memory.usage_in_bytes")?;
        if resident <= MIN_RESIDENT {
            return Ok(Stepped::Done);
        }
        let target = (resident / 2).max(MIN_RESIDENT);
        let target = target.saturating_sub(target % PAGE);
        match knobs.write(LIMIT, &target.to_string()) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EBUSY) => return Ok(Stepped::Busy),
            Err(e) => return Err(e),
        }
    }
    Ok(Stepped::Busy)
}

fn reclaim_v2(knobs: &dyn Knobs) -> Result<ReclaimReport, CgroupError> {
    let before = usage(CgroupVersion::V2, knobs)?;
    let want = before.resident.saturating_sub(MIN_RESIDENT);
    let mut stopped_early = false;
    if want > 0 {
        match knobs.write("memory.reclaim", &want.to_string()) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EAGAIN) => stopped_early = true,
            Err(e) => return Err(e),
        }
    }
    let after = usage(CgroupVersion::V2, knobs)?;
    Ok(ReclaimReport {
        before,
        after,
        stopped_early,
        cancelled: false,
    })
}
