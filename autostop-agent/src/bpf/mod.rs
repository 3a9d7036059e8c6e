//! The agent's handle on the kernel programs: loads the eBPF object embedded
//! at build time and owns its programs, maps and links through [`Datapath`].
//!
//! - [`targets`]: the traffic classifier, its attachment to interfaces, the
//!   destinations it counts and the counters it keeps.
//! - [`steering`]: the sk_lookup program that hands new connections to
//!   stopped services' ports to the agent's listener.
//! - `port_filter`: the one-byte-per-port arrays both programs read first.
//! - [`events`]: the wake events that program sends, as an async stream.
//! - [`sources`]: source CIDRs whose traffic is not activity.
//! - [`calibration`]: an empty classifier, the benchmark's yardstick.
//!
//! Everything is owned by [`Datapath`]: dropping it (or the process dying)
//! closes the link and program file descriptors, and the kernel detaches the
//! programs by itself. Nothing is pinned, so a dead agent leaves the stock
//! datapath behind (fail open).

pub mod calibration;
pub mod events;
mod port_filter;
pub mod sources;
pub mod steering;
pub mod targets;

use std::collections::BTreeSet;

use autostop_common::{
    names, Activity, DatapathStats, SteerKey, TargetKey, TargetSlotV4, MAX_SERVICES,
};
use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, SockMap},
    programs::{sk_lookup::SkLookupLinkId, SchedClassifier, SkLookup},
    Ebpf,
};

use port_filter::PortFilter;

pub use events::{Family, WakeEvent, WakeEvents};
pub use steering::ListenerSlots;
pub use targets::{Target, TargetParseError};

/// The kernel object built from `autostop-ebpf` by this crate's build script.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/autostop.bpf.o"));

