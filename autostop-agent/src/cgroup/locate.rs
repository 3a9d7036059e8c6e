//! Which memory cgroup a container's processes are in, read from
//! `/proc/<pid>/cgroup` of its main process (works for Docker's cgroupfs
//! and systemd drivers alike, and for a paused container: its processes
//! still exist).

use std::path::{Path, PathBuf};

use super::{read_u64, stat_value, CgroupError, DirKnobs, Knobs, MemoryUsage};

/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchy a [`MemoryCgroup`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy hierarchy with a `memory` controller directory.
    V1,
    /// Unified hierarchy.
    V2,
}

/// One memory cgroup (a container's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// Its hierarchy.
    pub version: CgroupVersion,
}

impl MemoryCgroup {
    /// The real files of the cgroup.
    pub fn knobs(&self) -> DirKnobs {
        DirKnobs(self.dir.clone())
    }

    /// What it holds in RAM and in swap now.
    pub fn usage(&self) -> Result<MemoryUsage, CgroupError> {
        usage(self.version, &self.knobs())
    }
}

/// What a cgroup holds in RAM and in swap, read through `knobs`.
pub(crate) fn usage(version: CgroupVersion, knobs: &dyn Knobs) -> Result<MemoryUsage, CgroupError> {
    match version {
        CgroupVersion::V1 => Ok(MemoryUsage {
            resident: read_u64(knobs, "memory.usage_in_bytes")?,
            // `swap` is in memory.stat only with swap accounting on.
            swap: stat_value(knobs, "memory.stat", "swap").unwrap_or(0),
        }),
        CgroupVersion::V2 => Ok(MemoryUsage {
            resident: read_u64(knobs, "memory.current")?,
            swap: read_u64(knobs, "memory.swap.current").unwrap_or(0),
        }),
    }
}

/// The memory cgroup of process `pid` under the real cgroup mount.
pub fn cgroup_of_pid(pid: u32) -> Result<MemoryCgroup, CgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Io { path, source })?;
    parse_proc_cgroup(&text, Path::new(CGROUP_ROOT)).ok_or(CgroupError::NoMemoryCgroup(pid))
}

/// The memory cgroup a `/proc/<pid>/cgroup` text names, under `root`: the
/// v1 `memory` controller's line when there is one (also on hybrid hosts),
/// else the unified (`0::`) line. A path that is the hierarchy's root or
/// holds a `..` names no cgroup of a container: a `memory` line like that
/// means none (never the unified one instead), a unified one is skipped.
pub fn parse_proc_cgroup(text: &str, root: &Path) -> Option<MemoryCgroup> {
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = Path::new(path.trim_start_matches('/'));
        let plain = rel.components().next().is_some()
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if controllers.split(',').any(|c| c == "memory") {
            // The memory controller's own line decides, usable or not.
            if !plain {
                return None;
            }
            return Some(MemoryCgroup {
                dir: root.join("memory").join(rel),
                version: CgroupVersion::V1,
            });
        }
        if id == "0" && controllers.is_empty() && plain {
            unified = Some(MemoryCgroup {
                dir: root.join(rel),
                version: CgroupVersion::V2,
            });
        }
    }
    unified
}
