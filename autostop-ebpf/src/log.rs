//! The kernel programs' log lines (aya-log, read by the agent as `tracing`
//! events of target `autostop::ebpf`). Only failure paths log, and only
//! the sk_lookup program: the traffic classifier runs on every packet and
//! never does.
//!
//! Each line is its own BPF function (`#[inline(never)]`): with the
//! record's code inlined, the compiler reused a stack slot that had held a
//! spilled pointer for a plain integer after it, which the verifier only
//! accepts from a loader with CAP_PERFMON (the agent runs with CAP_BPF and
//! CAP_NET_ADMIN). A function of its own has its own stack frame. Whether a
//! line is written at all is `AYA_LOG_LEVEL`, set by the agent at load
//! from its log filter; below that level the verifier drops the call.

use aya_ebpf::programs::SkLookupContext;
use aya_log_ebpf::warn;

/// The record's target: the program that logged (the agent shows it as the
/// `program` field).
const PROGRAM: &str = "steer_lookup";

/// The listener slot of the connection's family is empty: the agent's
/// socket is gone, the connection takes the stock path.
#[inline(never)]
pub fn listener_missing(ctx: &SkLookupContext, port: u16, slot: u32) {
    warn!(
        ctx,
        target: PROGRAM,
        "port {}: no listener in slot {}, the connection takes the stock path", port, slot
    );
}

/// `bpf_sk_assign` refused the agent's listener (`code`, a negative errno).
#[inline(never)]
pub fn assign_failed(ctx: &SkLookupContext, port: u16, slot: u32, code: i32) {
    warn!(
        ctx,
        target: PROGRAM,
        "port {}: assigning the listener in slot {} failed ({}), the connection takes the stock path",
        port,
        slot,
        code
    );
}

/// The wake event ring buffer had no room: the agent hears of this SYN
/// only through the next one.
#[inline(never)]
pub fn wake_event_lost(ctx: &SkLookupContext, port: u16) {
    warn!(
        ctx,
        target: PROGRAM,
        "port {}: wake event lost, the ring buffer is full", port
    );
}

/// An insert into the rate limiter's `WAKE_BUCKETS` failed for another
/// reason than the key being there: no wake event for this SYN.
#[inline(never)]
pub fn bucket_insert_failed(ctx: &SkLookupContext, port: u16, code: i32) {
    warn!(ctx, target: PROGRAM, "port {}: WAKE_BUCKETS insert failed ({})", port, code);
}

/// An insert into the rate limiter's `WAKE_LAST_SENT` failed: no wake
/// event for this SYN.
#[inline(never)]
pub fn last_sent_insert_failed(ctx: &SkLookupContext, port: u16, code: i32) {
    warn!(ctx, target: PROGRAM, "port {}: WAKE_LAST_SENT insert failed ({})", port, code);
}
