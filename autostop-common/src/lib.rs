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
    /// Map: array of `u8`, indexed by destination port (host order): 1 when
    /// some entry of `SERVICE_TARGETS` has that port, else 0. Checked
    /// before the hash lookup, so traffic to no service's port (replies to
    /// containers' own connections, unrelated loopback traffic) leaves the
    /// classifier after an array read.
    pub const TARGET_PORTS: &str = "TARGET_PORTS";
    /// Map: array of [`crate::TargetSlotV4`], indexed by
    /// [`crate::TargetSlotV4::index`] of an IPv4 destination. A direct-mapped
    /// copy of the IPv4 part of `SERVICE_TARGETS`: one array read where
    /// the hash lookup walks a bucket. A slot that several targets hash to
    /// says so, and those destinations are looked up in `SERVICE_TARGETS`.
    pub const TARGETS_V4: &str = "TARGETS_V4";
    /// Map: per-CPU array of [`crate::Activity`], indexed by service index.
    pub const ACTIVITY: &str = "ACTIVITY";
    /// Map: per-CPU array of [`crate::DatapathStats`] with a single slot.
    pub const DATAPATH_STATS: &str = "DATAPATH_STATS";
    /// Program: TC classifier that accounts traffic heading into services.
    pub const COUNT_TRAFFIC: &str = "count_traffic";
    /// Program: TC classifier that returns at once. Only `autostop watch
    /// --calibrate` loads it, so a benchmark can measure what
    /// `kernel.bpf_stats_enabled` itself adds to every run (the floor under
    /// `count_traffic`'s figure).
    pub const CALIBRATE_NOOP: &str = "calibrate_noop";
    /// Map: [`crate::SteerKey`] (local address, TCP port) → service index
    /// (`u32`). The host addresses and ports Docker publishes on one
    /// address only (say 127.0.0.1) for stopped or warming services: new
    /// connections to exactly that address and port are handed to the
    /// agent's listener.
    pub const STEERED: &str = "STEERED";
    /// Map: TCP port (`u16`, host order) → service index (`u32`). The ports
    /// Docker publishes on every local address (`0.0.0.0` / `::`) for
    /// stopped or warming services.
    pub const STEERED_ANY: &str = "STEERED_ANY";
    /// Map: array of `u8` flags, indexed by TCP port (host order):
    /// [`crate::STEER_EXACT`] when `STEERED` has an entry with that port,
    /// [`crate::STEER_ANY`] when `STEERED_ANY` has it. Read first, so a
    /// lookup for a port nobody steers costs an array read, and only the
    /// map that may hold the port is searched.
    pub const STEERED_PORTS: &str = "STEERED_PORTS";
    /// Map: sockmap holding the agent's listener sockets, at
    /// [`crate::LISTENER_SLOT_V4`] and [`crate::LISTENER_SLOT_V6`].
    pub const LISTENERS: &str = "LISTENERS";
    /// Map: ring buffer of [`crate::WakeEvent`]s, one per steered SYN at most
    /// every [`crate::WAKE_EVENT_INTERVAL_NS`] per port.
    pub const WAKE_EVENTS: &str = "WAKE_EVENTS";
    /// Map: LRU hash, port (`u16`) → `bpf_ktime_get_ns()` of the last wake
    /// event sent for it. The kernel side of the rate limit.
    pub const WAKE_LAST_SENT: &str = "WAKE_LAST_SENT";
    /// Map: LRU hash, [`crate::wake_bucket_key`] (`u64`) → `u8`. The atomic
    /// half of the rate limit: the one SYN whose `BPF_NOEXIST` insert of its
    /// (port, 100 ms bucket) wins may send an event.
    pub const WAKE_BUCKETS: &str = "WAKE_BUCKETS";
    /// Map: LPM trie of source CIDRs whose traffic is not activity (health
    /// checks, monitoring). Key: prefix length (`u32`) + 16-byte address,
    /// IPv4 stored v4-mapped with the prefix length plus 96; value `u8` (1).
    pub const IGNORED_SOURCES: &str = "IGNORED_SOURCES";
    /// Map: one-slot array holding how many CIDRs `IGNORED_SOURCES` has
    /// (`u32`), so the programs skip the trie lookup, the classifier's
    /// costliest step, when nothing is ignored.
    pub const IGNORED_SOURCE_COUNT: &str = "IGNORED_SOURCE_COUNT";
    /// Program: sk_lookup program that assigns new connections to steered
    /// ports to the agent's listener.
    pub const STEER_LOOKUP: &str = "steer_lookup";
}

/// Slot of [`names::LISTENERS`] for the listener that takes IPv4 connections.
pub const LISTENER_SLOT_V4: u32 = 0;
/// Slot of [`names::LISTENERS`] for the listener that takes IPv6 connections
/// (a dual-stack listener may sit in both slots).
pub const LISTENER_SLOT_V6: u32 = 1;
/// Size of the listener sockmap.
pub const LISTENER_SLOTS: u32 = 2;

