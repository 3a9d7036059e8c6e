//! `count_traffic`: a TC classifier for the egress side of the Docker
//! bridges (traffic heading into containers) and for `lo`. It looks up each
//! IPv4/IPv6 TCP or UDP packet's destination among the service targets
//! (`TARGETS_V4`, a direct-mapped array, for IPv4; `SERVICE_TARGETS`, a hash
//! map, for IPv6 and for IPv4 targets that share an array slot) and, on a
//! match whose source is not in `IGNORED_SOURCES`, adds it to that service's
//! per-CPU `ACTIVITY` slot. It never changes or drops a packet: whatever
//! happens, it returns `TC_ACT_UNSPEC` so the next program and the stack
//! decide as if we were not there.
//!
//! It runs on every packet, so headers are read with direct packet access
//! (one bounds check each); only headers outside the linear part of the
//! buffer go through `bpf_skb_load_bytes`. A packet to a port no target
//! has leaves after one array read (`TARGET_PORTS`); the source is only
//! looked up in the trie once the destination matched.

use core::{mem::size_of, ptr};

use autostop_common::{proto, v4_mapped, TargetKey};
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_coarse_ns, macros::classifier,
    programs::TcContext,
};

use crate::maps::{bump, is_ignored, is_target_port, service_of, service_of_v4, ACTIVITY};

const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV6_HDR_LEN: usize = 40;

#[classifier]
pub fn count_traffic(ctx: TcContext) -> i32 {
    // The result only tells whether the packet was ours; either way the
    // packet goes on untouched.
    let _ = try_count_traffic(&ctx);
    TC_ACT_UNSPEC
}

/// Does nothing: the baseline a benchmark subtracts from `count_traffic`'s
/// `run_time_ns / run_cnt` (the stats' own clock reads are in both).
#[classifier]
pub fn calibrate_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Why a packet was not counted. Only used to leave early.
enum Skip {
    /// Not IPv4/IPv6 TCP/UDP, a fragment without ports, or not a target.
    NotTracked,
    /// Headers were not in the packet at all.
    Truncated,
    /// The source is in the ignored set.
    Ignored,
}

/// The packet with its linear area's bounds, read once.
struct Packet<'a> {
    ctx: &'a TcContext,
    start: usize,
    end: usize,
}

impl Packet<'_> {
    /// Copies a `T` out of the packet at `offset`: directly when it lies in
    /// the linear area, else through bpf_skb_load_bytes (non-linear skbs).
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, Skip> {
        if self.start + offset + size_of::<T>() <= self.end {
            // SAFETY: [start + offset, start + offset + size_of::<T>()) lies
            // inside the linear packet data (checked just above, and the
            // verifier checks it again); any bit pattern is a valid T (T is
            // an integer or a byte array here).
            Ok(unsafe { ptr::read_unaligned((self.start + offset) as *const T) })
        } else {
            self.ctx.load::<T>(offset).map_err(|_| Skip::Truncated)
        }
    }
}

#[inline(always)]
fn try_count_traffic(ctx: &TcContext) -> Result<(), Skip> {
    bump(|s| s.packets_seen += 1);
    let packet = Packet {
        ctx,
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (destination, source) = addresses(&packet)?;
    let service = match destination {
        Destination::V4 {
            addr,
            port,
            protocol,
        } => service_of_v4(addr, port, protocol),
        Destination::V6(key) => service_of(&key),
    }
    .ok_or(Skip::NotTracked)?;
    if is_ignored(source) {
        bump(|s| s.packets_ignored += 1);
        return Err(Skip::Ignored);
    }
    let slot = ACTIVITY.get_ptr_mut(service).ok_or(Skip::NotTracked)?;
    // The coarse clock (the last tick's time, a few ms behind at most) is
    // plenty for idle timers counted in minutes, and reading it is a plain
    // load where bpf_ktime_get_ns reads the clocksource: 46 of the 123 ns
    // the whole program took under BPF_PROG_TEST_RUN here.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: this CPU's slot of a per-CPU array; the verifier checked the
    // index bound through the map lookup.
    unsafe {
        (*slot).packets += 1;
        (*slot).bytes += u64::from(ctx.len());
        (*slot).last_seen_ns = now;
    }
    bump(|s| s.packets_matched += 1);
    Ok(())
}

/// Where a packet is heading: IPv4 is kept apart because its targets are
/// found in an array before any hash lookup.
enum Destination {
    /// An IPv4 destination (octets in network order).
    V4 {
        addr: [u8; 4],
        port: u16,
        protocol: u8,
    },
    /// An IPv6 destination, as the hash map's key.
    V6(TargetKey),
}

/// Reads the packet's destination (address, port, protocol) and its source
/// address (16 bytes, IPv4 v4-mapped).
#[inline(always)]
fn addresses(packet: &Packet<'_>) -> Result<(Destination, [u8; 16]), Skip> {
    let ether_type = u16::from_be(packet.read::<u16>(12)?);
    match ether_type {
        ETH_P_IP => {
            let ver_ihl = packet.read::<u8>(ETH_HDR_LEN)?;
            let header_len = usize::from(ver_ihl & 0x0f) * 4;
            if header_len < 20 {
                return Err(Skip::NotTracked);
            }
            // Fragments after the first carry no L4 header.
            let frag = u16::from_be(packet.read::<u16>(ETH_HDR_LEN + 6)?);
            if frag & 0x1fff != 0 {
                return Err(Skip::NotTracked);
            }
            let protocol = packet.read::<u8>(ETH_HDR_LEN + 9)?;
            tracked(protocol)?;
            let saddr = packet.read::<[u8; 4]>(ETH_HDR_LEN + 12)?;
            let daddr = packet.read::<[u8; 4]>(ETH_HDR_LEN + 16)?;
            // A constant offset for the usual 20-byte header; options (rare)
            // go through the load helper, so no packet pointer ever moves by
            // a variable amount (refused without CAP_PERFMON).
            let port = if header_len == 20 {
                packet.read::<u16>(ETH_HDR_LEN + 20 + 2)?
            } else {
                packet
                    .ctx
                    .load::<u16>(ETH_HDR_LEN + header_len + 2)
                    .map_err(|_| Skip::Truncated)?
            };
            let port = u16::from_be(port);
            if !is_target_port(port) {
                return Err(Skip::NotTracked);
            }
            let destination = Destination::V4 {
                addr: daddr,
                port,
                protocol,
            };
            Ok((destination, v4_mapped(saddr)))
        }
        ETH_P_IPV6 => {
            // Extension headers are not followed: services are reached with
            // plain TCP/UDP, and a miss only means one uncounted packet.
            let protocol = packet.read::<u8>(ETH_HDR_LEN + 6)?;
            tracked(protocol)?;
            let port = u16::from_be(packet.read::<u16>(ETH_HDR_LEN + IPV6_HDR_LEN + 2)?);
            if !is_target_port(port) {
                return Err(Skip::NotTracked);
            }
            let saddr = packet.read::<[u8; 16]>(ETH_HDR_LEN + 8)?;
            let daddr = packet.read::<[u8; 16]>(ETH_HDR_LEN + 24)?;
            Ok((
                Destination::V6(TargetKey::ipv6(daddr, port, protocol)),
                saddr,
            ))
        }
        _ => Err(Skip::NotTracked),
    }
}

#[inline(always)]
fn tracked(protocol: u8) -> Result<(), Skip> {
    if protocol == proto::TCP || protocol == proto::UDP {
        Ok(())
    } else {
        Err(Skip::NotTracked)
    }
}
