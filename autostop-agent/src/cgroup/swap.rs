//! The host's free swap (`/proc/meminfo`), checked before a hibernation and
//! by `autostop check`.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// Free swap on the host, in bytes.
pub fn swap_free() -> Result<u64, CgroupError> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_swap_free(&text).ok_or_else(|| CgroupError::Parse {
        path: PathBuf::from(path),
        text: "no SwapFree line".into(),
    })
}

/// `SwapFree` of a `/proc/meminfo` text, in bytes.
pub fn parse_swap_free(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("SwapFree:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib.saturating_mul(1024))
    })
}
