//! autostop's kernel programs.
//!
//! - [`classifier::count_traffic`]: TC classifier on the egress side of the
//!   Docker bridges and `lo` that counts traffic heading into services,
//!   except from ignored sources; [`classifier::calibrate_noop`], its
//!   empty twin for benchmarks.
//! - [`steering::steer_lookup`]: sk_lookup program that hands new TCP
//!   connections to the published ports of stopped services to the agent's
//!   listener and tells the agent through a ring buffer.
//!
//! Both fail open: whatever happens, the packet or the lookup goes on as if
//! the programs were not there. Only the sk_lookup program logs, on its
//! failure paths ([`log`]).
#![no_std]
#![no_main]

mod classifier;
mod log;
mod maps;
mod steering;

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
