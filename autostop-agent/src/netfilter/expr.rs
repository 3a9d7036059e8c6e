//! The warm-up rules as nf_tables expressions, built as the kernel's uapi
//! (`linux/netfilter/nf_tables.h`) defines them. One rule per (chain, set):
//!
//! ```text
//! meta nfproto ipv4 fib daddr type local meta l4proto tcp
//!     tcp dport @warming                 (every local address)
//!   | ip daddr . tcp dport @warming4     (one IPv4 address)
//!   | ip6 daddr . tcp dport @warming6    (one IPv6 address)
//!   dnat ip to ip daddr                  (ip6 for IPv6)
//! ```
//!
//! `fib` and `nat` have no typed form in netlink-packet-netfilter; they are
//! encoded here from their uapi attributes.

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Cmp, DataAttribute, ExpressionAttribute, Expressions, ListAttribute, Lookup, Meta, MetaKey,
    Operator, Payload, Register,
};

use super::nft::SetKind;

/// `NFTA_FIB_DREG`, `NFTA_FIB_RESULT`, `NFTA_FIB_FLAGS`.
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
/// `NFT_FIB_RESULT_ADDRTYPE`: the route type of the looked-up address.
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `NFTA_FIB_F_DADDR`: look up the destination address.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `RTN_LOCAL`: the address is one of this host's.
const RTN_LOCAL: u32 = 2;

/// `NFTA_NAT_TYPE`, `NFTA_NAT_FAMILY`, `NFTA_NAT_REG_ADDR_MIN`.
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
/// `NFT_NAT_DNAT`.
const NFT_NAT_DNAT: u32 = 1;

/// `NFPROTO_IPV4`, `NFPROTO_IPV6`.
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;
/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;

/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// Offset of the TCP destination port in the TCP header.
const TCP_DPORT_OFFSET: u32 = 2;

/// An IP version the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    fn nfproto(self) -> u8 {
        match self {
            Self::V4 => NFPROTO_IPV4,
            Self::V6 => NFPROTO_IPV6,
        }
    }

    /// Offset and length of the destination address in the IP header.
    fn daddr(self) -> (u32, u32) {
        match self {
            Self::V4 => (16, 4),
            Self::V6 => (24, 16),
        }
    }

    /// The 4-byte register after the address in a concatenation.
    fn port_register(self) -> Register {
        match self {
            Self::V4 => Register::Reg32_01,
            Self::V6 => Register::Reg32_04,
        }
    }
}

fn be32(value: u32) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

fn element(expression: Expressions) -> ListAttribute<ExpressionAttribute> {
    expression.into()
}

fn meta(key: MetaKey) -> ListAttribute<ExpressionAttribute> {
    element(Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ]))
}

fn cmp_eq(register: Register, data: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    element(Expressions::Cmp(vec![
        Cmp::SourceRegister(register),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(data)),
    ]))
}

fn payload(
    base: u32,
    offset: u32,
    len: u32,
    register: Register,
) -> ListAttribute<ExpressionAttribute> {
    element(Expressions::Payload(vec![
        Payload::DestinationRegister(register),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ]))
}

/// `fib daddr type local`: the destination is an address of this host.
fn fib_daddr_is_local() -> [ListAttribute<ExpressionAttribute>; 2] {
    let fib = Expressions::Other {
        expression_type: "fib".to_owned(),
        attributes: vec![
            DefaultNla::new(NFTA_FIB_DREG, be32(u32::from(Register::Reg1))),
            DefaultNla::new(NFTA_FIB_RESULT, be32(NFT_FIB_RESULT_ADDRTYPE)),
            DefaultNla::new(NFTA_FIB_FLAGS, be32(NFTA_FIB_F_DADDR)),
        ],
    };
    // The route type lands in the register in host byte order.
    [
        element(fib),
        cmp_eq(Register::Reg1, RTN_LOCAL.to_ne_bytes().to_vec()),
    ]
}

/// `dnat ip to ip daddr`: the identity DNAT that takes the connection's NAT
/// binding, so Docker's DNAT (priority -100) no longer applies to it.
fn dnat_to_own_daddr(ip: IpVersion) -> [ListAttribute<ExpressionAttribute>; 2] {
    let (offset, len) = ip.daddr();
    let nat = Expressions::Other {
        expression_type: "nat".to_owned(),
        attributes: vec![
            DefaultNla::new(NFTA_NAT_TYPE, be32(NFT_NAT_DNAT)),
            DefaultNla::new(NFTA_NAT_FAMILY, be32(u32::from(ip.nfproto()))),
            DefaultNla::new(NFTA_NAT_REG_ADDR_MIN, be32(u32::from(Register::Reg1))),
        ],
    };
    [
        payload(NETWORK_HEADER, offset, len, Register::Reg1),
        element(nat),
    ]
}

