//! The warm-up table as typed nf_tables messages: the install batch (table
//! with the `owner` flag, three sets, two nat chains, their rules), set
//! element batches for warm, cool and refresh, the element listing and its
//! parsing. Free of I/O so unit tests check the encoding.
//!
//! Sets, keyed as Docker publishes (see [`crate::published`]):
//! - `warming`: `inet_service`, ports published on every local address;
//! - `warming4`: `ipv4_addr . inet_service`, one IPv4 address and port;
//! - `warming6`: `ipv6_addr . inet_service`, one IPv6 address and port.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::{
    nftables::{
        ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, InetHookNumber,
        ListAttribute, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute,
        SetElementAttribute, SetElementList, SetElementMessage, SetFlags, SetMessage,
        TableAttribute, TableFlags, TableMessage,
    },
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::{
    expr::{self, IpVersion},
    socket::BatchMessage,
    KernelElement, WarmupOptions,
};
use crate::published::HostPort;

/// nft's datatype ids (`TYPE_IPADDR`, `TYPE_IP6ADDR`, `TYPE_INET_SERVICE`)
/// and the shift it combines concatenated types with; informational for the
/// kernel, read back by `nft list` to print the elements.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;
/// `NF_ACCEPT`: the chains' policy.
const NF_ACCEPT: u32 = 1;

/// Our nat chains and their hooks: `prerouting` for traffic from other
/// hosts and containers, `output` for clients on this host.
const CHAINS: [(&str, InetHookNumber); 2] = [
    ("prerouting", InetHookNumber::PreRouting),
    ("output", InetHookNumber::LocalOut),
];

/// Which of the three sets an element lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SetKind {
    /// Port on every local address.
    Any,
    /// IPv4 address and port.
    V4,
    /// IPv6 address and port.
    V6,
}

impl SetKind {
    /// Every set, in install order.
    pub(crate) const ALL: [Self; 3] = [Self::Any, Self::V4, Self::V6];

    /// The set's name in the table.
    pub(crate) fn set_name(self) -> &'static str {
        match self {
            Self::Any => "warming",
            Self::V4 => "warming4",
            Self::V6 => "warming6",
        }
    }

    /// The set's id within the install batch (rules refer to it).
    fn id(self) -> u32 {
        match self {
            Self::Any => 1,
            Self::V4 => 2,
            Self::V6 => 3,
        }
    }

    /// Length of each key field in bytes.
    fn fields(self) -> &'static [u32] {
        match self {
            Self::Any => &[2],
            Self::V4 => &[4, 2],
            Self::V6 => &[16, 2],
        }
    }

    /// Key length: fields of a concatenation are padded to 4 bytes.
    fn key_len(self) -> u32 {
        match self {
            Self::Any => 2,
            _ => self.fields().iter().fold(0u32, |len, f| {
                len.saturating_add(f.div_ceil(4).saturating_mul(4))
            }),
        }
    }

    fn key_type(self) -> u32 {
        match self {
            Self::Any => TYPE_INET_SERVICE,
            Self::V4 => (TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE,
            Self::V6 => (TYPE_IP6ADDR << TYPE_BITS) | TYPE_INET_SERVICE,
        }
    }
}

/// The set and key bytes of `host`. IPv4-mapped IPv6 addresses go to the
/// IPv4 set, as packets to them are IPv4 packets.
pub(crate) fn key(host: HostPort) -> (SetKind, Vec<u8>) {
    let port = host.port.to_be_bytes();
    let addr = host.addr.map(|a| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        IpAddr::V4(_) => a,
    });
    match addr {
        None => (SetKind::Any, port.to_vec()),
        Some(IpAddr::V4(v4)) => {
            let mut key = v4.octets().to_vec();
            key.extend([port[0], port[1], 0, 0]);
            (SetKind::V4, key)
        }
        Some(IpAddr::V6(v6)) => {
            let mut key = v6.octets().to_vec();
            key.extend([port[0], port[1], 0, 0]);
            (SetKind::V6, key)
        }
    }
}

