//! The kernel objects one agent owns, seen from outside: BPF programs,
//! links and maps (from the process's own file descriptors), the entries
//! of its steering map, and the elements of its warm-up sets.

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

/// Ids of the BPF maps process `pid` holds open.
pub fn map_ids_of(pid: i32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// How many entries the `STEERED` map of process `pid` holds (bound
/// (address, port) pairs it steers now), read in-process through the map's
/// id: microseconds, so a test can read it right after an API answer.
pub fn steered_entries(pid: i32) -> usize {
    for id in map_ids_of(pid) {
        let Ok(map) = aya::maps::MapData::from_id(id) else {
            continue;
        };
        let named = map
            .info()
            .is_ok_and(|info| info.name_as_str() == Some(autostop_common::names::STEERED));
        if !named {
            continue;
        }
        let map: aya::maps::HashMap<_, autostop_common::SteerKey, u32> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map))
                .expect("STEERED is a hash map");
        return map.keys().count();
    }
    panic!("process {pid} holds no STEERED map");
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
