//! `steer_lookup`: an sk_lookup program in the agent's network namespace.
//!
//! When the kernel looks up the socket for a new TCP connection whose local
//! address and port are in `STEERED` (where Docker publishes a stopped or
//! warming service: that address only, or every local address when Docker
//! publishes on `0.0.0.0`/`::`), it assigns the connection to the agent's listener in
//! `LISTENERS` (slot 0 for IPv4, slot 1 for IPv6) and sends a `WakeEvent`
//! into `WAKE_EVENTS`, at most one per port every `WAKE_EVENT_INTERVAL_NS`.
//!
//! It always returns `SK_PASS`: SK_DROP would reset the client, and on any
//! error (no listener of that family, full ring buffer) the stock lookup goes
//! on (fail open).
//!
//! Those errors are the only places it logs (aya-log, warn level, read by
//! the agent under the `autostop::ebpf` target): a missing listener or a
//! failed assignment, a wake event the ring buffer had no room for, a rate
//! limiter map refusing an insert. The first two are counted in
//! `DATAPATH_STATS` as well (`steer_failures`, `wake_events_lost`); the
//! steering lines ride on the wake events' rate limit (at most one per port
//! per 100 ms).
//!
//! The lookup only runs when no established or SYN_RECV socket matched, so
//! besides SYNs a stray segment for a forgotten connection can also cause
//! one (rate-limited) event.

use core::ptr::{addr_of, read_volatile};

use autostop_common::{
    family, proto, v4_mapped, wake_bucket_key, SteerKey, WakeEvent, LISTENER_SLOT_V4,
    LISTENER_SLOT_V6, WAKE_EVENT_INTERVAL_NS,
};
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action::SK_PASS, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::sk_lookup,
    programs::SkLookupContext,
};

