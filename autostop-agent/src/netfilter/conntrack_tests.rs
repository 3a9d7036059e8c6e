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
    let v4 = NetfilterProtoFamily::IPv4;
    let any = HostPort::any(8080);
    let delete = delete_request(
        v4,
        &entry(ip("10.0.0.1"), 8080, TCP_CONNTRACK_SYN_SENT),
        any,
    )
    .expect("a SYN_SENT entry of the port");
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
    assert!(delete_request(v4, &entry(ip("10.0.0.1"), 8080, ESTABLISHED), any).is_none());
    assert!(delete_request(
        v4,
        &entry(ip("10.0.0.1"), 8081, TCP_CONNTRACK_SYN_SENT),
        any
    )
    .is_none());
}

#[test]
fn an_address_specific_target_keeps_other_addresses_entries() {
    let v4 = NetfilterProtoFamily::IPv4;
    let lo = HostPort::on(ip("127.0.0.1"), 8080);
    let syn = TCP_CONNTRACK_SYN_SENT;
    assert!(delete_request(v4, &entry(ip("127.0.0.1"), 8080, syn), lo).is_some());
    assert!(delete_request(v4, &entry(ip("10.0.0.1"), 8080, syn), lo).is_none());
    let lo6 = HostPort::on(ip("::1"), 8080);
    let v6 = NetfilterProtoFamily::IPv6;
    assert!(delete_request(v6, &entry(ip("::1"), 8080, syn), lo6).is_some());
    assert!(delete_request(v6, &entry(ip("fd00::1"), 8080, syn), lo6).is_none());
}

#[test]
fn families_follow_the_target_address() {
    assert_eq!(families(HostPort::any(1)).len(), 2);
    assert_eq!(
        families(HostPort::on(ip("::ffff:127.0.0.1"), 1)),
        [NetfilterProtoFamily::IPv4]
    );
    assert_eq!(
        families(HostPort::on(ip("::1"), 1)),
        [NetfilterProtoFamily::IPv6]
    );
}

/// The dump request through the wire format: its bytes and its attributes
/// as decoded.
fn wire_dump(family: NetfilterProtoFamily, target: HostPort) -> (Vec<u8>, Vec<ConntrackAttribute>) {
    let wire = encode(dump_request(family, target), NLM_F_REQUEST, 1);
    let decoded = match decode_all(&wire).expect("decode").remove(0).payload {
        NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not a message: {other:?}"),
    };
    match decoded.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::Get(attrs)) => (wire, attrs),
        other => panic!("not a conntrack get: {other:?}"),
    }
}

#[test]
fn the_dump_is_filtered_in_the_kernel_on_port_protocol_and_address() {
    let (wire, attrs) = wire_dump(
        NetfilterProtoFamily::IPv4,
        HostPort::on(ip("127.0.0.1"), 8080),
    );
    // Message type: NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET.
    assert_eq!(u16::from_ne_bytes([wire[4], wire[5]]), (1 << 8) | 1);
    let ConntrackAttribute::CtaTupleOrig(tuple) = &attrs[0] else {
        panic!("no tuple: {attrs:?}")
    };
    assert_eq!(
        tuple[0],
        Tuple::Ip(vec![IPTuple::DestinationAddress(ip("127.0.0.1"))])
    );
    assert_eq!(
        tuple[1],
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::Tcp),
            ProtoTuple::DestinationPort(8080)
        ])
    );
    let ConntrackAttribute::Other(filter) = &attrs[1] else {
        panic!("no filter: {attrs:?}")
    };
    assert_eq!(filter.kind() & NLA_TYPE_MASK, CTA_FILTER);
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

    let (_, attrs) = wire_dump(NetfilterProtoFamily::IPv6, HostPort::any(8080));
    let ConntrackAttribute::CtaTupleOrig(tuple) = &attrs[0] else {
        panic!("no tuple")
    };
    assert_eq!(tuple.len(), 1, "no address in the filter for every address");
}
