//! Unit tests of the nf_tables message builders (no root: encoding only;
//! `tests/tests/privileged/netfilter.rs` checks them against the kernel).

use netlink_packet_core::{NetlinkPayload, NLM_F_REQUEST};

use super::*;
use crate::netfilter::socket::{decode_all, encode};

fn options() -> WarmupOptions {
    WarmupOptions::default()
}

#[test]
fn keys_are_port_or_address_and_padded_port_in_network_order() {
    assert_eq!(key(HostPort::any(8080)), (SetKind::Any, vec![0x1f, 0x90]));
    let lo = HostPort::on("127.0.0.1".parse().expect("ip"), 8080);
    assert_eq!(key(lo), (SetKind::V4, vec![127, 0, 0, 1, 0x1f, 0x90, 0, 0]));
    let mapped = HostPort::on("::ffff:10.0.0.1".parse().expect("ip"), 80);
    assert_eq!(key(mapped).0, SetKind::V4, "IPv4-mapped goes to warming4");
    let lo6 = HostPort::on("::1".parse().expect("ip"), 443);
    let (kind, bytes) = key(lo6);
    assert_eq!((kind, bytes.len()), (SetKind::V6, 20));
    assert_eq!(&bytes[15..], &[1, 0x01, 0xbb, 0, 0]);
    for host in [HostPort::any(1), lo, lo6] {
        let (kind, bytes) = key(host);
        assert_eq!(host_port(kind, &bytes), Some(host));
        assert_eq!(bytes.len(), kind.key_len() as usize);
    }
    assert_eq!(host_port(SetKind::V4, &[1, 2, 3]), None);
}

#[test]
fn set_types_are_what_nft_lists() {
    // `nft` prints ipv4_addr . inet_service for type 7 << 6 | 13.
    assert_eq!(SetKind::V4.key_type(), 461);
    assert_eq!(SetKind::V6.key_type(), 525);
    assert_eq!(
        SetKind::ALL.map(SetKind::key_len),
        [2, 8, 20],
        "port alone, then concatenations padded to 4-byte fields"
    );
}

#[test]
fn install_replaces_the_table_then_builds_an_owned_one() {
    let batch = install(&options());
    let labels: Vec<&str> = batch.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(
        labels[..3],
        [
            "NEWTABLE autostop",
            "DELTABLE autostop (the table left behind)",
            "NEWTABLE autostop flags owner"
        ]
    );
    let NfTablesMessage::NewTable(first) = &batch[0].message else {
        panic!("not a table")
    };
    assert!(
        !first
            .attributes
            .iter()
            .any(|a| matches!(a, TableAttribute::Flags(_))),
        "the reconcile add must not change a stale table's flags"
    );
    let NfTablesMessage::NewTable(owned) = &batch[2].message else {
        panic!("not a table")
    };
    assert!(owned
        .attributes
        .contains(&TableAttribute::Flags(TableFlags::Owner)));
    let sets = batch
        .iter()
        .filter(|m| matches!(m.message, NfTablesMessage::NewSet(_)))
        .count();
    let chains: Vec<_> = batch
        .iter()
        .filter_map(|m| match &m.message {
            NfTablesMessage::NewChain(c) => Some(c),
            _ => None,
        })
        .collect();
    let rules = batch
        .iter()
        .filter(|m| matches!(m.message, NfTablesMessage::NewRule(_)))
        .count();
    assert_eq!((sets, chains.len(), rules), (3, 2, 8));
    for chain in chains {
        assert!(chain
            .attributes
            .contains(&ChainAttribute::Type("nat".to_owned())));
        let hook = chain.attributes.iter().find_map(|a| match a {
            ChainAttribute::Hook(h) => Some(h),
            _ => None,
        });
        // -110 as the kernel reads it.
        assert!(hook.is_some_and(|h| h.contains(&Hook::Priority(0xffff_ff92))));
    }
}

#[test]
fn a_concatenated_set_is_a_timeout_set_with_the_padded_key_length() {
    let NfTablesMessage::NewSet(set) = set(&options(), SetKind::V6) else {
        panic!("not a set")
    };
    assert_eq!(
        set.attributes,
        [
            SetAttribute::Table("autostop".to_owned()),
            SetAttribute::Name("warming6".to_owned()),
            SetAttribute::Flags(SetFlags::Timeout),
            SetAttribute::KeyType(525),
            SetAttribute::KeyLen(20),
            SetAttribute::Id(3),
        ]
    );
}

