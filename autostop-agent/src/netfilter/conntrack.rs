//! Deletes the half-open (SYN_SENT) TCP conntrack entries of one published
//! (address,) port over ctnetlink.
//!
//! A SYN that got a conntrack entry keeps that entry's NAT decision for its
//! retransmits. At the switch from warm-up to the container, and when
//! warm-up begins, the entries of SYNs that have no socket yet must go, so
//! their retransmits are NATed afresh by the current rules.
//!
//! One dump per address family, filtered in the kernel by the original
//! direction's protocol, destination port and (for a [`HostPort`] with an
//! address) destination address (`CTA_FILTER`); every entry is checked
//! again here, with its TCP state, and deleted by its original tuple and
//! id (so an entry replaced meanwhile is left alone). The original
//! direction is the published host port, also for entries DNATed to a
//! container.

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
/// `CTA_TUPLE_ORIG`, `CTA_ID`, `CTA_ZONE`, `CTA_FILTER` and
/// `CTA_FILTER_ORIG_FLAGS`.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `CTA_FILTER_F_CTA_IP_DST`, `…_PROTO_NUM`, `…_PROTO_DST_PORT`.
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;
/// `TCP_CONNTRACK_SYN_SENT`.
const TCP_CONNTRACK_SYN_SENT: u8 = 1;
/// `ENOENT`, negated as netlink reports it: the entry is already gone.
const ENOENT: i32 = -2;

/// The address families to look in for `target`.
fn families(target: HostPort) -> Vec<NetfilterProtoFamily> {
    match target.addr.map(canonical) {
        None => vec![NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6],
        Some(IpAddr::V4(_)) => vec![NetfilterProtoFamily::IPv4],
        Some(IpAddr::V6(_)) => vec![NetfilterProtoFamily::IPv6],
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The dump request for `family`, filtered in the kernel on `target`.
pub(crate) fn dump_request(family: NetfilterProtoFamily, target: HostPort) -> NetfilterMessage {
    let mut flags = FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT;
    let mut tuple = Vec::new();
    if let Some(addr) = target.addr.map(canonical) {
        flags |= FILTER_IP_DST;
        tuple.push(Tuple::Ip(vec![IPTuple::DestinationAddress(addr)]));
    }
    tuple.push(Tuple::Proto(vec![
        ProtoTuple::Protocol(Protocol::Tcp),
        ProtoTuple::DestinationPort(target.port),
    ]));
    let filter = DefaultNla::new(CTA_FILTER_ORIG_FLAGS, flags.to_ne_bytes().to_vec());
    // Raw attributes: the kernel parses CTA_FILTER strictly, which needs
    // NLA_F_NESTED, and the typed `ConntrackAttribute::Other` drops it.
    let attributes = vec![
        nested(CTA_TUPLE_ORIG, &ConntrackAttribute::CtaTupleOrig(tuple)),
        DefaultNla::new(CTA_FILTER | NLA_F_NESTED, emit_all(&[filter])),
    ];
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
    family: NetfilterProtoFamily,
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
        NetfilterHeader::new(family, 0, 0),
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
    let mut deleted = 0;
    for family in families(target) {
        let entries = socket.dump(op, dump_request(family, target), deadline)?;
        for entry in &entries {
            let Some(request) = delete_request(family, entry, target) else {
                continue;
            };
            match socket.request(op, request, deadline)? {
                0 => deleted += 1,
                // Gone meanwhile (expired, or answered and replaced).
                ENOENT => {}
                code => return Err(NetfilterError::kernel(op, "conntrack delete", code)),
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
