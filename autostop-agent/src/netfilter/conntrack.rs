//! Deletes the half-open (SYN_SENT) TCP conntrack entries of one published
//! (address,) port over ctnetlink.
//!
//! A SYN that got a conntrack entry keeps that entry's NAT decision for its
//! retransmits. At the switch from warm-up to the container, and when
//! warm-up begins, the entries of SYNs that have no socket yet must go, so
//! their retransmits are NATed afresh by the current rules.
//!
//! One dump, which walks the kernel's whole conntrack table (that walk is
//! most of the cost), filtered in the kernel to entries that have seen no
//! reply (`CTA_STATUS`) and, for a [`HostPort`] with an address, to its
//! address family, protocol, destination port and address (`CTA_FILTER`,
//! which needs one family, so a port on every address is filtered on the
//! status only). Every entry is checked again here, with its TCP state,
//! and deleted by its original tuple and id (so an entry replaced meanwhile
//! is left alone). The original direction is the published host port, also
//! for entries DNATed to a container.

use std::{net::IpAddr, time::Instant};

use netlink_packet_core::{DefaultNla, Emitable, Nla, NLA_F_NESTED, NLA_TYPE_MASK};
use netlink_packet_netfilter::{
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Tuple,
    },
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};

use super::{socket::NfSocket, NetfilterError, Operation};
use crate::published::HostPort;

/// `IPCTNL_MSG_CT_GET`.
const IPCTNL_MSG_CT_GET: u8 = 1;
/// `CTA_TUPLE_ORIG`, `CTA_STATUS`, `CTA_ID`, `CTA_ZONE`, `CTA_FILTER`,
/// `CTA_STATUS_MASK` and `CTA_FILTER_ORIG_FLAGS`.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_STATUS: u16 = 3;
const CTA_STATUS_MASK: u16 = 26;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `IPS_SEEN_REPLY`: the entry has seen traffic in the reply direction.
const IPS_SEEN_REPLY: u32 = 1 << 1;
/// `CTA_FILTER_F_CTA_IP_DST`, `…_PROTO_NUM`, `…_PROTO_DST_PORT`.
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;
/// `TCP_CONNTRACK_SYN_SENT`.
const TCP_CONNTRACK_SYN_SENT: u8 = 1;
/// `ENOENT`, negated as netlink reports it: the entry is already gone.
const ENOENT: i32 = -2;

/// The family to dump for `target`: its address's, or both (unspecified).
fn family(target: HostPort) -> NetfilterProtoFamily {
    match target.addr.map(canonical) {
        None => NetfilterProtoFamily::Unspec,
        Some(IpAddr::V4(_)) => NetfilterProtoFamily::IPv4,
        Some(IpAddr::V6(_)) => NetfilterProtoFamily::IPv6,
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The dump request for `target`'s SYN_SENT candidates, filtered in the
/// kernel as far as it can (kernels before 6.0 ignore the status filter
/// and send more; the check here is the same).
pub(crate) fn dump_request(target: HostPort) -> NetfilterMessage {
    // Unreplied: status & IPS_SEEN_REPLY == 0.
    let mut attributes = vec![
        DefaultNla::new(CTA_STATUS, 0u32.to_be_bytes().to_vec()),
        DefaultNla::new(CTA_STATUS_MASK, IPS_SEEN_REPLY.to_be_bytes().to_vec()),
    ];
    let family = family(target);
    if let Some(addr) = target.addr.map(canonical) {
        let flags = FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT;
        let tuple = vec![
            Tuple::Ip(vec![IPTuple::DestinationAddress(addr)]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::DestinationPort(target.port),
            ]),
        ];
        let filter = DefaultNla::new(CTA_FILTER_ORIG_FLAGS, flags.to_ne_bytes().to_vec());
        // Raw attributes: the kernel parses CTA_FILTER strictly, which
        // needs NLA_F_NESTED, and the typed `ConntrackAttribute::Other`
        // drops it.
        attributes.push(nested(
            CTA_TUPLE_ORIG,
            &ConntrackAttribute::CtaTupleOrig(tuple),
        ));
        attributes.push(DefaultNla::new(
            CTA_FILTER | NLA_F_NESTED,
            emit_all(&[filter]),
        ));
    }
    NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Conntrack,
            message_type: IPCTNL_MSG_CT_GET,
            attributes,
        },
    )
}

