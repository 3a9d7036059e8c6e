//! Ignored sources: CIDRs whose traffic is not activity (health checks,
//! monitoring, the agent's own probes). The classifier does not count
//! packets from them, and wake events from them carry a flag.

use std::{collections::BTreeSet, net::IpAddr};

use autostop_common::{names, v4_mapped};
use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData, MapError};
use ipnet::IpNet;

use super::BpfError;

/// The ignored sources' trie and its count, read by both programs.
pub struct SourceFilter {
    /// Ignored source CIDRs.
    ignored: LpmTrie<MapData, [u8; 16], u8>,
    /// The (prefix length, address) keys now in `ignored`, so a new set can
    /// replace the old one entry by entry.
    ignored_keys: BTreeSet<(u32, [u8; 16])>,
    /// How many keys `ignored` has, read by the programs before the trie.
    ignored_count: Array<MapData, u32>,
}

impl SourceFilter {
    pub(super) fn new(
        ignored: LpmTrie<MapData, [u8; 16], u8>,
        ignored_count: Array<MapData, u32>,
    ) -> Self {
        Self {
            ignored,
            ignored_keys: BTreeSet::new(),
            ignored_count,
        }
    }

    /// Replaces the set of ignored source CIDRs with `nets` (host bits are
    /// dropped; an empty slice ignores nothing).
    pub fn set_ignored_sources(&mut self, nets: &[IpNet]) -> Result<(), BpfError> {
        let wanted: BTreeSet<(u32, [u8; 16])> = nets.iter().map(source_key).collect();
        let added: Vec<_> = wanted.difference(&self.ignored_keys).copied().collect();
        for (prefix, addr) in added {
            self.ignored
                .insert(&Key::new(prefix, addr), 1, 0)
                .map_err(|source| BpfError::Map {
                    map: names::IGNORED_SOURCES,
                    source,
                })?;
            self.ignored_keys.insert((prefix, addr));
        }
        self.publish_ignored_count()?;
        let removed: Vec<_> = self.ignored_keys.difference(&wanted).copied().collect();
        for (prefix, addr) in removed {
            match self.ignored.remove(&Key::new(prefix, addr)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(BpfError::Map {
                        map: names::IGNORED_SOURCES,
                        source,
                    })
                }
            }
            self.ignored_keys.remove(&(prefix, addr));
        }
        self.publish_ignored_count()
    }

    /// Tells the programs how many CIDRs the trie holds (0: skip it).
    fn publish_ignored_count(&mut self) -> Result<(), BpfError> {
        let count = u32::try_from(self.ignored_keys.len()).unwrap_or(u32::MAX);
        self.ignored_count
            .set(0, count, 0)
            .map_err(|source| BpfError::Map {
                map: names::IGNORED_SOURCE_COUNT,
                source,
            })
    }

    /// The ignored CIDRs now in the kernel, as given (IPv4 as IPv4).
    pub fn ignored_sources(&self) -> Vec<IpNet> {
        self.ignored_keys
            .iter()
            .filter_map(|&(prefix, addr)| {
                let ip = std::net::Ipv6Addr::from(addr);
                let prefix = u8::try_from(prefix).ok()?;
                match ip.to_ipv4_mapped() {
                    Some(v4) if prefix >= 96 => IpNet::new(IpAddr::V4(v4), prefix - 96).ok(),
                    _ => IpNet::new(IpAddr::V6(ip), prefix).ok(),
                }
            })
            .collect()
    }
}

/// The trie key of a CIDR: IPv4 v4-mapped with the prefix length plus 96,
/// IPv6 as is; host bits cleared.
fn source_key(net: &IpNet) -> (u32, [u8; 16]) {
    match net.trunc() {
        IpNet::V4(net) => (
            u32::from(net.prefix_len()) + 96,
            v4_mapped(net.network().octets()),
        ),
        IpNet::V6(net) => (u32::from(net.prefix_len()), net.network().octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_cidrs_are_v4_mapped_with_96_more_bits() {
        let net: IpNet = "127.0.0.2/32".parse().expect("cidr");
        let (prefix, addr) = source_key(&net);
        assert_eq!(prefix, 128);
        assert_eq!(&addr[10..], &[0xff, 0xff, 127, 0, 0, 2]);
        let (prefix, addr) = source_key(&"10.1.2.3/8".parse().expect("cidr"));
        assert_eq!(prefix, 104);
        assert_eq!(&addr[12..], &[10, 0, 0, 0], "host bits dropped");
    }

    #[test]
    fn ipv6_cidrs_are_stored_as_given() {
        let (prefix, addr) = source_key(&"fd00::1/64".parse().expect("cidr"));
        assert_eq!(prefix, 64);
        assert_eq!(
            addr,
            "fd00::".parse::<std::net::Ipv6Addr>().expect("ip").octets()
        );
    }
}
