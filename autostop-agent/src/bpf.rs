//! The agent's handle on the kernel programs: loads the eBPF object embedded
//! at build time, attaches the traffic classifier to interfaces through
//! bpf_links, tells the kernel which destinations belong to which service and
//! reads the per-service activity counters back.
//!
//! Everything is owned by [`Datapath`]: dropping it (or the process dying)
//! closes the link and program file descriptors, and the kernel detaches the
//! programs by itself. Nothing is pinned, so a dead agent leaves the stock
//! datapath behind (fail open).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use crate::config::Protocol;
use autostop_common::{names, proto, Activity, DatapathStats, TargetKey, MAX_SERVICES};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType},
    Ebpf,
};

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
    /// type: the object and the agent were built from different sources.
    #[error("map {map}: {source}")]
    Map {
        /// Which map, by name.
        map: &'static str,
        /// The mismatch or syscall failure.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map named in `autostop_common::names` is not in the object.
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A service index beyond the arrays' size.
    #[error("service index {0} is out of range (at most {MAX_SERVICES} services)")]
    ServiceIndex(u32),
}

/// Kernel protocol number of a service port's protocol.
fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => proto::TCP,
        Protocol::Udp => proto::UDP,
    }
}

/// A destination whose traffic belongs to a service: a container address and
/// port, or a published host port on a local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Destination address and port as seen on the wire.
    pub addr: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl Target {
    /// The key the kernel looks the packet up with.
    pub fn key(&self) -> TargetKey {
        let port = self.addr.port();
        let protocol = protocol_number(self.protocol);
        match self.addr.ip() {
            IpAddr::V4(ip) => TargetKey::ipv4(ip.octets(), port, protocol),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => TargetKey::ipv4(v4.octets(), port, protocol),
                None => TargetKey::ipv6(ip.octets(), port, protocol),
            },
        }
    }
}

/// Error for a malformed `ADDR:PORT[/tcp|/udp]` target.
#[derive(Debug, thiserror::Error)]
#[error("invalid target {input:?}: expected ADDR:PORT, ADDR:PORT/tcp or ADDR:PORT/udp ({reason})")]
pub struct TargetParseError {
    input: String,
    reason: String,
}