/// The inverse of [`key`]; `None` for a key of the wrong length.
pub(crate) fn host_port(kind: SetKind, key: &[u8]) -> Option<HostPort> {
    let port_at = |at: &[u8]| match at {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    };
    match (kind, key.len()) {
        (SetKind::Any, 2) => Some(HostPort::any(port_at(key)?)),
        (SetKind::V4, 8) => {
            let (octets, port) = key.split_first_chunk::<4>()?;
            Some(HostPort::on(Ipv4Addr::from(*octets).into(), port_at(port)?))
        }
        (SetKind::V6, 20) => {
            let (octets, port) = key.split_first_chunk::<16>()?;
            Some(HostPort::on(Ipv6Addr::from(*octets).into(), port_at(port)?))
        }
        _ => None,
    }
}

fn message(message: NfTablesMessage, flags: u16, label: String) -> BatchMessage {
    BatchMessage {
        message,
        flags,
        label,
    }
}

fn table(name: &str, owner: bool) -> NfTablesMessage {
    let mut attributes = vec![TableAttribute::Name(name.to_owned())];
    if owner {
        attributes.push(TableAttribute::Flags(TableFlags::Owner));
    }
    NfTablesMessage::NewTable(TableMessage { attributes })
}

fn set(options: &WarmupOptions, kind: SetKind) -> NfTablesMessage {
    // As nft sends it: a hash set with timeouts; a concatenation needs no
    // field description unless it holds intervals.
    let attributes = vec![
        SetAttribute::Table(options.table.clone()),
        SetAttribute::Name(kind.set_name().to_owned()),
        SetAttribute::Flags(SetFlags::Timeout),
        SetAttribute::KeyType(kind.key_type()),
        SetAttribute::KeyLen(kind.key_len()),
        SetAttribute::Id(kind.id()),
    ];
    NfTablesMessage::NewSet(SetMessage { attributes })
}

fn chain(options: &WarmupOptions, name: &str, hook: InetHookNumber) -> NfTablesMessage {
    // The kernel reads the priority as a signed 32-bit number.
    let priority = u32::from_ne_bytes(options.priority.to_ne_bytes());
    NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(options.table.clone()),
            ChainAttribute::Name(name.to_owned()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(hook)),
                Hook::Priority(priority),
            ]),
            ChainAttribute::Type("nat".to_owned()),
            ChainAttribute::Policy(NF_ACCEPT),
        ],
    })
}

/// The install batch: removes any table of ours left behind (an add then a
/// delete, so the delete succeeds whether or not it existed), then creates
/// the table with the `owner` flag (the kernel deletes it when our socket
/// closes), the sets, the chains and their rules, as one transaction.
pub(crate) fn install(options: &WarmupOptions) -> Vec<BatchMessage> {
    let name = &options.table;
    let mut out = vec![
        message(table(name, false), NLM_F_CREATE, format!("NEWTABLE {name}")),
        message(
            NfTablesMessage::DeleteTable(TableMessage {
                attributes: vec![TableAttribute::Name(name.clone())],
            }),
            0,
            format!("DELTABLE {name} (the table left behind)"),
        ),
        message(
            table(name, true),
            NLM_F_CREATE,
            format!("NEWTABLE {name} flags owner"),
        ),
    ];
    for kind in SetKind::ALL {
        out.push(message(
            set(options, kind),
            NLM_F_CREATE,
            format!("NEWSET {}", kind.set_name()),
        ));
    }
    for (chain_name, hook) in CHAINS {
        out.push(message(
            chain(options, chain_name, hook),
            NLM_F_CREATE,
            format!("NEWCHAIN {chain_name}"),
        ));
        let rules = [
            (IpVersion::V4, SetKind::Any),
            (IpVersion::V6, SetKind::Any),
            (IpVersion::V4, SetKind::V4),
            (IpVersion::V6, SetKind::V6),
        ];
        for (ip, kind) in rules {
            let rule = NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(name.clone()),
                    RuleAttribute::Chain(chain_name.to_owned()),
                    RuleAttribute::Expressions(expr::rule(ip, kind, kind.id())),
                ],
            });
            out.push(message(
                rule,
                NLM_F_CREATE | NLM_F_APPEND,
                format!("NEWRULE {chain_name} {ip:?} @{}", kind.set_name()),
            ));
        }
    }
    out
}