/// What can go wrong between the agent and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The object could not be loaded (verifier rejection, missing privilege,
    /// kernel without BPF support). The verifier log, if any, is inside.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("program {program}: {source}")]
    Program {
        /// Which program, by its name in the object.
        program: &'static str,
        /// The kernel's or aya's reason.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Attaching to an interface failed (no such interface, no tcx support).
    #[error("attaching {program} to interface {interface}: {source}")]
    Attach {
        /// Which program.
        program: &'static str,
        /// The interface name given by the caller.
        interface: String,
        /// The kernel's or aya's reason.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map the agent relies on is missing from the object or has the wrong
    /// type, or a map update failed.
    #[error("map {map}: {source}")]
    Map {
        /// Which map, by name.
        map: &'static str,
        /// The mismatch or syscall failure.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map or program named in `autostop_common::names` is not in the
    /// object: the object and the agent were built from different sources.
    #[error("{0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A service index beyond the arrays' size.
    #[error("service index {0} is out of range (at most {MAX_SERVICES} services)")]
    ServiceIndex(u32),
    /// A system call outside aya failed (opening the network namespace,
    /// reading a socket's address, registering with the async runtime).
    #[error("{what}: {source}")]
    Io {
        /// What the agent was doing.
        what: &'static str,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A socket that cannot take steered connections (not a TCP listener
    /// of a known family).
    #[error("listener: {0}")]
    Listener(String),
    /// The wake event stream was already handed out; there is one reader.
    #[error("the wake event stream was already taken")]
    EventsTaken,
}

/// The loaded kernel programs and the agent's view of their maps.
pub struct Datapath {
    /// Owns programs, maps still inside it and links; dropping it detaches
    /// everything.
    ebpf: Ebpf,
    /// Destination → service index.
    targets: HashMap<MapData, TargetKey, u32>,
    /// Port → 1 while some target has that port (the classifier's first,
    /// cheap filter).
    target_ports: PortFilter,
    /// IPv4 slot → target (or "shared"): the classifier's direct-mapped
    /// copy of the IPv4 part of `targets`.
    targets_v4: Array<MapData, TargetSlotV4>,
    /// The keys now in `targets` with their service, so adding one twice
    /// counts once and a slot can be rebuilt from the keys that hash to it.
    target_keys: std::collections::HashMap<TargetKey, u32>,
    /// Per-service, per-CPU traffic counters.
    activity: PerCpuArray<MapData, Activity>,
    /// Classifier and steering health counters.
    stats: PerCpuArray<MapData, DatapathStats>,
    /// Interfaces the classifier is attached to, with the link that holds it.
    attached: Vec<targets::Attachment>,
    /// Steered (local address, TCP port) → service index, for ports
    /// published on one address.
    steered: HashMap<MapData, SteerKey, u32>,
    /// Steered TCP port → service index, for ports published on every
    /// address.
    steered_any: HashMap<MapData, u16, u32>,
    /// Port → which of the two maps hold it (the sk_lookup program's first,
    /// cheap filter).
    steered_ports: PortFilter,
    /// The agent's listener sockets, by family slot.
    listeners: SockMap<MapData>,
    /// Wake events, until [`Datapath::wake_events`] hands them out.
    wake_ring: Option<RingBuf<MapData>>,
    /// Ignored source CIDRs.
    ignored: LpmTrie<MapData, [u8; 16], u8>,
    /// The (prefix length, address) keys now in `ignored`, so a new set can
    /// replace the old one entry by entry.
    ignored_keys: BTreeSet<(u32, [u8; 16])>,
    /// How many keys `ignored` has, read by the programs before the trie.
    ignored_count: Array<MapData, u32>,
    /// The bpf_link of the sk_lookup program in the agent's netns, if
    /// attached.
    steering_link: Option<SkLookupLinkId>,
}

impl Datapath {
    /// Loads the embedded object into the kernel (programs loaded, nothing
    /// attached). Needs CAP_BPF and CAP_NET_ADMIN (or root).
    pub fn load() -> Result<Self, BpfError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT)?;
        let targets = take_map(&mut ebpf, names::SERVICE_TARGETS)?;
        let target_ports = PortFilter::new(
            take_map(&mut ebpf, names::TARGET_PORTS)?,
            names::TARGET_PORTS,
        );
        let targets_v4 = take_map(&mut ebpf, names::TARGETS_V4)?;
        let activity = take_map(&mut ebpf, names::ACTIVITY)?;
        let stats = take_map(&mut ebpf, names::DATAPATH_STATS)?;
        let steered = take_map(&mut ebpf, names::STEERED)?;
        let steered_any = take_map(&mut ebpf, names::STEERED_ANY)?;
        let steered_ports = PortFilter::new(
            take_map(&mut ebpf, names::STEERED_PORTS)?,
            names::STEERED_PORTS,
        );
        let listeners = take_map(&mut ebpf, names::LISTENERS)?;
        let wake_ring = take_map(&mut ebpf, names::WAKE_EVENTS)?;
        let ignored = take_map(&mut ebpf, names::IGNORED_SOURCES)?;
        let ignored_count = take_map(&mut ebpf, names::IGNORED_SOURCE_COUNT)?;
        classifier(&mut ebpf)?
            .load()
            .map_err(|source| BpfError::Program {
                program: names::COUNT_TRAFFIC,
                source,
            })?;
        steering_program(&mut ebpf)?
            .load()
            .map_err(|source| BpfError::Program {
                program: names::STEER_LOOKUP,
                source,
            })?;
        Ok(Self {
            ebpf,
            targets,
            target_ports,
            targets_v4,
            target_keys: std::collections::HashMap::new(),
            activity,
            stats,
            attached: Vec::new(),
            steered,
            steered_any,
            steered_ports,
            listeners,
            wake_ring: Some(wake_ring),
            ignored,
            ignored_keys: BTreeSet::new(),
            ignored_count,
            steering_link: None,
        })
    }

    /// Kernel id of the classifier program, as listed by `bpftool prog`.
    pub fn program_id(&self) -> Result<u32, BpfError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(names::COUNT_TRAFFIC)
            .and_then(|p| p.try_into().ok())
            .ok_or(BpfError::MissingMap(names::COUNT_TRAFFIC))?;
        program
            .info()
            .map(|info| info.id())
            .map_err(|source| BpfError::Program {
                program: names::COUNT_TRAFFIC,
                source,
            })
    }

    /// Kernel id of the sk_lookup program, as listed by `bpftool prog`.
    pub fn steering_program_id(&self) -> Result<u32, BpfError> {
        let program: &SkLookup = self
            .ebpf
            .program(names::STEER_LOOKUP)
            .and_then(|p| p.try_into().ok())
            .ok_or(BpfError::MissingMap(names::STEER_LOOKUP))?;
        program
            .info()
            .map(|info| info.id())
            .map_err(|source| BpfError::Program {
                program: names::STEER_LOOKUP,
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
}

/// Program `name` of the object as its typed program.
fn typed_program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, BpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(BpfError::MissingMap(name))?
        .try_into()
        .map_err(|source| BpfError::Program {
            program: name,
            source,
        })
}

/// The classifier program inside the object.
fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    typed_program(ebpf, names::COUNT_TRAFFIC)
}

/// The sk_lookup program inside the object.
fn steering_program(ebpf: &mut Ebpf) -> Result<&mut SkLookup, BpfError> {
    typed_program(ebpf, names::STEER_LOOKUP)
}

/// Moves map `name` out of the object as a typed map.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| BpfError::Map { map: name, source })
}
