//! The kernel objects one agent owns, seen from outside: BPF programs,
//! The kernel objects one agent owns, seen from outside: BPF programs,
//! links and maps (from the process's own file descriptors), the entries
//! of its steering map, its listener slots and datapath counters, and the
//! elements of its warm-up sets.

use std::{process::Command, time::Duration};

/// BPF programs and links held by one process.
#[derive(Debug, Default)]
pub struct KernelObjects {
    /// Program ids.
    pub programs: Vec<u32>,
    /// Link ids with the link type fdinfo names (`tcx`, `netns`, …).
    pub links: Vec<(u32, String)>,
    /// Map ids (the steering map among them: its entries go with it).
    pub maps: Vec<u32>,
}

/// Reads /proc/PID/fdinfo for `prog_id:`, `link_id:` and `map_id:` entries.
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
        if let Some(id) = field("map_id:").and_then(|v| v.parse::<u32>().ok()) {
            out.maps.push(id);
            continue;
        }
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
    out.maps.sort_unstable();
    out.maps.dedup();
    out
}

impl KernelObjects {
    /// Fails unless the agent held programs, an sk_lookup link and maps.
    pub fn assert_attached(&self) {
        assert!(!self.programs.is_empty(), "the agent holds no BPF program");
        assert!(
            self.links.iter().any(|(_, kind)| kind == "netns"),
            "no sk_lookup (netns) link among {:?}",
            self.links
        );
        assert!(!self.maps.is_empty(), "the agent holds no BPF map");
    }

    /// Fails unless, within `timeout` (the kernel frees them
    /// asynchronously), none of these programs, links or maps is left: the
    /// kernel path is stock and no steering entry survives.
    pub fn assert_gone(&self, timeout: Duration) {
        let left = || {
            let programs: Vec<u32> = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .filter(|id| self.programs.contains(id))
                .collect();
            let links: Vec<u32> = aya::programs::loaded_links()
                .filter_map(Result::ok)
                .filter(|l| {
                    self.programs.contains(&l.program_id())
                        || self.links.iter().any(|(id, _)| *id == l.id())
                })
                .map(|l| l.id())
                .collect();
            let maps: Vec<u32> = aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|m| m.id())
                .filter(|id| self.maps.contains(id))
                .collect();
            (programs, links, maps)
        };
        let gone = crate::eventually(timeout, || {
            let (p, l, m) = left();
            p.is_empty() && l.is_empty() && m.is_empty()
        });
        let (programs, links, maps) = left();
        assert!(
            gone,
            "kernel objects of the agent remain after {timeout:?}: programs {programs:?}, \
             links {links:?}, maps {maps:?}"
        );
    }
}

/// The maps process `pid` holds, with their names.
fn named_maps(pid: i32) -> Vec<(Option<String>, aya::maps::MapData)> {
    kernel_objects_of(pid)
        .maps
        .into_iter()
        .filter_map(|id| aya::maps::MapData::from_id(id).ok())
        .map(|map| {
            let name = map
                .info()
                .ok()
                .and_then(|info| info.name_as_str().map(str::to_owned));
            (name, map)
        })
        .collect()
}

/// How many (address, port) bindings process `pid` steers now: the
/// entries of its `STEERED` (one address) and `STEERED_ANY` (every
/// address) maps, read in-process through the maps' ids: microseconds, so
/// a test can read them right after an API answer.
pub fn steered_entries(pid: i32) -> usize {
    use autostop_common::{names, SteerKey};
    let mut found = 0;
    let mut total = 0;
    for (name, map) in named_maps(pid) {
        let map = aya::maps::Map::HashMap(map);
        if name.as_deref() == Some(names::STEERED) {
            let map: aya::maps::HashMap<_, SteerKey, u32> =
                aya::maps::HashMap::try_from(map).expect("STEERED is a hash map");
            total += map.keys().count();
            found += 1;
        } else if name.as_deref() == Some(names::STEERED_ANY) {
            total += steered_any_of(map).len();
            found += 1;
        }
    }
    assert_eq!(found, 2, "process {pid} does not hold both steering maps");
    total
}

/// The every-address ports process `pid` steers, with the service index
/// each is steered to (its `STEERED_ANY` map).
pub fn steered_any(pid: i32) -> std::collections::BTreeMap<u16, u32> {
    let map = named_maps(pid)
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(autostop_common::names::STEERED_ANY))
        .map(|(_, map)| map)
        .unwrap_or_else(|| panic!("process {pid} holds no STEERED_ANY map"));
    steered_any_of(aya::maps::Map::HashMap(map))
}

fn steered_any_of(map: aya::maps::Map) -> std::collections::BTreeMap<u16, u32> {
    let map: aya::maps::HashMap<_, u16, u32> =
        aya::maps::HashMap::try_from(map).expect("STEERED_ANY is a hash map");
    map.iter().filter_map(Result::ok).collect()
}

/// Empties process `pid`'s listener slots (its `LISTENERS` sockmap), as if
/// its listeners had gone: steered connections then find no socket to be
/// handed to. Returns how many slots held a socket.
pub fn clear_listener_slots(pid: i32) -> usize {
    use autostop_common::{names, LISTENER_SLOT_V4, LISTENER_SLOT_V6};
    let map = named_maps(pid)
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(names::LISTENERS))
        .map(|(_, map)| map)
        .unwrap_or_else(|| panic!("process {pid} holds no {} map", names::LISTENERS));
    let mut map: aya::maps::SockMap<_> =
        aya::maps::SockMap::try_from(aya::maps::Map::SockMap(map)).expect("LISTENERS is a sockmap");
    [LISTENER_SLOT_V4, LISTENER_SLOT_V6]
        .iter()
        .filter(|slot| map.clear_index(slot).is_ok())
        .count()
}

/// Process `pid`'s datapath counters (`DATAPATH_STATS`), summed over CPUs.
pub fn datapath_stats(pid: i32) -> autostop_common::DatapathStats {
    use autostop_common::{names, DatapathStats};
    let map = named_maps(pid)
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(names::DATAPATH_STATS))
        .map(|(_, map)| map)
        .unwrap_or_else(|| panic!("process {pid} holds no {} map", names::DATAPATH_STATS));
    let map: aya::maps::PerCpuArray<_, DatapathStats> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map))
            .expect("DATAPATH_STATS is a per-CPU array");
    let per_cpu = map.get(&0, 0).expect("reading DATAPATH_STATS");
    per_cpu
        .iter()
        .fold(DatapathStats::default(), |sum, cpu| DatapathStats {
            packets_seen: sum.packets_seen + cpu.packets_seen,
            packets_matched: sum.packets_matched + cpu.packets_matched,
            packets_ignored: sum.packets_ignored + cpu.packets_ignored,
            steered_lookups: sum.steered_lookups + cpu.steered_lookups,
            steer_failures: sum.steer_failures + cpu.steer_failures,
            wake_events_sent: sum.wake_events_sent + cpu.wake_events_sent,
            wake_events_lost: sum.wake_events_lost + cpu.wake_events_lost,
        })
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
