//! The agent's handle on the kernel programs: loads the eBPF object embedded
//! at build time and owns its programs, maps and links through [`Datapath`],
//! which the agent cuts into parts, one per task that uses it
//! ([`Datapath::into_parts`]):
//!
//! - [`classifier`]: the loaded object (both programs and their links),
//!   the classifier's attachment to interfaces, its counters
//!   ([`Classifier`]) and a read-only view of them ([`ActivityReader`]);
//!   [`targets`]: the destinations it counts.
//! - [`steering`]: the sk_lookup maps that hand new connections to stopped
//!   services' ports to the agent's listener ([`SteeringMaps`]).
//! - `port_filter`: the one-byte-per-port arrays both programs read first.
//! - [`events`]: the wake events the sk_lookup program sends, as an async
//!   stream.
//! - [`kernel_log`]: the sk_lookup program's log lines on its failure
//!   paths (aya-log), as `tracing` events of target `autostop::ebpf`.
//! - [`sources`]: source CIDRs whose traffic is not activity
//!   ([`SourceFilter`]).
//! - [`calibration`]: an empty classifier, the benchmark's yardstick.
//! - `whole`: [`Datapath`]'s own methods, forwarded to its parts.
//!
//! Dropping the [`Classifier`] (or the process dying) closes the link and
//! program file descriptors, and the kernel detaches the programs by
//! itself. Nothing is pinned, so a dead agent leaves the stock datapath
//! behind (fail open).

pub mod calibration;
pub mod classifier;
pub mod events;
pub mod kernel_log;
mod port_filter;
pub mod sources;
pub mod steering;
pub mod targets;
mod whole;

use autostop_common::{names, MAX_SERVICES};
use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, SkLookup},
    Ebpf, EbpfLoader,
};

use port_filter::PortFilter;

pub use classifier::{ActivityReader, Classifier};
pub use events::{Family, WakeEvent, WakeEvents};
pub use kernel_log::KernelLog;
pub use sources::SourceFilter;
pub use steering::{ListenerSlots, SteeringMaps};
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

/// The loaded kernel programs and the agent's view of their maps, in one
/// value: for tools (`autostop watch`) and tests. The agent splits it with
/// [`Datapath::into_parts`] so that each part is owned by the one task that
/// uses it; [`whole`] forwards the parts' methods for everyone else.
pub struct Datapath {
    /// The loaded object (programs and links), the targets and counters.
    classifier: Classifier,
    /// The sk_lookup maps and the listener slots.
    steering: SteeringMaps,
    /// Ignored source CIDRs.
    sources: SourceFilter,
    /// Wake events, until [`Datapath::wake_events`] hands them out.
    wake_ring: Option<RingBuf<MapData>>,
    /// The kernel's log lines, until [`Datapath::into_parts`] hands them
    /// out (`None` for an object without a log map).
    log_map: Option<kernel_log::LogMap>,
}

/// The datapath cut into the parts the agent's tasks own (see
/// [`Datapath::into_parts`]).
pub struct DatapathParts {
    /// Programs, links, targets and counters: the endpoint refresher's.
    pub classifier: Classifier,
    /// A read-only view of the activity counters, for the services' idle
    /// checks (reads need no exclusive access).
    pub activity: ActivityReader,
    /// The steering maps and listener slots: the steering worker's.
    pub steering: SteeringMaps,
    /// The ignored sources: whoever applies config reloads.
    pub sources: SourceFilter,
    /// The wake events: the wake loop's.
    pub wake_events: WakeEvents,
    /// The kernel's log lines: their own task's (`None` when the object
    /// has no log map or it could not be registered).
    pub kernel_log: Option<KernelLog>,
}

impl Datapath {
    /// Loads the embedded object into the kernel (programs loaded, nothing
    /// attached). Needs CAP_BPF and CAP_NET_ADMIN (or root). The kernel
    /// logs at the levels the `tracing` subscriber enables for
    /// `autostop::ebpf` now ([`kernel_log::kernel_level`]).
    pub fn load() -> Result<Self, BpfError> {
        let level = kernel_log::kernel_level();
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, false)
            .load(EBPF_OBJECT)?;
        // Before the programs load: they reference the map.
        let log_map = kernel_log::LogMap::take(&mut ebpf);
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
        classifier_program(&mut ebpf)?
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
            classifier: Classifier::new(ebpf, targets, target_ports, targets_v4, activity, stats),
            steering: SteeringMaps::new(steered, steered_any, steered_ports, listeners),
            sources: SourceFilter::new(ignored, ignored_count),
            wake_ring: Some(wake_ring),
            log_map,
        })
    }

    /// Cuts the datapath into the parts the agent's tasks own. Must be
    /// called inside a tokio runtime (the wake events register with its
    /// reactor); fails with [`BpfError::EventsTaken`] when
    /// [`Datapath::wake_events`] already handed them out.
    pub fn into_parts(mut self) -> Result<DatapathParts, BpfError> {
        let wake_events = self.wake_events()?;
        let activity = self.classifier.activity_reader()?;
        let kernel_log = self
            .log_map
            .take()
            .and_then(|map| match KernelLog::register(map) {
                Ok(log) => Some(log),
                Err(error) => {
                    tracing::warn!(%error, "kernel log lines are off");
                    None
                }
            });
        Ok(DatapathParts {
            classifier: self.classifier,
            activity,
            steering: self.steering,
            sources: self.sources,
            wake_events,
            kernel_log,
        })
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
fn classifier_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
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
