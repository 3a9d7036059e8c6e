//! [`Classifier`]: the loaded object and the classifier's side of the
//! datapath. It owns the programs and their links (the sk_lookup link,
//! attached once at start, and one tcx link per interface the classifier
//! counts on), the counted destinations (see [`super::targets`]) and the
//! per-service counters. [`ActivityReader`] is a second, read-only handle
//! on those counters: reading a map needs no exclusive access, so the
//! services' idle checks read it without going through the owner.

use std::{fs::File, os::fd::AsFd};

use autostop_common::{names, Activity, DatapathStats, TargetKey, TargetSlotV4, MAX_SERVICES};
use aya::{
    maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{sk_lookup::SkLookupLinkId, tc::SchedClassifierLinkId, TcAttachType},
    util::nr_cpus,
    Ebpf,
};

use super::{classifier_program, steering_program, BpfError, PortFilter};

/// The classifier on one interface.
struct Attachment {
    /// Interface name, as the caller gave it.
    interface: String,
    /// Its index when attached (`None` if it could not be read): a new
    /// index under the same name is a new interface.
    index: Option<u32>,
    /// The tcx link that holds the program there.
    link: SchedClassifierLinkId,
}

/// The loaded programs, their links, the counted destinations and the
/// counters. Dropping it detaches every program.
pub struct Classifier {
    /// Owns programs, maps still inside it and links; dropping it detaches
    /// everything.
    ebpf: Ebpf,
    /// Destination → service index.
    pub(super) targets: HashMap<MapData, TargetKey, u32>,
    /// Port → 1 while some target has that port (the classifier's first,
    /// cheap filter).
    pub(super) target_ports: PortFilter,
    /// IPv4 slot → target (or "shared"): the classifier's direct-mapped
    /// copy of the IPv4 part of `targets`.
    pub(super) targets_v4: Array<MapData, TargetSlotV4>,
    /// The keys now in `targets` with their service, so adding one twice
    /// counts once and a slot can be rebuilt from the keys that hash to it.
    pub(super) target_keys: std::collections::HashMap<TargetKey, u32>,
    /// Per-service, per-CPU traffic counters.
    activity: PerCpuArray<MapData, Activity>,
    /// Classifier and steering health counters.
    stats: PerCpuArray<MapData, DatapathStats>,
    /// Interfaces the classifier is attached to, with the link that holds it.
    attached: Vec<Attachment>,
    /// The bpf_link of the sk_lookup program in the agent's netns, if
    /// attached.
    steering_link: Option<SkLookupLinkId>,
}

/// A read-only handle on the per-service counters (its own file
/// descriptor on the same kernel map).
pub struct ActivityReader {
    activity: PerCpuArray<MapData, Activity>,
}

impl ActivityReader {
    /// Activity of one service, summed over CPUs (`last_seen_ns` is the
    /// newest of them).
    pub fn activity(&self, service: u32) -> Result<Activity, BpfError> {
        read_activity(&self.activity, service)
    }
}

fn read_activity(map: &PerCpuArray<MapData, Activity>, service: u32) -> Result<Activity, BpfError> {
    if service >= MAX_SERVICES {
        return Err(BpfError::ServiceIndex(service));
    }
    let per_cpu = map.get(&service, 0).map_err(|source| BpfError::Map {
        map: names::ACTIVITY,
        source,
    })?;
    Ok(per_cpu
        .iter()
        .fold(Activity::default(), |sum, cpu| Activity {
            packets: sum.packets + cpu.packets,
            bytes: sum.bytes + cpu.bytes,
            last_seen_ns: sum.last_seen_ns.max(cpu.last_seen_ns),
        }))
}

/// Index of interface `name`, `None` if there is none.
fn interface_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

impl Classifier {
    pub(super) fn new(
        ebpf: Ebpf,
        targets: HashMap<MapData, TargetKey, u32>,
        target_ports: PortFilter,
        targets_v4: Array<MapData, TargetSlotV4>,
        activity: PerCpuArray<MapData, Activity>,
        stats: PerCpuArray<MapData, DatapathStats>,
    ) -> Self {
        Self {
            ebpf,
            targets,
            target_ports,
            targets_v4,
            target_keys: std::collections::HashMap::new(),
            activity,
            stats,
            attached: Vec::new(),
            steering_link: None,
        }
    }

