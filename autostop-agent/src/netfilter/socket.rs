//! The agent's one `NETLINK_NETFILTER` socket: sends nf_tables batches,
//! dumps and single ctnetlink requests, and reads the kernel's answers up to
//! a deadline. Blocking I/O: only the netfilter worker thread uses it.
//!
//! The socket also anchors the warm-up table's lifetime: the table is
//! created with the `owner` flag, so the kernel deletes it when this socket
//! closes, whether the agent exits, panics or is killed.

use std::{
    io,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::{
    nftables::NfTablesMessage, none::ControlMessage, NetfilterHeader, NetfilterMessage,
    NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::{NetfilterError, Operation};

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch's begin message names.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Receive buffer: larger than the biggest datagram a dump sends (32 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// One nf_tables message of a batch, with its netlink flags and a label for
/// error messages (`NEWSET warming4`).
#[derive(Debug, Clone)]
pub(crate) struct BatchMessage {
    /// The nf_tables message.
    pub message: NfTablesMessage,
    /// `NLM_F_CREATE`, `NLM_F_APPEND`… (`NLM_F_REQUEST | NLM_F_ACK` are added).
    pub flags: u16,
    /// What it is, for errors.
    pub label: String,
}

/// An open netlink socket with its sequence counter.
pub(crate) struct NfSocket {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl NfSocket {
    /// Opens and binds the socket (the kernel picks the port id).
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors carry only the failed request's header, not its payload.
        socket.set_cap_ack(true)?;
        Ok(Self {
            socket,
            seq: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `messages` as one nf_tables transaction (batch begin, the
    /// messages, batch end) and waits until the kernel acknowledged each.
    /// The kernel applies all or none of them.
    pub(crate) fn batch(
        &mut self,
        op: Operation,
        messages: &[BatchMessage],
        deadline: Instant,
    ) -> Result<(), NetfilterError> {
        let begin_seq = self.next_seq();
        let mut bytes = encode(
            control(ControlMessage::BatchBegin),
            NLM_F_REQUEST,
            begin_seq,
        );
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let seq = self.next_seq();
            let netfilter = NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
                message.message.clone(),
            );
            bytes.extend(encode(
                netfilter,
                NLM_F_REQUEST | NLM_F_ACK | message.flags,
                seq,
            ));
            pending.push((seq, message.label.as_str()));
        }
        let end_seq = self.next_seq();
        bytes.extend(encode(
            control(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            end_seq,
        ));
        self.send(op, &bytes)?;

        let mut refusal: Option<NetfilterError> = None;
        while !pending.is_empty() {
            for reply in self.receive(op, deadline)? {
                let seq = reply.header.sequence_number;
                let NetlinkPayload::Error(error) = reply.payload else {
                    continue;
                };
                let code = error.raw_code();
                if let Some(index) = pending.iter().position(|(s, _)| *s == seq) {
                    let (_, label) = pending.swap_remove(index);
                    if code != 0 && refusal.is_none() {
                        refusal = Some(NetfilterError::kernel(op, label, code));
                    }
                } else if (begin_seq..=end_seq).contains(&seq) && code != 0 {
                    // The batch as a whole was refused (bad begin message,
                    // subsystem missing, out of memory): no per-message acks.
                    return Err(NetfilterError::kernel(op, "batch", code));
                }
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    /// Sends one dump request and collects every message of the answer.
    pub(crate) fn dump(
        &mut self,
        op: Operation,
        request: NetfilterMessage,
        deadline: Instant,
    ) -> Result<Vec<NetfilterMessage>, NetfilterError> {
        let seq = self.next_seq();
        self.send(op, &encode(request, NLM_F_REQUEST | NLM_F_DUMP, seq))?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive(op, deadline)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(message) => out.push(message),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.raw_code() != 0 => {
                        return Err(NetfilterError::kernel(op, "dump", e.raw_code()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends one request with `NLM_F_ACK` and returns the kernel's answer:
    /// `Ok(0)` for success, `Ok(-errno)` for a refusal the caller judges.
    pub(crate) fn request(
        &mut self,
        op: Operation,
        request: NetfilterMessage,
        deadline: Instant,
    ) -> Result<i32, NetfilterError> {
        let seq = self.next_seq();
        self.send(op, &encode(request, NLM_F_REQUEST | NLM_F_ACK, seq))?;
        loop {
            for reply in self.receive(op, deadline)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = reply.payload {
                    return Ok(e.raw_code());
                }
            }
        }
    }

    fn send(&self, op: Operation, bytes: &[u8]) -> Result<(), NetfilterError> {
        let sent = self
            .socket
            .send(bytes, 0)
            .map_err(|source| NetfilterError::Socket { op, source })?;
        if sent == bytes.len() {
            Ok(())
        } else {
            Err(NetfilterError::Socket {
                op,
                source: io::Error::new(io::ErrorKind::WriteZero, "short netlink send"),
            })
        }
    }

    /// Reads one datagram (waiting at most until `deadline`) and decodes its
    /// messages. Answers to requests given up on earlier (other sequence
    /// numbers) are decoded too; callers skip them.
    fn receive(
        &mut self,
        op: Operation,
        deadline: Instant,
    ) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, NetfilterError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetfilterError::Timeout { op });
        }
        // A zero read timeout would mean "block forever".
        let timeout = left.max(Duration::from_millis(1));
        socket2::SockRef::from(&self.socket)
            .set_read_timeout(Some(timeout))
            .map_err(|source| NetfilterError::Socket { op, source })?;
        let size = match self.socket.recv(&mut &mut self.buffer[..], 0) {
            Ok(size) => size,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NetfilterError::Timeout { op });
            }
            Err(source) => return Err(NetfilterError::Socket { op, source }),
        };
        decode_all(self.buffer.get(..size).unwrap_or(&self.buffer))
            .map_err(|message| NetfilterError::Decode { op, message })
    }
}

/// A batch control message (begin or end) for the nf_tables subsystem.
fn control(message: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    )
}

/// Serializes one netlink message with `flags` and `seq`.
pub(crate) fn encode(message: NetfilterMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// The size of a netlink message header: no message is shorter.
const NETLINK_HEADER: usize = 16;

/// Splits a datagram into its netlink messages and decodes each.
pub(crate) fn decode_all(
    mut bytes: &[u8],
) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, String> {
    let mut out = Vec::new();
    while let Some(&[a, b, c, d]) = bytes.get(..4) {
        if bytes.len() < NETLINK_HEADER {
            break;
        }
        let length = usize::try_from(u32::from_ne_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        let message = bytes
            .get(..length)
            .filter(|_| length >= NETLINK_HEADER)
            .ok_or_else(|| format!("netlink message of {length} bytes in {} left", bytes.len()))?;
        let message =
            NetlinkMessage::<NetfilterMessage>::deserialize(message).map_err(|e| e.to_string())?;
        out.push(message);
        // Messages are 4-byte aligned within a datagram (a length near
        // usize::MAX cannot be here: it fit in the datagram).
        let next = length.div_ceil(4).saturating_mul(4);
        bytes = bytes.get(next..).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests {
    use super::*;
    use netlink_packet_netfilter::nftables::{TableAttribute, TableMessage};

    #[test]
    fn messages_round_trip_through_the_wire_format() {
        let table = NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name("autostop".to_owned())],
        });
        let message = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
            table,
        );
        let mut bytes = encode(message.clone(), NLM_F_REQUEST | NLM_F_ACK, 7);
        bytes.extend(encode(control(ControlMessage::BatchEnd), NLM_F_REQUEST, 8));
        // Header: length, type (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE),
        // flags, sequence number; then nfgenmsg with family inet (1).
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 10 << 8);
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(
            u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            7
        );
        assert_eq!(bytes[16], 1);
        let decoded = decode_all(&bytes).expect("decode");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].header.sequence_number, 8);
        match &decoded[0].payload {
            NetlinkPayload::InnerMessage(m) => assert_eq!(m, &message),
            other => panic!("not an inner message: {other:?}"),
        }
    }

    #[test]
    fn batch_begin_names_the_nftables_subsystem_in_network_order() {
        let bytes = encode(control(ControlMessage::BatchBegin), NLM_F_REQUEST, 1);
        // NFNL_MSG_BATCH_BEGIN = 16, subsystem NONE.
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 16);
        // nfgenmsg: family, version, res_id (big endian) = 10.
        assert_eq!(&bytes[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn truncated_datagrams_are_an_error_not_a_panic() {
        let bytes = encode(control(ControlMessage::BatchEnd), NLM_F_REQUEST, 1);
        assert!(decode_all(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_all(&[]).expect("empty").is_empty());
    }

    use proptest::prelude::*;

    proptest! {
        /// Any datagram: messages or an error, never a panic.
        #[test]
        fn prop_datagrams_from_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
        }

        /// A valid message followed by any bytes, and cut anywhere: never a
        /// panic, and a whole first message still decodes.
        #[test]
        fn prop_truncated_and_trailing_bytes_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let message = NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![TableAttribute::Name("autostop".to_owned())],
                }),
            );
            let mut bytes = encode(message, 0, 7);
            let whole = bytes.len();
            bytes.extend(tail);
            let _ = decode_all(&bytes);
            let at = cut.index(bytes.len() + 1);
            let decoded = decode_all(&bytes[..at]);
            if at == whole {
                prop_assert_eq!(decoded.map(|m| m.len()).ok(), Some(1));
            }
        }
    }
}