use crate::log;
use crate::maps::{
    bump, is_ignored, steered_service, LISTENERS, WAKE_BUCKETS, WAKE_EVENTS, WAKE_LAST_SENT,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `redirect_sk_lookup`'s error for an empty listener slot (negated).
const ENOENT: i32 = 2;
/// A `BPF_NOEXIST` insert's error for a key already there, and
/// `bpf_sk_assign`'s when another program assigned a socket first (negated).
const EEXIST: i32 = 17;

#[sk_lookup]
pub fn steer_lookup(ctx: SkLookupContext) -> u32 {
    try_steer(&ctx);
    SK_PASS
}

/// Reads one field of the lookup context with a load of exactly its width
/// (sk_lookup contexts refuse wider loads).
macro_rules! field {
    ($lookup:expr, $($field:tt)+) => {
        // SAFETY: `$lookup` is the kernel's context pointer, valid for the
        // whole run; the verifier checks the offset and width of the load.
        unsafe { read_volatile(addr_of!((*$lookup).$($field)+)) }
    };
}

/// The lookup fields the program uses, read up front.
struct Lookup {
    protocol: u32,
    family: u32,
    local_port: u32,
    local_ip4: u32,
    local_ip6: [u32; 4],
    remote_ip4: u32,
    remote_ip6: [u32; 4],
    remote_port: u16,
}

/// Reads every field the program uses, one exact-width load each, in
/// straight-line code from the context pointer itself: the verifier refuses
/// loads through a context pointer the compiler moved (`ctx + off`), which it
/// does when reads are scattered over branches.
#[inline(always)]
fn read_lookup(ctx: &SkLookupContext) -> Lookup {
    let lookup: *const bpf_sk_lookup = ctx.lookup;
    Lookup {
        protocol: field!(lookup, protocol),
        family: field!(lookup, family),
        local_port: field!(lookup, local_port),
        local_ip4: field!(lookup, local_ip4),
        local_ip6: [
            field!(lookup, local_ip6[0]),
            field!(lookup, local_ip6[1]),
            field!(lookup, local_ip6[2]),
            field!(lookup, local_ip6[3]),
        ],
        remote_ip4: field!(lookup, remote_ip4),
        remote_ip6: [
            field!(lookup, remote_ip6[0]),
            field!(lookup, remote_ip6[1]),
            field!(lookup, remote_ip6[2]),
            field!(lookup, remote_ip6[3]),
        ],
        remote_port: field!(lookup, remote_port),
    }
}

#[inline(always)]
fn try_steer(ctx: &SkLookupContext) {
    let lookup = read_lookup(ctx);
    if lookup.protocol != u32::from(proto::TCP) {
        return;
    }
    // local_port is a u32 in host order; ports fit in 16 bits.
    let port = lookup.local_port as u16;
    let local = match lookup.family {
        AF_INET => SteerKey::ipv4(lookup.local_ip4, port),
        AF_INET6 => SteerKey::ipv6(lookup.local_ip6, port),
        _ => return,
    };
    let Some(service) = steered_service(&local) else {
        return;
    };
    let (family, slot, source_addr) = match lookup.family {
        AF_INET => (
            family::IPV4,
            LISTENER_SLOT_V4,
            v4_mapped(lookup.remote_ip4.to_ne_bytes()),
        ),
        AF_INET6 => {
            let mut addr = [0u8; 16];
            // The words hold the address in network order in memory.
            let mut i = 0;
            while i < 4 {
                let bytes = lookup.remote_ip6[i].to_ne_bytes();
                addr[i * 4] = bytes[0];
                addr[i * 4 + 1] = bytes[1];
                addr[i * 4 + 2] = bytes[2];
                addr[i * 4 + 3] = bytes[3];
                i += 1;
            }
            (family::IPV6, LISTENER_SLOT_V6, addr)
        }
        _ => return,
    };
    bump(|s| s.steered_lookups += 1);

    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let announce = may_send(ctx, port, now);
    if announce {
        let event = WakeEvent {
            service,
            port,
            family,
            ignored_source: u8::from(is_ignored(source_addr)),
            source_addr,
            source_port: u16::from_be(lookup.remote_port),
            _pad16: 0,
            _pad32: 0,
            ktime_ns: now,
        };
        if WAKE_EVENTS.output::<WakeEvent>(&event, 0).is_ok() {
            bump(|s| s.wake_events_sent += 1);
        } else {
            bump(|s| s.wake_events_lost += 1);
            log::wake_event_lost(ctx, port);
        }
    }

    if let Err(code) = LISTENERS.redirect_sk_lookup(ctx, slot, 0) {
        // Another sk_lookup program assigned a socket first: during a
        // hand-over both agents' programs run, and both steer to the same
        // inherited listener. The connection is steered; nothing failed.
        if code == -EEXIST {
            return;
        }
        bump(|s| s.steer_failures += 1);
        // Only for a SYN that passed the rate limit: a flood of SYNs to a
        // port without listener logs ten lines a second, not one a SYN.
        if announce {
            if code == -ENOENT {
                log::listener_missing(ctx, port, slot);
            } else {
                log::assign_failed(ctx, port, slot, code);
            }
        }
    }
}

/// The kernel half of the rate limit: whether this SYN may send a wake event
/// for `port`.
///
/// Two gates. First, `WAKE_LAST_SENT` (port → time of the last event) keeps
/// events of a port at least `WAKE_EVENT_INTERVAL_NS` apart; it is read and
/// written without atomics (this BPF target has no compare-and-swap), so
/// CPUs racing on one port may all pass it. Second, an insert with
/// `BPF_NOEXIST` of (port, 100 ms bucket of `now`) into `WAKE_BUCKETS` is
/// atomic: exactly one SYN per port per aligned bucket wins it. Together: at
/// most one event per port per bucket whatever the races, hence at most 2 in
/// any 100 ms and at most `D / 100 ms + 2` over a burst lasting `D`; without
/// a race they are 100 ms apart. (An LRU eviction of a still-current entry,
/// with more than `MAX_STEERED_PORTS` ports knocking inside one bucket,
/// could let one more through.)
///
/// A failed insert other than the bucket's expected `EEXIST` is logged:
/// it means no event for this SYN.
#[inline(always)]
fn may_send(ctx: &SkLookupContext, port: u16, now: u64) -> bool {
    if let Some(last) = WAKE_LAST_SENT.get_ptr_mut(&port) {
        // SAFETY: `last` points at the value of a live LRU hash element; a
        // torn read is impossible for an aligned u64 on BPF.
        let seen = unsafe { *last };
        if now.saturating_sub(seen) < WAKE_EVENT_INTERVAL_NS {
            return false;
        }
    }
    let bucket = wake_bucket_key(port, now);
    if let Err(code) = WAKE_BUCKETS.insert(&bucket, &1, u64::from(BPF_NOEXIST)) {
        if code != -EEXIST {
            log::bucket_insert_failed(ctx, port, code);
        }
        return false;
    }
    if let Err(code) = WAKE_LAST_SENT.insert(&port, &now, 0) {
        log::last_sent_insert_failed(ctx, port, code);
        return false;
    }
    true
}