    /// A second, read-only handle on the counters.
    pub fn activity_reader(&self) -> Result<ActivityReader, BpfError> {
        let map = |source| BpfError::Map {
            map: names::ACTIVITY,
            source,
        };
        let fd = self
            .activity
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| BpfError::Io {
                what: "duplicating the activity map's descriptor",
                source,
            })?;
        let data = MapData::from_fd(fd).map_err(map)?;
        let activity = Map::from_map_data(data)
            .and_then(PerCpuArray::try_from)
            .map_err(map)?;
        Ok(ActivityReader { activity })
    }

    /// Activity of one service, summed over CPUs (`last_seen_ns` is the
    /// newest of them).
    pub fn activity(&self, service: u32) -> Result<Activity, BpfError> {
        read_activity(&self.activity, service)
    }

    /// Sets every CPU's counters of `service` back to zero (a new service
    /// takes over its index).
    pub(super) fn zero_activity(&mut self, service: u32) -> Result<(), BpfError> {
        let io = |source| BpfError::Io {
            what: "zeroing a service's counters",
            source,
        };
        let cpus = nr_cpus().map_err(|(_, source)| io(source))?;
        let zeros = PerCpuValues::try_from(vec![Activity::default(); cpus]).map_err(io)?;
        self.activity
            .set(service, zeros, 0)
            .map_err(|source| BpfError::Map {
                map: names::ACTIVITY,
                source,
            })
    }

    /// The classifier's and the steering program's own counters, summed over
    /// CPUs.
    pub fn stats(&self) -> Result<DatapathStats, BpfError> {
        let per_cpu = self.stats.get(&0, 0).map_err(|source| BpfError::Map {
            map: names::DATAPATH_STATS,
            source,
        })?;
        Ok(per_cpu
            .iter()
            .fold(DatapathStats::default(), |sum, cpu| DatapathStats {
                packets_seen: sum.packets_seen + cpu.packets_seen,
                packets_matched: sum.packets_matched + cpu.packets_matched,
                packets_ignored: sum.packets_ignored + cpu.packets_ignored,
                steered_lookups: sum.steered_lookups + cpu.steered_lookups,
                steer_failures: sum.steer_failures + cpu.steer_failures,
                wake_events_sent: sum.wake_events_sent + cpu.wake_events_sent,
                wake_events_lost: sum.wake_events_lost + cpu.wake_events_lost,
            }))
    }

    /// Kernel id of the classifier program, as listed by `bpftool prog`.
    pub fn program_id(&self) -> Result<u32, BpfError> {
        self.loaded_id(names::COUNT_TRAFFIC)
    }

    /// Kernel id of the sk_lookup program, as listed by `bpftool prog`.
    pub fn steering_program_id(&self) -> Result<u32, BpfError> {
        self.loaded_id(names::STEER_LOOKUP)
    }

    /// Kernel id of the object's program `name`.
    fn loaded_id(&self, name: &'static str) -> Result<u32, BpfError> {
        self.ebpf
            .program(name)
            .ok_or(BpfError::MissingMap(name))?
            .info()
            .map(|info| info.id())
            .map_err(|source| BpfError::Program {
                program: name,
                source,
            })
    }

    /// Attaches the sk_lookup program to the agent's own network namespace
    /// through a bpf_link owned by this value. Idempotent.
    pub fn attach_steering(&mut self) -> Result<(), BpfError> {
        if self.steering_link.is_some() {
            return Ok(());
        }
        let netns = File::open("/proc/self/ns/net").map_err(|source| BpfError::Io {
            what: "opening /proc/self/ns/net",
            source,
        })?;
        let link = steering_program(&mut self.ebpf)?
            .attach(netns)
            .map_err(|source| BpfError::Program {
                program: names::STEER_LOOKUP,
                source,
            })?;
        self.steering_link = Some(link);
        Ok(())
    }

    /// Detaches the sk_lookup program; a no-op when it is not attached.
    pub fn detach_steering(&mut self) -> Result<(), BpfError> {
        let Some(link) = self.steering_link.take() else {
            return Ok(());
        };
        steering_program(&mut self.ebpf)?
            .detach(link)
            .map_err(|source| BpfError::Program {
                program: names::STEER_LOOKUP,
                source,
            })
    }

    /// Whether the sk_lookup program is attached.
    pub fn steering_attached(&self) -> bool {
        self.steering_link.is_some()
    }

    /// Attaches the classifier to the egress side of `interface` (traffic the
    /// host sends out of it: for a Docker bridge, traffic into containers).
    /// Uses a tcx bpf_link, so the attachment dies with the agent.
    ///
    /// A no-op when already attached to that very interface. An interface
    /// deleted and made again under the same name (a network removed and
    /// recreated with a fixed `com.docker.network.bridge.name`) is a new
    /// interface whose old link died with the old one: it is attached again.
    pub fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError> {
        let index = interface_index(interface);
        if let Some(position) = self.attached.iter().position(|a| a.interface == interface) {
            if index.is_some() && self.attached[position].index == index {
                return Ok(());
            }
            let stale = self.attached.swap_remove(position);
            // The kernel already dropped this link with its interface;
            // detaching only releases our file descriptor.
            let _ = classifier_program(&mut self.ebpf)?.detach(stale.link);
        }
        let link = classifier_program(&mut self.ebpf)?
            .attach(interface, TcAttachType::Egress)
            .map_err(|source| BpfError::Attach {
                program: names::COUNT_TRAFFIC,
                interface: interface.to_owned(),
                source,
            })?;
        self.attached.push(Attachment {
            interface: interface.to_owned(),
            index,
            link,
        });
        Ok(())
    }

    /// Detaches the classifier from `interface`; a no-op if it was not
    /// attached (the interface may already be gone with its link).
    pub fn detach(&mut self, interface: &str) -> Result<(), BpfError> {
        let Some(position) = self.attached.iter().position(|a| a.interface == interface) else {
            return Ok(());
        };
        let attachment = self.attached.swap_remove(position);
        classifier_program(&mut self.ebpf)?
            .detach(attachment.link)
            .map_err(|source| BpfError::Program {
                program: names::COUNT_TRAFFIC,
                source,
            })
    }

    /// Interfaces the classifier is attached to.
    pub fn attached_interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(|a| a.interface.as_str())
    }
}
