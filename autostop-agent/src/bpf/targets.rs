//! The destinations the traffic classifier counts: which container address
//! and port (or published host port) belongs to which service index, in the
//! kernel's hash map and its direct-mapped IPv4 copy ([`Classifier`]'s
//! targets), and how a service's index is cleared before reuse.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use super::{BpfError, Classifier};
use crate::config::Protocol;
use autostop_common::{names, proto, TargetKey, TargetSlotV4, MAX_SERVICES};

/// The one flag of `TARGET_PORTS`: some target has the port (the
/// classifier reads any non-zero byte).
const TARGET_PORT: u8 = 1;

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

impl Classifier {
    /// Counts traffic to `target` as activity of service `service` (adding
    /// a known target again only updates its service).
    pub fn add_target(&mut self, target: &Target, service: u32) -> Result<(), BpfError> {
        if service >= MAX_SERVICES {
            return Err(BpfError::ServiceIndex(service));
        }
        let key = target.key();
        let is_new = !self.target_keys.contains_key(&key);
        // The port is let through before the target exists, and the hash map
        // holds a target before its IPv4 slot points at it, so the
        // classifier never sees a half-added target.
        if is_new {
            self.target_ports.retain(key.port, TARGET_PORT)?;
        }
        if let Err(source) = self.targets.insert(key, service, 0) {
            if is_new {
                self.target_ports.release(key.port, TARGET_PORT)?;
            }
            return Err(BpfError::Map {
                map: names::SERVICE_TARGETS,
                source,
            });
        }
        self.target_keys.insert(key, service);
        self.rebuild_v4_slot(&key)
    }

    /// Stops counting traffic to `target`. Unknown targets are ignored.
    pub fn remove_target(&mut self, target: &Target) -> Result<(), BpfError> {
        self.remove_key(target.key())
    }

    fn remove_key(&mut self, key: TargetKey) -> Result<(), BpfError> {
        let was_known = self.target_keys.remove(&key).is_some();
        // The slot forgets the target before the hash map does.
        self.rebuild_v4_slot(&key)?;
        match self.targets.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(BpfError::Map {
                    map: names::SERVICE_TARGETS,
                    source,
                })
            }
        }
        if was_known {
            self.target_ports.release(key.port, TARGET_PORT)?;
        }
        Ok(())
    }

    /// Rewrites the `TARGETS_V4` slot `key` hashes to from the targets now
    /// known: empty, the one target there, or "shared" (the classifier then
    /// asks the hash map). A no-op for IPv6 keys. Rare (targets change when
    /// containers start or stop), so scanning every key is fine.
    fn rebuild_v4_slot(&mut self, key: &TargetKey) -> Result<(), BpfError> {
        let Some(octets) = ipv4_octets(key) else {
            return Ok(());
        };
        let index = TargetSlotV4::index(octets, key.port, key.protocol);
        let slot = slot_for(
            self.target_keys
                .iter()
                .filter_map(|(k, service)| Some((ipv4_octets(k)?, k, *service)))
                .filter(|(o, k, _)| TargetSlotV4::index(*o, k.port, k.protocol) == index)
                .map(|(o, k, service)| (o, k.port, k.protocol, service)),
        );
        self.targets_v4
            .set(index, slot, 0)
            .map_err(|source| BpfError::Map {
                map: names::TARGETS_V4,
                source,
            })
    }

    /// Forgets `service` before its index is given to another service:
    /// every counted destination that points at it is removed, then its
    /// counters are set back to zero, so the next service under this index
    /// inherits neither targets nor counts.
    pub fn clear_service(&mut self, service: u32) -> Result<(), BpfError> {
        let keys: Vec<TargetKey> = self
            .target_keys
            .iter()
            .filter(|(_, owner)| **owner == service)
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.remove_key(key)?;
        }
        self.zero_activity(service)
    }

    /// The destinations now counted for `service`, in no order.
    pub fn targets_of(&self, service: u32) -> Vec<TargetKey> {
        self.target_keys
            .iter()
            .filter(|(_, owner)| **owner == service)
            .map(|(key, _)| *key)
            .collect()
    }
}

/// The IPv4 address of a v4-mapped key, `None` for IPv6.
fn ipv4_octets(key: &TargetKey) -> Option<[u8; 4]> {
    let (prefix, octets) = key.addr.split_at(12);
    (prefix == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
        .then(|| octets.try_into().ok())
        .flatten()
}

/// The slot value for the IPv4 targets (address, port, protocol, service)
/// that hash to one slot.
fn slot_for(mut targets: impl Iterator<Item = ([u8; 4], u16, u8, u32)>) -> TargetSlotV4 {
    match (targets.next(), targets.next()) {
        (None, _) => TargetSlotV4::default(),
        (Some((octets, port, protocol, service)), None) => {
            TargetSlotV4::single(octets, port, protocol, service)
        }
        (Some(_), Some(_)) => TargetSlotV4::shared(),
    }
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
    fn a_slot_is_empty_single_or_shared() {
        assert_eq!(slot_for(std::iter::empty()), TargetSlotV4::default());
        let one = slot_for([([10, 0, 0, 2], 80, proto::TCP, 7)].into_iter());
        assert_eq!(one.flags, TargetSlotV4::USED);
        assert_eq!(
            (one.addr, one.port, one.protocol, one.service),
            (u32::from_ne_bytes([10, 0, 0, 2]), 80, proto::TCP, 7)
        );
        let two = [
            ([10, 0, 0, 2], 80, proto::TCP, 7),
            ([10, 0, 0, 3], 80, proto::TCP, 8),
        ];
        assert_eq!(slot_for(two.into_iter()), TargetSlotV4::shared());
    }

    #[test]
    fn only_v4_mapped_keys_have_ipv4_octets() {
        let v4: Target = "172.17.0.2:80".parse().expect("valid");
        assert_eq!(ipv4_octets(&v4.key()), Some([172, 17, 0, 2]));
        let v6: Target = "[fd00::2]:80".parse().expect("valid");
        assert_eq!(ipv4_octets(&v6.key()), None);
    }

    #[test]
    fn slot_indexes_spread_docker_addresses() {
        // Typical Docker bridge addresses: 10 networks of 40 containers, two
        // ports each. Most must get a slot of their own (else the array
        // buys nothing over the hash map).
        let mut used = std::collections::HashMap::<u32, u32>::new();
        for network in 17..27u8 {
            for host in 2..42u8 {
                for port in [80, 443] {
                    let index = TargetSlotV4::index([172, network, 0, host], port, proto::TCP);
                    assert!(index < autostop_common::V4_SLOTS);
                    *used.entry(index).or_default() += 1;
                }
            }
        }
        let alone = used.values().filter(|n| **n == 1).count();
        assert!(
            alone * 100 >= 800 * 90,
            "{alone} of 800 targets alone in their slot"
        );
    }

    #[test]
    fn ipv4_and_mapped_ipv6_share_a_key() {
        let v4: Target = "10.1.2.3:80".parse().expect("valid");
        let mapped: Target = "[::ffff:10.1.2.3]:80".parse().expect("valid");
        assert_eq!(v4.key(), mapped.key());
        assert_eq!(&v4.key().addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }
}