/// Deletes our table and everything in it.
pub(crate) fn remove_table(options: &WarmupOptions) -> Vec<BatchMessage> {
    vec![message(
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(options.table.clone())],
        }),
        0,
        format!("DELTABLE {}", options.table),
    )]
}

/// One set-element message per set that `hosts` touch.
fn elements(options: &WarmupOptions, hosts: &[HostPort], add: bool) -> Vec<BatchMessage> {
    let timeout_ms = u64::try_from(options.element_timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut out = Vec::new();
    for kind in SetKind::ALL {
        let list: Vec<ListAttribute<SetElementAttribute>> = hosts
            .iter()
            .map(|h| key(*h))
            .filter(|(k, _)| *k == kind)
            .map(|(_, bytes)| {
                let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(bytes))];
                if add {
                    attrs.push(SetElementAttribute::Timeout(timeout_ms));
                }
                ListAttribute::Element(attrs)
            })
            .collect();
        if list.is_empty() {
            continue;
        }
        let body = SetElementMessage {
            attributes: vec![
                SetElementList::Table(options.table.clone()),
                SetElementList::Set(kind.set_name().to_owned()),
                SetElementList::Elements(list),
            ],
        };
        let (msg, flags, verb) = if add {
            (
                NfTablesMessage::NewSetElement(body),
                NLM_F_CREATE,
                "NEWSETELEM",
            )
        } else {
            (NfTablesMessage::DeleteSetElement(body), 0, "DELSETELEM")
        };
        out.push(message(msg, flags, format!("{verb} {}", kind.set_name())));
    }
    out
}

/// Adds `hosts` with the element timeout. With `fresh`, for elements that
/// may exist already: re-adding an element does not restart its timeout, so
/// the batch is add, delete, add (the first add makes the delete valid
/// whether or not the element had expired). One transaction, so a packet
/// never sees the element missing.
pub(crate) fn add_elements(
    options: &WarmupOptions,
    hosts: &[HostPort],
    fresh: bool,
) -> Vec<BatchMessage> {
    let mut out = elements(options, hosts, true);
    if fresh {
        out.extend(elements(options, hosts, false));
        out.extend(elements(options, hosts, true));
    }
    out
}

/// Removes `hosts`, whether or not they are still in their sets (add, then
/// delete).
pub(crate) fn remove_elements(options: &WarmupOptions, hosts: &[HostPort]) -> Vec<BatchMessage> {
    let mut out = elements(options, hosts, true);
    out.extend(elements(options, hosts, false));
    out
}

/// The dump request listing the elements of the set of `kind`.
pub(crate) fn list_request(options: &WarmupOptions, kind: SetKind) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(options.table.clone()),
                SetElementList::Set(kind.set_name().to_owned()),
            ],
        }),
    )
}

/// Reads the elements out of a set-element dump of the set of `kind`.
pub(crate) fn parse_elements(kind: SetKind, messages: &[NetfilterMessage]) -> Vec<KernelElement> {
    let mut out = Vec::new();
    for message in messages {
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(body)) = &message.inner
        else {
            continue;
        };
        for list in &body.attributes {
            let SetElementList::Elements(elements) = list else {
                continue;
            };
            for element in elements {
                let ListAttribute::Element(attrs) = element else {
                    continue;
                };
                let mut found = None;
                let (mut timeout, mut expires) = (None, None);
                for attr in attrs {
                    match attr {
                        SetElementAttribute::Key(DataAttribute::Value(bytes)) => {
                            found = host_port(kind, bytes);
                        }
                        SetElementAttribute::Timeout(ms) => {
                            timeout = Some(Duration::from_millis(*ms));
                        }
                        SetElementAttribute::Expiration(ms) => {
                            expires = Some(Duration::from_millis(*ms));
                        }
                        _ => {}
                    }
                }
                if let Some(host) = found {
                    out.push(KernelElement {
                        host,
                        timeout,
                        expires,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
#[path = "nft_tests.rs"]
mod tests;
