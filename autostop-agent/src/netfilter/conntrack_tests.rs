//! Unit tests of the ctnetlink messages (no root; the privileged suite
//! checks them against the kernel's conntrack table).

use netlink_packet_core::{NetlinkPayload, Nla, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_REQUEST};

use super::*;
use crate::netfilter::socket::{decode_all, encode};

const ESTABLISHED: u8 = 3;

/// A dumped entry as the kernel sends it: TCP from `src` to `dst:port` in
/// `state`, with an id.
fn entry(dst: IpAddr, port: u16, state: u8) -> NetfilterMessage {
    let src: IpAddr = if dst.is_ipv4() {
        "10.9.9.9".parse().expect("ip")
    } else {
        "fd00::9".parse().expect("ip")
    };
    let family = if dst.is_ipv4() {
        NetfilterProtoFamily::IPv4
    } else {
        NetfilterProtoFamily::IPv6
    };
    let message = NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(src),
                    IPTuple::DestinationAddress(dst),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::Tcp),
                    ProtoTuple::SourcePort(40000),
                    ProtoTuple::DestinationPort(port),
                ]),
            ]),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![ProtoInfoTCP::State(
                state,
            )])]),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ID, 77u32.to_be_bytes().to_vec())),
        ]),
    );
    // Through the wire format, as the socket hands it over.
    let wire = encode(message, NLM_F_REQUEST, 1);
    match decode_all(&wire).expect("decode").remove(0).payload {
        NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not a message: {other:?}"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[test]
fn only_syn_sent_entries_of_the_port_are_deleted() {
    let any = HostPort::any(8080);
    let delete = delete_request(&entry(ip("10.0.0.1"), 8080, TCP_CONNTRACK_SYN_SENT), any)
        .expect("a SYN_SENT entry of the port");
    assert_eq!(
        delete.header.family,
        NetfilterProtoFamily::IPv4,
        "the entry's family"
    );
    let NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)) = &delete.inner else {
        panic!("not a delete: {delete:?}")
    };
    assert!(
        matches!(&attrs[0], ConntrackAttribute::CtaTupleOrig(t) if t.len() == 2),
        "deleted by its whole original tuple"
    );
    assert!(
        attrs
            .iter()
            .any(|a| matches!(a, ConntrackAttribute::Other(n) if n.kind() == CTA_ID)),
        "and its id, so a replaced entry is left alone"
    );
    assert!(delete_request(&entry(ip("10.0.0.1"), 8080, ESTABLISHED), any).is_none());
    assert!(delete_request(&entry(ip("10.0.0.1"), 8081, TCP_CONNTRACK_SYN_SENT), any).is_none());
}

#[test]
fn an_address_specific_target_keeps_other_addresses_entries() {
    let lo = HostPort::on(ip("127.0.0.1"), 8080);
    let syn = TCP_CONNTRACK_SYN_SENT;
    assert!(delete_request(&entry(ip("127.0.0.1"), 8080, syn), lo).is_some());
    assert!(delete_request(&entry(ip("10.0.0.1"), 8080, syn), lo).is_none());
    let lo6 = HostPort::on(ip("::1"), 8080);
    assert!(delete_request(&entry(ip("::1"), 8080, syn), lo6).is_some());
    assert!(delete_request(&entry(ip("fd00::1"), 8080, syn), lo6).is_none());
}

#[test]
fn the_family_follows_the_target_address() {
    assert_eq!(family(HostPort::any(1)), NetfilterProtoFamily::Unspec);
    assert_eq!(
        family(HostPort::on(ip("::ffff:127.0.0.1"), 1)),
        NetfilterProtoFamily::IPv4
    );
    assert_eq!(
        family(HostPort::on(ip("::1"), 1)),
        NetfilterProtoFamily::IPv6
    );
}

/// The dump request through the wire format: its bytes and its attributes
/// as decoded.
fn wire_dump(target: HostPort) -> (Vec<u8>, Vec<ConntrackAttribute>) {
    let wire = encode(dump_request(target), NLM_F_REQUEST, 1);
    let decoded = match decode_all(&wire).expect("decode").remove(0).payload {
        NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not a message: {other:?}"),
    };
    match decoded.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::Get(attrs)) => (wire, attrs),
        other => panic!("not a conntrack get: {other:?}"),
    }
}

/// The unreplied-only status filter: CTA_STATUS 0 under CTA_STATUS_MASK
/// IPS_SEEN_REPLY.
fn has_unreplied_filter(attrs: &[ConntrackAttribute]) -> bool {
    let status = attrs
        .iter()
        .any(|a| matches!(a, ConntrackAttribute::CtaStatus(s) if s.bits() == 0));
    let mask = attrs.iter().any(|a| match a {
        ConntrackAttribute::Other(n) if n.kind() & NLA_TYPE_MASK == CTA_STATUS_MASK => {
            let mut v = vec![0; n.value_len()];
            n.emit_value(&mut v);
            v == IPS_SEEN_REPLY.to_be_bytes()
        }
        _ => false,
    });
    status && mask
}

#[test]
fn an_address_dump_is_filtered_in_the_kernel_on_tuple_and_status() {
    let (wire, attrs) = wire_dump(HostPort::on(ip("127.0.0.1"), 8080));
    // Message type: NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET; family
    // AF_INET.
    assert_eq!(u16::from_ne_bytes([wire[4], wire[5]]), (1 << 8) | 1);
    assert_eq!(wire[16], 2);
    assert!(has_unreplied_filter(&attrs), "{attrs:?}");
    let tuple = attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(t) => Some(t),
        _ => None,
    });
    assert_eq!(
        tuple.map(Vec::as_slice),
        Some(
            &[
                Tuple::Ip(vec![IPTuple::DestinationAddress(ip("127.0.0.1"))]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::Tcp),
                    ProtoTuple::DestinationPort(8080)
                ])
            ][..]
        )
    );
    let filter = attrs.iter().find_map(|a| match a {
        ConntrackAttribute::Other(n) if n.kind() & NLA_TYPE_MASK == CTA_FILTER => Some(n),
        _ => None,
    });
    let filter = filter.expect("CTA_FILTER");
    let mut bytes = vec![0; filter.value_len()];
    filter.emit_value(&mut bytes);
    // CTA_FILTER_ORIG_FLAGS (u32, host order): IP_DST | PROTO_NUM | DST_PORT.
    assert_eq!(&bytes[4..8], &(2u32 | 8 | 32).to_ne_bytes());
    // The kernel parses CTA_FILTER strictly: it must carry NLA_F_NESTED.
    let filter_header = (CTA_FILTER | NLA_F_NESTED).to_ne_bytes();
    assert!(
        wire.windows(2).any(|w| w == filter_header),
        "CTA_FILTER without NLA_F_NESTED"
    );
}

#[test]
fn an_every_address_dump_covers_both_families_unreplied_only() {
    let (wire, attrs) = wire_dump(HostPort::any(8080));
    assert_eq!(wire[16], 0, "AF_UNSPEC: IPv4 and IPv6 in one walk");
    assert!(has_unreplied_filter(&attrs), "{attrs:?}");
    assert!(
        !attrs
            .iter()
            .any(|a| matches!(a, ConntrackAttribute::CtaTupleOrig(_))),
        "no tuple filter without a family"
    );
}