/// The expressions of the rule that redirects `ip` connections whose key
/// is in the set of `kind` (`set_id` names it within the install batch).
pub(crate) fn rule(
    ip: IpVersion,
    kind: SetKind,
    set_id: u32,
) -> Vec<ListAttribute<ExpressionAttribute>> {
    let mut out = vec![
        meta(MetaKey::Nfproto),
        cmp_eq(Register::Reg1, vec![ip.nfproto()]),
    ];
    out.extend(fib_daddr_is_local());
    out.push(meta(MetaKey::L4Proto));
    out.push(cmp_eq(Register::Reg1, vec![IPPROTO_TCP]));
    let key_register = match kind {
        SetKind::Any => {
            out.push(payload(
                TRANSPORT_HEADER,
                TCP_DPORT_OFFSET,
                2,
                Register::Reg1,
            ));
            Register::Reg1
        }
        SetKind::V4 | SetKind::V6 => {
            // A concatenation: address, then port, in consecutive 4-byte
            // registers (the port padded to 4 bytes), as the set key is laid
            // out.
            let (offset, len) = ip.daddr();
            out.push(payload(NETWORK_HEADER, offset, len, Register::Reg32_00));
            out.push(payload(
                TRANSPORT_HEADER,
                TCP_DPORT_OFFSET,
                2,
                ip.port_register(),
            ));
            Register::Reg32_00
        }
    };
    out.push(element(Expressions::Lookup(vec![
        Lookup::Set(kind.set_name().to_owned()),
        Lookup::SourceRegister(key_register),
        Lookup::SetId(set_id),
    ])));
    out.extend(dnat_to_own_daddr(ip));
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Nla};

    fn names(rule: &[ListAttribute<ExpressionAttribute>]) -> Vec<String> {
        rule.iter()
            .filter_map(|e| match e {
                ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                    ExpressionAttribute::Name(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn any_address_rule_matches_local_tcp_port_then_dnats_to_itself() {
        let rule = rule(IpVersion::V4, SetKind::Any, 1);
        assert_eq!(
            names(&rule),
            ["meta", "cmp", "fib", "cmp", "meta", "cmp", "payload", "lookup", "payload", "nat"]
        );
    }

    #[test]
    fn address_rule_looks_up_a_concatenation_of_daddr_and_port() {
        let rule6 = rule(IpVersion::V6, SetKind::V6, 3);
        let payloads: Vec<_> = rule6
            .iter()
            .filter_map(|e| match e {
                ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                    ExpressionAttribute::Data(Expressions::Payload(p)) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect();
        // daddr (24, 16 bytes) into reg32_00, dport into reg32_04, then the
        // daddr again into reg 1 for the nat.
        assert!(payloads[0].contains(&Payload::Offset(24)));
        assert!(payloads[0].contains(&Payload::DestinationRegister(Register::Reg32_00)));
        assert!(payloads[1].contains(&Payload::DestinationRegister(Register::Reg32_04)));
        assert!(payloads[2].contains(&Payload::DestinationRegister(Register::Reg1)));
    }

    #[test]
    fn fib_and_nat_encode_their_uapi_attributes() {
        let [fib, _] = fib_daddr_is_local();
        let mut bytes = vec![0; fib.buffer_len()];
        fib.emit(&mut bytes);
        // NFTA_LIST_ELEM (nested) { NFTA_EXPR_NAME "fib", NFTA_EXPR_DATA {
        // DREG=1, RESULT=3, FLAGS=2 } }, all big endian u32.
        assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), 1 | 0x8000);
        assert_eq!(&bytes[8..12], b"fib\0");
        let data = &bytes[12..];
        assert_eq!(u16::from_ne_bytes([data[2], data[3]]), 2 | 0x8000);
        assert_eq!(&data[4..12], &[8, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(&data[12..20], &[8, 0, 2, 0, 0, 0, 0, 3]);
        assert_eq!(&data[20..28], &[8, 0, 3, 0, 0, 0, 0, 2]);
        let [_, nat] = dnat_to_own_daddr(IpVersion::V6);
        let ListAttribute::Element(attrs) = nat else {
            panic!("not an element")
        };
        let ExpressionAttribute::Data(Expressions::Other { attributes, .. }) = &attrs[1] else {
            panic!("no nat data")
        };
        assert_eq!(attributes[1].kind(), NFTA_NAT_FAMILY);
        let mut family = vec![0; attributes[1].value_len()];
        attributes[1].emit_value(&mut family);
        assert_eq!(family, [0, 0, 0, 10]);
    }
}
