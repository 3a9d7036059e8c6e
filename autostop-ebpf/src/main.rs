//! autostop's kernel programs.
//!
//! `count_traffic` is a TC classifier for the egress side of the Docker bridges
//! (traffic heading into containers) and for `lo`. It looks up each IPv4/IPv6
//! TCP or UDP packet's destination in `SERVICE_TARGETS` and, on a match, adds it
//! to that service's per-CPU `ACTIVITY` slot. It never changes or drops a
//! packet: whatever happens, it returns `TC_ACT_UNSPEC` so the next program and
//! the stack decide as if we were not there.
#![no_std]
#![no_main]

use autostop_common::{proto, Activity, DatapathStats, TargetKey, MAX_SERVICES, MAX_TARGETS};
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};

#[map(name = "SERVICE_TARGETS")]
static SERVICE_TARGETS: HashMap<TargetKey, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map(name = "ACTIVITY")]
static ACTIVITY: PerCpuArray<Activity> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DATAPATH_STATS")]
static DATAPATH_STATS: PerCpuArray<DatapathStats> = PerCpuArray::with_max_entries(1, 0);

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

/// Why a packet was not counted. Only used to leave early.
enum Skip {
    /// Not IPv4/IPv6 TCP/UDP, or a fragment without ports.
    NotTracked,
    /// Headers were not in the linear part of the buffer, even after a pull.
    Truncated,
}

#[inline(always)]
fn try_count_traffic(ctx: &TcContext) -> Result<(), Skip> {
    if let Some(stats) = DATAPATH_STATS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array; no other
        // program instance runs on this CPU while we hold it.
        unsafe { (*stats).packets_seen += 1 };
    }
    let key = destination(ctx)?;
    // SAFETY: the map is preallocated and values are plain u32 indexes; a
    // racing update can at worst give us the neighbouring value's index,
    // which is still a valid array index.
    let service = unsafe { SERVICE_TARGETS.get(&key) }
        .copied()
        .ok_or(Skip::NotTracked)?;
    let slot = ACTIVITY.get_ptr_mut(service).ok_or(Skip::NotTracked)?;
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot, as above; the verifier checked the index bound
    // through the map lookup.
    unsafe {
        (*slot).packets += 1;
        (*slot).bytes += u64::from(ctx.len());
        (*slot).last_seen_ns = now;
    }
    if let Some(stats) = DATAPATH_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, as above.
        unsafe { (*stats).packets_matched += 1 };
    }
    Ok(())
}

/// Reads the packet's destination address, port and protocol.
#[inline(always)]
fn destination(ctx: &TcContext) -> Result<TargetKey, Skip> {
    let ether_type = u16::from_be(load::<u16>(ctx, 12)?);
    match ether_type {
        ETH_P_IP => {
            let ver_ihl = load::<u8>(ctx, ETH_HDR_LEN)?;
            let header_len = usize::from(ver_ihl & 0x0f) * 4;
            if header_len < 20 {
                return Err(Skip::NotTracked);
            }
            // Fragments after the first carry no L4 header.
            let frag = u16::from_be(load::<u16>(ctx, ETH_HDR_LEN + 6)?);
            if frag & 0x1fff != 0 {
                return Err(Skip::NotTracked);
            }
            let protocol = load::<u8>(ctx, ETH_HDR_LEN + 9)?;
            tracked(protocol)?;
            let daddr = load::<[u8; 4]>(ctx, ETH_HDR_LEN + 16)?;
            let port = u16::from_be(load::<u16>(ctx, ETH_HDR_LEN + header_len + 2)?);
            Ok(TargetKey::ipv4(daddr, port, protocol))
        }
        ETH_P_IPV6 => {
            // Extension headers are not followed: services are reached with
            // plain TCP/UDP, and a miss only means one uncounted packet.
            let protocol = load::<u8>(ctx, ETH_HDR_LEN + 6)?;
            tracked(protocol)?;
            let daddr = load::<[u8; 16]>(ctx, ETH_HDR_LEN + 24)?;
            let port = u16::from_be(load::<u16>(ctx, ETH_HDR_LEN + IPV6_HDR_LEN + 2)?);
            Ok(TargetKey::ipv6(daddr, port, protocol))
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

/// Copies a `T` out of the packet at `offset` (bpf_skb_load_bytes handles
/// non-linear buffers, so no pull is needed).
#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, Skip> {
    ctx.load::<T>(offset).map_err(|_| Skip::Truncated)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot panic at run time (the verifier rejects
    // unbounded code paths), so this handler is never reached.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