#[test]
fn elements_go_to_the_set_of_their_address_family_with_a_timeout() {
    let hosts = [
        HostPort::any(8080),
        HostPort::on("127.0.0.1".parse().expect("ip"), 8081),
        HostPort::on("10.0.0.1".parse().expect("ip"), 8082),
    ];
    let batch = add_elements(&options(), &hosts, false);
    assert_eq!(batch.len(), 2, "one message per set touched");
    let NfTablesMessage::NewSetElement(v4) = &batch[1].message else {
        panic!("not an element message")
    };
    let Some(SetElementList::Elements(list)) = v4.attributes.get(2) else {
        panic!("no elements")
    };
    assert_eq!(list.len(), 2);
    let ListAttribute::Element(attrs) = &list[0] else {
        panic!("not an element")
    };
    assert!(attrs.contains(&SetElementAttribute::Timeout(5000)));

    let fresh = add_elements(&options(), &hosts[..1], true);
    let verbs: Vec<_> = fresh.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(
        verbs,
        [
            "NEWSETELEM warming",
            "DELSETELEM warming",
            "NEWSETELEM warming"
        ]
    );
    let removal = remove_elements(&options(), &hosts[..1]);
    let NfTablesMessage::DeleteSetElement(del) = &removal[1].message else {
        panic!("not a delete")
    };
    let Some(SetElementList::Elements(list)) = del.attributes.get(2) else {
        panic!("no elements")
    };
    assert_eq!(
        list[0],
        ListAttribute::Element(vec![SetElementAttribute::Key(DataAttribute::Value(vec![
            0x1f, 0x90
        ]))]),
        "a delete names the key only"
    );
}

#[test]
fn listed_elements_parse_back_with_their_expiry() {
    // What the kernel answers a GETSETELEM dump with, through the wire
    // format and back.
    let host = HostPort::on("::1".parse().expect("ip"), 8443);
    let (_, bytes) = key(host);
    let reply = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        NfTablesMessage::NewSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table("autostop".to_owned()),
                SetElementList::Set("warming6".to_owned()),
                SetElementList::Elements(vec![ListAttribute::Element(vec![
                    SetElementAttribute::Key(DataAttribute::Value(bytes)),
                    SetElementAttribute::Timeout(5000),
                    SetElementAttribute::Expiration(4200),
                ])]),
            ],
        }),
    );
    let wire = encode(reply, NLM_F_REQUEST, 1);
    let decoded: Vec<NetfilterMessage> = decode_all(&wire)
        .expect("decode")
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(m) => Some(m),
            _ => None,
        })
        .collect();
    let elements = parse_elements(SetKind::V6, &decoded);
    assert_eq!(
        elements,
        [KernelElement {
            host,
            timeout: Some(Duration::from_secs(5)),
            expires: Some(Duration::from_millis(4200)),
        }]
    );
}

#[test]
fn list_request_names_table_and_set() {
    let request = list_request(&options(), SetKind::V4);
    let NetfilterMessageInner::NfTables(NfTablesMessage::GetSetElement(body)) = request.inner
    else {
        panic!("not a GETSETELEM")
    };
    assert_eq!(
        body.attributes,
        [
            SetElementList::Table("autostop".to_owned()),
            SetElementList::Set("warming4".to_owned())
        ]
    );
}

mod properties {
    //! Property tests of the set keys the kernel hands back.

    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::super::{host_port, key, SetKind};
    use crate::published::HostPort;

    fn binding() -> impl Strategy<Value = HostPort> {
        (prop::option::of(any::<IpAddr>()), any::<u16>()).prop_map(|(addr, port)| match addr {
            Some(addr) => HostPort::on(addr, port),
            None => HostPort::any(port),
        })
    }

    fn kind() -> impl Strategy<Value = SetKind> {
        prop_oneof![Just(SetKind::Any), Just(SetKind::V4), Just(SetKind::V6)]
    }

    proptest! {
        /// Every binding's key reads back as the same binding (IPv4-mapped
        /// addresses as IPv4, as the sets store them).
        #[test]
        fn prop_set_keys_round_trip(binding in binding()) {
            let (kind, bytes) = key(binding);
            prop_assert_eq!(host_port(kind, &bytes), Some(binding));
        }

        /// Any bytes as a key of any set: a binding or `None`, never a
        /// panic.
        #[test]
        fn prop_set_keys_from_any_bytes_never_panic(
            kind in kind(),
            bytes in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let _ = host_port(kind, &bytes);
        }
    }
}
