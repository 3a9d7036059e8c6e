//! Pushing a frozen cgroup's memory to swap.
//!
//! v1: lower `memory.limit_in_bytes` by halves towards [`MIN_RESIDENT`]
//! (each write makes the kernel reclaim down to it, or answer `EBUSY`
//! when it cannot), with `memory.swappiness` at 100 so anonymous pages
//! go first, then put the limit and swappiness back as they were, whatever
//! happened. The memsw limit is never touched: moving pages to swap does
//! not change mem+swap, and a lower memory limit is always below it.
//! v2: one write of the bytes to reclaim to `memory.reclaim` (`EAGAIN`
//! means it reclaimed less).

use super::locate::{usage, CgroupVersion};
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
}

/// Reclaims the (frozen) cgroup's memory to swap; see the module docs.
pub fn reclaim(version: CgroupVersion, knobs: &dyn Knobs) -> Result<ReclaimReport, CgroupError> {
    match version {
        CgroupVersion::V1 => reclaim_v1(knobs),
        CgroupVersion::V2 => reclaim_v2(knobs),
    }
}

fn reclaim_v1(knobs: &dyn Knobs) -> Result<ReclaimReport, CgroupError> {
    let before = usage(CgroupVersion::V1, knobs)?;
    let limit = knobs.read("memory.limit_in_bytes")?;
    let swappiness = knobs.read("memory.swappiness")?;
    knobs.write("memory.swappiness", "100")?;
    let stepped = step_down_v1(knobs);
    // Put everything back whatever happened: the cgroup must wake with its
    // own limits.
    let restored = knobs.write("memory.limit_in_bytes", &limit);
    let swappiness_back = knobs.write("memory.swappiness", &swappiness);
    let stopped_early = stepped?;
    restored?;
    swappiness_back?;
    let after = usage(CgroupVersion::V1, knobs)?;
    Ok(ReclaimReport {
        before,
        after,
        stopped_early,
    })
}

/// Halves the limit until usage is at [`MIN_RESIDENT`]; `Ok(true)` when the
/// kernel said `EBUSY` first.
fn step_down_v1(knobs: &dyn Knobs) -> Result<bool, CgroupError> {
    for _ in 0..MAX_STEPS {
        let resident = read_u64(knobs, "memory.usage_in_bytes")?;
        if resident <= MIN_RESIDENT {
            return Ok(false);
        }
        let target = (resident / 2).max(MIN_RESIDENT) / PAGE * PAGE;
        match knobs.write("memory.limit_in_bytes", &target.to_string()) {
            Ok(()) => {}
            Err(e) if os_error(&e) == Some(libc::EBUSY) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn reclaim_v2(knobs: &dyn Knobs) -> Result<ReclaimReport, CgroupError> {
    let before = usage(CgroupVersion::V2, knobs)?;
    let want = before.resident.saturating_sub(MIN_RESIDENT);
    let mut stopped_early = false;
    if want > 0 {
        match knobs.write("memory.reclaim", &want.to_string()) {
            Ok(()) => {}
            Err(e) if os_error(&e) == Some(libc::EAGAIN) => stopped_early = true,
            Err(e) => return Err(e),
        }
    }
    let after = usage(CgroupVersion::V2, knobs)?;
    Ok(ReclaimReport {
        before,
        after,
        stopped_early,
    })
}

fn os_error(e: &CgroupError) -> Option<i32> {
    match e {
        CgroupError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}
