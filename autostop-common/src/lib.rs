//! Types and names shared by autostop's kernel programs (`autostop-ebpf`) and
//! its agent (`autostop-agent`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of padding holes, so the
//! kernel and user space read the very same bytes out of a map. The agent turns
//! on the `user` feature to get aya's `Pod` impls; the kernel side builds this
//! crate bare (`#![no_std]`, no dependencies).
#![no_std]

/// Names of the maps and programs in the eBPF object, used by both sides so a
/// rename cannot silently break the agent's lookups.
pub mod names {
    /// Map: [`crate::TargetKey`] → service index (`u32`). Which destinations
    /// belong to which managed service.
    pub const SERVICE_TARGETS: &str = "SERVICE_TARGETS";
    /// Map: per-CPU array of [`crate::Activity`], indexed by service index.
    pub const ACTIVITY: &str = "ACTIVITY";
    /// Map: per-CPU array of [`crate::DatapathStats`] with a single slot.
    pub const DATAPATH_STATS: &str = "DATAPATH_STATS";
    /// Program: TC classifier that accounts traffic heading into services.
    pub const COUNT_TRAFFIC: &str = "count_traffic";
}

/// How many services one agent can account for. Sizes the per-service arrays.
pub const MAX_SERVICES: u32 = 1024;

/// How many distinct destinations (container address × port × protocol, plus
/// published host ports) the kernel can match. Several per service.
pub const MAX_TARGETS: u32 = 8192;

/// IP protocol numbers as found in the IPv4 `protocol` / IPv6 `next header`
/// field, used in [`TargetKey::protocol`].
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// A destination that belongs to a managed service: traffic whose destination
/// address, port and protocol equal these fields counts as activity of the
/// service the key maps to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// Destination address as 16 bytes; IPv4 addresses are stored IPv4-mapped
    /// (`::ffff:a.b.c.d`) so one map serves both families.
    pub addr: [u8; 16],
    /// Destination port in host byte order.
    pub port: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub protocol: u8,
    /// Always zero; makes the padding explicit so keys hash identically on
    /// both sides.
    pub _pad: u8,
}

impl TargetKey {
    /// Key for an IPv4 destination (octets in network order).
    pub const fn ipv4(octets: [u8; 4], port: u16, protocol: u8) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self {
            addr,
            port,
            protocol,
            _pad: 0,
        }
    }

    /// Key for an IPv6 destination.
    pub const fn ipv6(addr: [u8; 16], port: u16, protocol: u8) -> Self {
        Self {
            addr,
            port,
            protocol,
            _pad: 0,
        }
    }
}

/// Traffic seen heading into one service on one CPU. The agent sums the
/// per-CPU values; idle timers compare `last_seen_ns` with the clock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole frames as the classifier saw them).
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the newest counted packet;
    /// 0 when none was seen.
    pub last_seen_ns: u64,
}

/// Health counters of the classifier itself, for the demo and for debugging
/// a datapath that seems blind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// Packets the classifier ran on.
    pub packets_seen: u64,
    /// Packets that matched a service target and were counted.
    pub packets_matched: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays, and has no implicit padding (TargetKey's padding byte is an
    // explicit field), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::TargetKey {}
    // SAFETY: as above: three u64 fields.
    unsafe impl aya::Pod for super::Activity {}
    // SAFETY: as above: two u64 fields.
    unsafe impl aya::Pod for super::DatapathStats {}
}
