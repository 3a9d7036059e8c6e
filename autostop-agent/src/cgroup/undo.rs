//! Recorded before it is changed, undone by whoever comes next.
//!
//! v1 reclaim lowers `memory.limit_in_bytes` and raises
//! `memory.swappiness`; an agent killed in between would leave the
//! container under a few MiB. So the original values ([`SavedLimits`])
//! go to a [`Journal`] (the agent's state file, fsync'd) before the first
//! change, and are put back ([`undo`]) by the reclaim itself at its end,
//! else by whoever comes next: a thaw or a stop before it unpauses, the
//! next agent at its start. The record is cleared once they are back.
//!
//! Undo is safe to repeat and never aims at the wrong container: it acts
//! only on the same instance of the directory (its inode; a container
//! removed, recreated or restarted has a new cgroup, whose limits are
//! Docker's again), only raises the limit (the agent only ever lowered it)
//! and only resets a swappiness that is still the reclaim's own value.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{is_memory_cgroup_dir, read_u64, CgroupError, CgroupLock, DirKnobs, Knobs};

/// The swappiness reclaim sets while it lowers the limit (anonymous pages
/// first).
pub const SWAPPINESS_WHILE_RECLAIMING: u64 = 100;

pub(super) const LIMIT: &str = "memory.limit_in_bytes";
pub(super) const SWAPPINESS: &str = "memory.swappiness";

/// What a v1 reclaim is about to change on one cgroup, as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLimits {
    /// The cgroup's directory.
    pub dir: PathBuf,
    /// Which instance of it ([`CgroupLock::instance`], its inode).
    pub instance: u64,
    /// `memory.limit_in_bytes` before.
    pub limit_in_bytes: u64,
    /// `memory.swappiness` before.
    pub swappiness: u64,
}

/// Where [`SavedLimits`] are kept while they are changed.
pub trait Journal {
    /// What an earlier reclaim of this cgroup recorded and did not clear.
    fn pending(&self) -> Option<SavedLimits>;
    /// Makes `saved` durable; nothing is changed unless this succeeds.
    fn record(&self, saved: &SavedLimits) -> Result<(), String>;
    /// `saved` is back in place: the record may go.
    fn restored(&self, saved: &SavedLimits);
}

/// What an [`undo`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// The same cgroup: whatever was still changed is back (`limit`,
    /// `swappiness`: whether that value had to be written).
    Restored {
        /// The limit was below the recorded one and was raised to it.
        limit: bool,
        /// The swappiness was still the reclaim's and was reset.
        swappiness: bool,
    },
    /// The directory is gone (container stopped or removed): nothing to
    /// undo, its lowered limit went with it.
    Gone,
    /// The directory is another instance (the container was restarted or
    /// recreated under the same path): its limits are not the record's.
    Replaced,
}

/// Puts `saved` back on its cgroup (see the module docs), waiting up to
/// `wait` for another process's lock. A record that names no memory
/// cgroup directory is refused ([`CgroupError::NotACgroup`]).
pub fn undo(saved: &SavedLimits, wait: Duration) -> Result<Undo, CgroupError> {
    if !is_memory_cgroup_dir(&saved.dir) {
        return Err(CgroupError::NotACgroup(saved.dir.clone()));
    }
    undo_with(&DirKnobs(saved.dir.clone()), saved, wait)
}

/// [`undo`] through `knobs`.
pub fn undo_with(
    knobs: &dyn Knobs,
    saved: &SavedLimits,
    wait: Duration,
) -> Result<Undo, CgroupError> {
    let lock = match knobs.lock(wait) {
        Ok(lock) => lock,
        Err(e) if gone(&e) => return Ok(Undo::Gone),
        Err(e) => return Err(e),
    };
    match undo_locked(knobs, saved, &lock) {
        Err(e) if gone(&e) => Ok(Undo::Gone),
        other => other,
    }
}

/// [`undo_with`] under a lock already held.
pub(super) fn undo_locked(
    knobs: &dyn Knobs,
    saved: &SavedLimits,
    lock: &CgroupLock,
) -> Result<Undo, CgroupError> {
    if lock.instance != saved.instance || knobs.dir() != saved.dir {
        return Ok(Undo::Replaced);
    }
    let limit = read_u64(knobs, LIMIT)? < saved.limit_in_bytes;
    if limit {
        knobs.write(LIMIT, &saved.limit_in_bytes.to_string())?;
    }
    let now = read_u64(knobs, SWAPPINESS)?;
    let swappiness = now == SWAPPINESS_WHILE_RECLAIMING && now != saved.swappiness;
    if swappiness {
        knobs.write(SWAPPINESS, &saved.swappiness.to_string())?;
    }
    Ok(Undo::Restored { limit, swappiness })
}

/// The cgroup's directory or files are gone (`ENOENT`; `ENODEV` for a
/// file of a directory being removed).
fn gone(e: &CgroupError) -> bool {
    matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV))
}