/// The value bytes of `attrs`, one after the other.
fn emit_all(attrs: &[DefaultNla]) -> Vec<u8> {
    let mut bytes = vec![0; attrs.buffer_len()];
    attrs.emit(&mut bytes);
    bytes
}

/// A nested attribute `kind` holding `attr`'s value.
fn nested(kind: u16, attr: &ConntrackAttribute) -> DefaultNla {
    let mut value = vec![0; attr.value_len()];
    attr.emit_value(&mut value);
    DefaultNla::new(kind | NLA_F_NESTED, value)
}

/// For a dumped entry that is a SYN_SENT TCP connection to `target`, the
/// request deleting exactly it; `None` for any other entry.
pub(crate) fn delete_request(
    entry: &NetfilterMessage,
    target: HostPort,
) -> Option<NetfilterMessage> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = &entry.inner else {
        return None;
    };
    let mut orig = None;
    let mut syn_sent = false;
    let mut keep = Vec::new();
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(tuple) => orig = Some(tuple),
            ConntrackAttribute::CtaProtoInfo(info) => {
                syn_sent = info.iter().any(|i| match i {
                    ProtoInfo::TCP(tcp) => {
                        tcp.contains(&ProtoInfoTCP::State(TCP_CONNTRACK_SYN_SENT))
                    }
                    _ => false,
                });
            }
            ConntrackAttribute::Other(nla)
                if matches!(nla.kind() & NLA_TYPE_MASK, CTA_ID | CTA_ZONE) =>
            {
                keep.push(attr.clone());
            }
            _ => {}
        }
    }
    let orig = orig?;
    if !syn_sent || !tuple_matches(orig, target) {
        return None;
    }
    let mut request = vec![ConntrackAttribute::CtaTupleOrig(orig.clone())];
    request.extend(keep);
    Some(NetfilterMessage::new(
        NetfilterHeader::new(entry.header.family, 0, 0),
        ConntrackMessage::Delete(request),
    ))
}

/// Whether an original-direction tuple is TCP to `target`.
fn tuple_matches(tuple: &[Tuple], target: HostPort) -> bool {
    let mut dst = None;
    let (mut tcp, mut port) = (false, None);
    for part in tuple {
        match part {
            Tuple::Ip(ip) => {
                for a in ip {
                    if let IPTuple::DestinationAddress(addr) = a {
                        dst = Some(*addr);
                    }
                }
            }
            Tuple::Proto(proto) => {
                for p in proto {
                    match p {
                        ProtoTuple::Protocol(Protocol::Tcp) => tcp = true,
                        ProtoTuple::DestinationPort(p) => port = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let Some(dst) = dst else {
        return false;
    };
    tcp && port.is_some_and(|p| target.matches(dst, p))
}

/// Deletes `target`'s SYN_SENT entries and returns how many went.
pub(crate) fn forget_syn_sent(
    socket: &mut NfSocket,
    target: HostPort,
    deadline: Instant,
) -> Result<u64, NetfilterError> {
    let op = Operation::ForgetSynSent(target);
    let mut deleted: u64 = 0;
    let entries = socket.dump(op, dump_request(target), deadline)?;
    for entry in &entries {
        let Some(request) = delete_request(entry, target) else {
            continue;
        };
        match socket.request(op, request, deadline)? {
            0 => deleted = deleted.saturating_add(1),
            // Gone meanwhile (expired, or answered and replaced).
            ENOENT => {}
            code => return Err(NetfilterError::kernel(op, "conntrack delete", code)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
#[path = "conntrack_tests.rs"]
mod tests;