/// How many (address, port) bindings can be steered at once, in each of
/// `STEERED` and `STEERED_ANY`.
pub const MAX_STEERED_PORTS: u32 = 4096;

/// [`names::STEERED_PORTS`] flag: some port is steered on every address.
pub const STEER_ANY: u8 = 1;
/// [`names::STEERED_PORTS`] flag: some port is steered on one address.
pub const STEER_EXACT: u8 = 2;

/// How many source CIDRs can be ignored.
pub const MAX_IGNORED_SOURCES: u32 = 1024;

/// The kernel sends at most one wake event per port within this many
/// nanoseconds (100 ms), so a SYN flood cannot flood the agent.
pub const WAKE_EVENT_INTERVAL_NS: u64 = 100_000_000;

/// Key of [`names::WAKE_BUCKETS`]: the `WAKE_EVENT_INTERVAL_NS`-aligned time
/// bucket of `ktime_ns` in the high 48 bits, the port in the low 16.
pub const fn wake_bucket_key(port: u16, ktime_ns: u64) -> u64 {
    ((ktime_ns / WAKE_EVENT_INTERVAL_NS) << 16) | port as u64
}

/// Size of the wake event ring buffer in bytes (a power of two, a multiple of
/// the page size).
pub const WAKE_RING_BYTES: u32 = 256 * 1024;

/// Address families as written in [`WakeEvent::family`].
pub mod family {
    /// IPv4.
    pub const IPV4: u8 = 4;
    /// IPv6.
    pub const IPV6: u8 = 6;
}

/// How many services one agent can account for. Sizes the per-service arrays.
pub const MAX_SERVICES: u32 = 1024;

/// How many distinct destinations (container address × port × protocol, plus
/// published host ports) the kernel can match. Several per service.
pub const MAX_TARGETS: u32 = 8192;

/// Entries of [`names::TARGET_PORTS`]: one per port number.
pub const PORT_SLOTS: u32 = 65536;

/// Entries of [`names::TARGETS_V4`]: twice [`MAX_TARGETS`], so few targets
/// share a slot. A power of two (the index is masked).
pub const V4_SLOTS: u32 = 2 * MAX_TARGETS;

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
        Self {
            addr: v4_mapped(octets),
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

/// Key of [`names::STEERED`]: a local address and TCP port Docker
/// publishes. The address is four 32-bit words holding the 16 bytes of the
/// address in network order in memory, exactly as the sk_lookup context
/// carries `local_ip6` (IPv4 is stored v4-mapped, `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SteerKey {
    /// The local address (see the type's docs).
    pub addr: [u32; 4],
    /// The local port, host order.
    pub port: u16,
    /// Always zero; makes the padding explicit so keys hash identically on
    /// both sides.
    pub _pad: u16,
}

impl SteerKey {
    /// The third word of a v4-mapped address (`0:0:0:0:0:ffff`).
    const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

    /// IPv4 address `ip4` (network-order bytes read as a native `u32`, as
    /// the sk_lookup context's `local_ip4`) on `port`.
    pub const fn ipv4(ip4: u32, port: u16) -> Self {
        Self {
            addr: [0, 0, Self::V4_MAPPED_WORD, ip4],
            port,
            _pad: 0,
        }
    }

    /// IPv6 address `words` (as the sk_lookup context's `local_ip6`) on
    /// `port`.
    pub const fn ipv6(words: [u32; 4], port: u16) -> Self {
        Self {
            addr: words,
            port,
            _pad: 0,
        }
    }

    /// The key for the 16 address bytes `addr` (network order, IPv4
    /// v4-mapped) on `port`.
    pub const fn from_bytes(addr: [u8; 16], port: u16) -> Self {
        const fn word(addr: &[u8; 16], i: usize) -> u32 {
            u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]])
        }
        Self {
            addr: [
                word(&addr, 0),
                word(&addr, 4),
                word(&addr, 8),
                word(&addr, 12),
            ],
            port,
            _pad: 0,
        }
    }

    /// The 16 address bytes of the key (network order).
    pub const fn addr_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let bytes = self.addr[i].to_ne_bytes();
            out[i * 4] = bytes[0];
            out[i * 4 + 1] = bytes[1];
            out[i * 4 + 2] = bytes[2];
            out[i * 4 + 3] = bytes[3];
            i += 1;
        }
        out
    }
}

/// `::ffff:a.b.c.d` for an IPv4 address: how every map here stores IPv4.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    // Built as one integer rather than by zeroing an array: the BPF target
    // would lower the zeroing to a byte loop over a stack pointer, which
    // the verifier refuses without CAP_PERFMON.
    let address = 0xffff_0000_0000_u128 | u32::from_be_bytes(octets) as u128;
    address.to_be_bytes()
}

/// One slot of [`names::TARGETS_V4`]. Empty (all zero), one IPv4 target
/// with its service, or [`TargetSlotV4::SHARED`]: several targets hash here
/// and the classifier asks `SERVICE_TARGETS`, which holds every target.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSlotV4 {
    /// The target's IPv4 address as the packet carries it (network-order
    /// octets read as a native `u32`).
    pub addr: u32,
    /// The service index the target maps to.
    pub service: u32,
    /// Destination port in host byte order.
    pub port: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub protocol: u8,
    /// [`TargetSlotV4::USED`], [`TargetSlotV4::SHARED`] or 0 (empty).
    pub flags: u8,
}