impl FromStr for Target {
    type Err = TargetParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| TargetParseError {
            input: input.to_owned(),
            reason,
        };
        let (addr, protocol) = match input.rsplit_once('/') {
            Some((addr, "tcp")) => (addr, Protocol::Tcp),
            Some((addr, "udp")) => (addr, Protocol::Udp),
            Some((_, other)) => return Err(fail(format!("unknown protocol {other:?}"))),
            None => (input, Protocol::Tcp),
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Target { addr, protocol })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// The loaded kernel programs and the agent's view of their maps.
pub struct Datapath {
    /// Owns programs, maps and links; dropping it detaches everything.
    ebpf: Ebpf,
    /// Destination → service index.
    targets: HashMap<MapData, TargetKey, u32>,
    /// Per-service, per-CPU traffic counters.
    activity: PerCpuArray<MapData, Activity>,
    /// Classifier health counters.
    stats: PerCpuArray<MapData, DatapathStats>,
    /// Interfaces the classifier is attached to, with the link that holds it.
    attached: Vec<(String, SchedClassifierLinkId)>,
}

impl Datapath {
    /// Loads the embedded object into the kernel. Needs CAP_BPF and
    /// CAP_NET_ADMIN (or root).
    pub fn load() -> Result<Self, BpfError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT)?;
        let targets = take_map(&mut ebpf, names::SERVICE_TARGETS)?;
        let activity = take_map(&mut ebpf, names::ACTIVITY)?;
        let stats = take_map(&mut ebpf, names::DATAPATH_STATS)?;
        let program = classifier(&mut ebpf)?;
        program.load().map_err(|source| BpfError::Program {
            program: names::COUNT_TRAFFIC,
            source,
        })?;
        Ok(Self {
            ebpf,
            targets,
            activity,
            stats,
            attached: Vec::new(),
        })
    }

    /// Attaches the classifier to the egress side of `interface` (traffic the
    /// host sends out of it: for a Docker bridge, traffic into containers).
    /// Uses a tcx bpf_link, so the attachment dies with the agent.
    pub fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError> {
        if self.attached.iter().any(|(name, _)| name == interface) {
            return Ok(());
        }
        let link = classifier(&mut self.ebpf)?
            .attach(interface, TcAttachType::Egress)
            .map_err(|source| BpfError::Attach {
                program: names::COUNT_TRAFFIC,
                interface: interface.to_owned(),
                source,
            })?;
        self.attached.push((interface.to_owned(), link));
        Ok(())
    }

    /// Detaches the classifier from `interface`; a no-op if it was not
    /// attached (the interface may already be gone with its link).
    pub fn detach(&mut self, interface: &str) -> Result<(), BpfError> {
        let Some(position) = self.attached.iter().position(|(name, _)| name == interface) else {
            return Ok(());
        };
        let (_, link) = self.attached.swap_remove(position);
        classifier(&mut self.ebpf)?
            .detach(link)
            .map_err(|source| BpfError::Program {
                program: names::COUNT_TRAFFIC,
                source,
            })
    }

    /// Interfaces the classifier is attached to.
    pub fn attached_interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(|(name, _)| name.as_str())
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

    /// Counts traffic to `target` as activity of service `service`.
    pub fn add_target(&mut self, target: &Target, service: u32) -> Result<(), BpfError> {
        if service >= MAX_SERVICES {
            return Err(BpfError::ServiceIndex(service));
        }
        self.targets
            .insert(target.key(), service, 0)
            .map_err(|source| BpfError::Map {
                map: names::SERVICE_TARGETS,
                source,
            })
    }

    /// Stops counting traffic to `target`. Unknown targets are ignored.
    pub fn remove_target(&mut self, target: &Target) -> Result<(), BpfError> {
        match self.targets.remove(&target.key()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(BpfError::Map {
                map: names::SERVICE_TARGETS,
                source,
            }),
        }
    }

    /// Activity of one service, summed over CPUs (`last_seen_ns` is the
    /// newest of them).
    pub fn activity(&self, service: u32) -> Result<Activity, BpfError> {
        if service >= MAX_SERVICES {
            return Err(BpfError::ServiceIndex(service));
        }
        let per_cpu = self
            .activity
            .get(&service, 0)
            .map_err(|source| BpfError::Map {
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

    /// The classifier's own counters, summed over CPUs.
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
            }))
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    ebpf.program_mut(names::COUNT_TRAFFIC)
        .ok_or(BpfError::MissingMap(names::COUNT_TRAFFIC))?
        .try_into()
        .map_err(|source| BpfError::Program {
            program: names::COUNT_TRAFFIC,
            source,
        })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| BpfError::Map { map: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parses_with_and_without_protocol() {
        let t: Target = "127.0.0.1:8080".parse().expect("valid");
        assert_eq!(t.protocol, Protocol::Tcp);
        assert_eq!(t.addr.port(), 8080);
        let t: Target = "[::1]:53/udp".parse().expect("valid");
        assert_eq!(t.protocol, Protocol::Udp);
        assert_eq!(t.to_string(), "[::1]:53/udp");
    }

    #[test]
    fn target_rejects_bad_protocol_and_address() {
        let err = "127.0.0.1:80/sctp"
            .parse::<Target>()
            .expect_err("bad proto");
        assert!(err.to_string().contains("sctp"), "{err}");
        assert!("localhost:80".parse::<Target>().is_err());
        assert!("127.0.0.1".parse::<Target>().is_err());
    }

    #[test]
    fn ipv4_and_mapped_ipv6_share_a_key() {
        let v4: Target = "10.1.2.3:80".parse().expect("valid");
        let mapped: Target = "[::ffff:10.1.2.3]:80".parse().expect("valid");
        assert_eq!(v4.key(), mapped.key());
        assert_eq!(&v4.key().addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }
}
