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

mod locate;
mod reclaim;
mod swap;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use locate::{cgroup_of_pid, parse_proc_cgroup, CgroupVersion, MemoryCgroup, CGROUP_ROOT};
pub use reclaim::{reclaim, ReclaimReport, MIN_RESIDENT};
pub use swap::{parse_swap_free, swap_free};

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
    /// The file's content, trimmed.
    fn read(&self, name: &str) -> Result<String, CgroupError>;
    /// Writes `value` to the file in one `write(2)`.
    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError>;
}

/// The real files of a cgroup directory.
#[derive(Debug, Clone)]
pub struct DirKnobs(pub PathBuf);

impl Knobs for DirKnobs {
    fn read(&self, name: &str) -> Result<String, CgroupError> {
        let path = self.0.join(name);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|source| CgroupError::Io { path, source })
    }

    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.0.join(name);
        std::fs::write(&path, value).map_err(|source| CgroupError::Io { path, source })
    }
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
    let found = text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
    });
    found.ok_or_else(|| CgroupError::Parse {
        path: PathBuf::from(name),
        text: format!("no {key} line"),
    })
}