impl TargetSlotV4 {
    /// The slot holds exactly one target: the fields above.
    pub const USED: u8 = 1;
    /// Several targets hash to this slot: look the packet up in
    /// `SERVICE_TARGETS`.
    pub const SHARED: u8 = 2;

    /// The slot of IPv4 destination `octets:port` over `protocol`. Both
    /// sides call this one function, so they cannot disagree. A few ALU
    /// operations (a 32-bit integer mix), cheaper than the hash map's jhash
    /// over a 20-byte key.
    pub const fn index(octets: [u8; 4], port: u16, protocol: u8) -> u32 {
        let mut x = u32::from_ne_bytes(octets) ^ ((port as u32) << 8) ^ (protocol as u32);
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^= x >> 16;
        x & (V4_SLOTS - 1)
    }

    /// A slot holding one target.
    pub const fn single(octets: [u8; 4], port: u16, protocol: u8, service: u32) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
            service,
            port,
            protocol,
            flags: Self::USED,
        }
    }

    /// A slot several targets hash to.
    pub const fn shared() -> Self {
        Self {
            addr: 0,
            service: 0,
            port: 0,
            protocol: 0,
            flags: Self::SHARED,
        }
    }
}

/// Sent by the sk_lookup program when a new connection reaches a steered
/// port: the agent starts the service it belongs to. Rate-limited in the
/// kernel per port, so it says "someone is knocking", not how often.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeEvent {
    /// Service index the connection is steered for (the value in
    /// [`names::STEERED`]).
    pub service: u32,
    /// The local (destination) port, host order.
    pub port: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// 1 when the source is in [`names::IGNORED_SOURCES`] (a health check
    /// knocking should not wake a service), else 0.
    pub ignored_source: u8,
    /// Source address; IPv4 v4-mapped.
    pub source_addr: [u8; 16],
    /// Source port, host order.
    pub source_port: u16,
    /// Always zero; makes the padding explicit. Two integers rather than a
    /// byte array, which the BPF target would zero with a byte loop the
    /// verifier refuses without CAP_PERFMON.
    pub _pad16: u16,
    /// Always zero (see `_pad16`).
    pub _pad32: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the SYN was looked up.
    pub ktime_ns: u64,
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
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC as of the last tick,
    /// at most a few ms behind) of the newest counted packet; 0 when none
    /// was seen.
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
    /// Packets that matched a target but came from an ignored source.
    pub packets_ignored: u64,
    /// TCP socket lookups on a steered port (≈ SYNs of new connections).
    pub steered_lookups: u64,
    /// Steered lookups whose assignment to the agent's listener failed (no
    /// listener of that family): those went on the stock path.
    pub steer_failures: u64,
    /// Wake events written to the ring buffer.
    pub wake_events_sent: u64,
    /// Wake events lost because the ring buffer was full.
    pub wake_events_lost: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays, and has no implicit padding (TargetKey's padding byte is an
    // explicit field), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::TargetKey {}
    // SAFETY: as above: u32, u32, u16, u8, u8 (12 bytes, no padding).
    unsafe impl aya::Pod for super::TargetSlotV4 {}
    // SAFETY: as above: four u32, u16, u16 (20 bytes, no padding).
    unsafe impl aya::Pod for super::SteerKey {}
    // SAFETY: as above: three u64 fields.
    unsafe impl aya::Pod for super::Activity {}
    // SAFETY: as above: u64 fields only.
    unsafe impl aya::Pod for super::DatapathStats {}
    // SAFETY: as above: integers and byte arrays laid out without implicit
    // padding (4+2+1+1+16+2+6 bytes, then a u64 at offset 32).
    unsafe impl aya::Pod for super::WakeEvent {}
}

// The kernel and the agent must agree on these sizes byte for byte.
const _: () = assert!(core::mem::size_of::<WakeEvent>() == 40);
const _: () = assert!(core::mem::size_of::<TargetKey>() == 20);
const _: () = assert!(core::mem::size_of::<TargetSlotV4>() == 12);
const _: () = assert!(core::mem::size_of::<SteerKey>() == 20);
const _: () = assert!(V4_SLOTS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steer_keys_agree_between_context_words_and_address_bytes() {
        let ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
        let from_context = SteerKey::ipv4(ip4, 8080);
        let from_bytes = SteerKey::from_bytes(v4_mapped([127, 0, 0, 1]), 8080);
        assert_eq!(from_context, from_bytes);
        assert_eq!(from_bytes.addr_bytes(), v4_mapped([127, 0, 0, 1]));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let key = SteerKey::from_bytes(v6, 443);
        assert_eq!(key.addr_bytes(), v6);
        assert_eq!(key.addr[3], u32::from_ne_bytes([0, 0, 0, 1]));
    }
}
