//! A paused container's memory cgroup: where it is, how much of it is
//! resident and in swap, and how to push its anonymous memory to swap
//! (hibernate) without breaking it.
//!
//! - cgroup v1 (this project's test machines): the container's memory
//!   controller directory (`/sys/fs/cgroup/memory/<path>`). Reclaim lowers
//!   `memory.limit_in_bytes` step by step while the cgroup is frozen (the
//!   kernel reclaims synchronously on the write, and answers `EBUSY` once it
//!   cannot go lower), then puts the original limits back at once, still
//!   frozen: frozen tasks touch nothing, so nothing faults back in until the
//!   thaw, and an agent killed afterwards leaves a container whose limits
//!   are its own (`docker unpause` is all it needs).
//! - cgroup v2: `memory.reclaim` takes the number of bytes to reclaim.
//!   Only unit-tested against a fake tree: no v2 kernel here.
//!
//! Every file is reached through [`Knobs`], so the v1 stepping is tested
//! against a simulated kernel and v2 against a directory in a tempdir.
//!
//! What v1 reclaim changes is recorded before it changes it ([`undo`]):
//! the original limits go to a [`Journal`] (the state file) first, and
//! whoever comes next (the same thread at its end, a thaw, a stop, the
//! next agent's start) puts them back and clears the record. One changer
//! at a time per cgroup: each holds an exclusive `flock` on its directory.
//!
//! The files read here are the kernel's and `/proc`'s, and the records
//! come from the state file: no slicing or indexing, no unchecked
//! arithmetic (denied below; tests are allowed to index).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod locate;
mod reclaim;
mod swap;
mod undo;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_undo;

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

pub use locate::{cgroup_of_pid, parse_proc_cgroup, CgroupVersion, MemoryCgroup, CGROUP_ROOT};
pub use reclaim::{reclaim, ReclaimReport, MIN_RESIDENT};
pub use swap::{parse_swap_free, swap_free};
pub use undo::{undo, undo_with, Journal, SavedLimits, Undo, SWAPPINESS_WHILE_RECLAIMING};

/// The cgroup module's error type.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup or proc file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A file held something that is not what the kernel writes there.
    #[error("{path}: unexpected content {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// The process has no memory cgroup this module understands.
    #[error("no memory cgroup for pid {0}")]
    NoMemoryCgroup(u32),
    /// Another process (another agent) holds the cgroup's lock: it is
    /// changing its limits now.
    #[error("{}: another process is changing its limits", .0.display())]
    Busy(PathBuf),
    /// The original limits could not be recorded, so nothing was changed.
    #[error("{}: original limits not recorded ({reason}): nothing changed", .path.display())]
    NotRecorded {
        /// The cgroup.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A recorded cgroup directory that is not a memory cgroup directory
    /// (a hand-edited or foreign record): never written to.
    #[error("{}: not a directory under {CGROUP_ROOT}/memory: not touched", .0.display())]
    NotACgroup(PathBuf),
}

impl CgroupError {
    /// The error number the kernel answered, if it was an I/O error.
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Memory of one cgroup, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryUsage {
    /// Charged to the cgroup and in RAM (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub resident: u64,
    /// Of its memory in swap (v1 `memory.stat` `swap`, v2
    /// `memory.swap.current`).
    pub swap: u64,
}

impl std::ops::Add for MemoryUsage {
    type Output = MemoryUsage;

    fn add(self, other: MemoryUsage) -> MemoryUsage {
        MemoryUsage {
            resident: self.resident.saturating_add(other.resident),
            swap: self.swap.saturating_add(other.swap),
        }
    }
}

/// Reads and writes a cgroup's control files by name.
pub trait Knobs {
    /// The cgroup's directory (what a record names).
    fn dir(&self) -> PathBuf;
    /// The file's content, trimmed.
    fn read(&self, name: &str) -> Result<String, CgroupError>;
    /// Writes `value` to the file in one `write(2)` (never creates it).
    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError>;
    /// Takes the cgroup's exclusive lock, trying for up to `wait`
    /// ([`CgroupError::Busy`] past it); an `Io` error of kind `NotFound`
    /// when the cgroup is gone.
    fn lock(&self, wait: Duration) -> Result<CgroupLock, CgroupError>;
}

/// A cgroup's exclusive lock (an `flock` on its directory, released on
/// drop), and which instance of the directory it is: its inode, which a
/// cgroup removed and made again under the same path does not keep.
#[derive(Debug)]
pub struct CgroupLock {
    /// The directory's inode number.
    pub instance: u64,
    /// The lock itself (`None` for a simulated cgroup).
    _flock: Option<Flock<File>>,
}

impl CgroupLock {
    /// A lock on a simulated cgroup (tests).
    #[cfg(test)]
    pub(crate) fn simulated(instance: u64) -> Self {
        CgroupLock {
            instance,
            _flock: None,
        }
    }
}

/// How often a lock held by another process is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// The real files of a cgroup directory.
#[derive(Debug, Clone)]
pub struct DirKnobs(pub PathBuf);

impl Knobs for DirKnobs {
    fn dir(&self) -> PathBuf {
        self.0.clone()
    }

    fn read(&self, name: &str) -> Result<String, CgroupError> {
        let path = self.0.join(name);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|source| CgroupError::Io { path, source })
    }

    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.0.join(name);
        // No O_CREAT: a control file always exists; a missing one means
        // the cgroup is gone (or the path is not a cgroup), and nothing
        // must be created there.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()))
            .map_err(|source| CgroupError::Io { path, source })
    }

    fn lock(&self, wait: Duration) -> Result<CgroupLock, CgroupError> {
        let io = |source| CgroupError::Io {
            path: self.0.clone(),
            source,
        };
        let dir = File::open(&self.0).map_err(io)?;
        let instance = dir.metadata().map_err(io)?.ino();
        let began = Instant::now();
        let mut file = dir;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => {
                    return Ok(CgroupLock {
                        instance,
                        _flock: Some(flock),
                    })
                }
                Err((back, Errno::EWOULDBLOCK)) if began.elapsed() < wait => {
                    file = back;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err((_, Errno::EWOULDBLOCK)) => return Err(CgroupError::Busy(self.0.clone())),
                Err((_, errno)) => return Err(io(errno.into())),
            }
        }
    }
}

/// Whether `dir` is a directory this module may write to: under
/// [`CGROUP_ROOT`]`/memory`, below it, made only of plain names (no `..`,
/// no `.`), so a record read from a file cannot aim a write elsewhere.
pub fn is_memory_cgroup_dir(dir: &Path) -> bool {
    let Ok(rest) = dir.strip_prefix(Path::new(CGROUP_ROOT).join("memory")) else {
        return false;
    };
    rest.components().next().is_some()
        && rest
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Reads a file holding one number (`max` reads as `u64::MAX`).
pub(crate) fn read_u64(knobs: &dyn Knobs, name: &str) -> Result<u64, CgroupError> {
    let text = knobs.read(name)?;
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| CgroupError::Parse {
        path: PathBuf::from(name),
        text,
    })
}

/// The value of `key` in a `memory.stat`-style file (`key value` lines).
pub(crate) fn stat_value(knobs: &dyn Knobs, name: &str, key: &str) -> Result<u64, CgroupError> {
    let text = knobs.read(name)?;
    parse_stat_value(&text, key).ok_or_else(|| CgroupError::Parse {
        path: PathBuf::from(name),
        text: format!("no {key} line"),
    })
}

/// The value of the first `key value` line of `text` whose key is `key`
/// and whose value is a number.
pub fn parse_stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
    })
}
