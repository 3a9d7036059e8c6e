//! The kernel objects one agent owns, seen from outside: BPF programs and
//! links (from the process's own file descriptors) and the elements of its
//! warm-up sets.

use std::process::Command;

/// BPF programs and links held by one process.
#[derive(Debug, Default)]
pub struct KernelObjects {
    /// Program ids.
    pub programs: Vec<u32>,
    /// Link ids with the link type fdinfo names (`tcx`, `netns`, …).
    pub links: Vec<(u32, String)>,
}

/// Reads /proc/PID/fdinfo for `prog_id:` and `link_id:` entries.
pub fn kernel_objects_of(pid: i32) -> KernelObjects {
    let mut out = KernelObjects::default();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let link = field("link_id:").and_then(|v| v.parse::<u32>().ok());
        match (link, field("prog_id:").and_then(|v| v.parse::<u32>().ok())) {
            (Some(id), _) => out
                .links
                .push((id, field("link_type:").unwrap_or_default())),
            (None, Some(id)) => out.programs.push(id),
            (None, None) => {}
        }
    }
    out.programs.sort_unstable();
    out.programs.dedup();
    out
}

/// How many elements the warm-up sets (`warming`, `warming4`, `warming6`)
/// of nft table `inet TABLE` hold together (0 when the table is gone).
pub fn warming_elements(table: &str) -> usize {
    ["warming", "warming4", "warming6"]
        .iter()
        .map(|set| {
            let out = Command::new("nft")
                .args(["-j", "list", "set", "inet", table, set])
                .output()
                .expect("running nft");
            if !out.status.success() {
                return 0;
            }
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
            json["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["set"]["elem"].as_array())
                .map(Vec::len)
                .sum()
        })
        .sum()
}
