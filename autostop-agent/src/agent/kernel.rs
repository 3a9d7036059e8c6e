//! The state machines' view of the kernel counters: [`KernelActivity`]
//! reads a service's last activity from the counters (through the
//! read-only [`ActivityCounters`] view, under the index the directory
//! gives) and counts its open connections inside its containers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nix::time::{clock_gettime, ClockId};

use super::{deps::ActivityCounters, registry::DirectoryReader};
use crate::service::ActivityProbe;

/// [`ActivityProbe`] over the kernel's per-service counters.
pub struct KernelActivity {
    counters: Arc<dyn ActivityCounters>,
    directory: DirectoryReader,
}

impl KernelActivity {
    /// A probe reading `counters` for the services in `directory`.
    pub(super) fn new(counters: Arc<dyn ActivityCounters>, directory: DirectoryReader) -> Self {
        Self {
            counters,
            directory,
        }
    }
}

impl ActivityProbe for KernelActivity {
    fn last_activity(&self, service: &str) -> Option<Instant> {
        let id = self.directory.get(service)?.id;
        let activity = self.counters.activity(id.0).ok()?;
        instant_from_ktime(activity.last_seen_ns)
    }

    /// Established TCP connections inside the service's containers (their
    /// own network namespaces see every path: proxied, DNAT'd, external),
    /// at the PIDs and ports the endpoint refresher last found.
    fn open_connections(&self, service: &str) -> u32 {
        let Some(record) = self.directory.get(service) else {
            return 0;
        };
        let listeners = record.cells.listeners.borrow().clone();
        listeners
            .iter()
            .map(|(pid, port)| crate::procnet::established(*pid, *port))
            .sum()
    }
}

/// Converts a `bpf_ktime_get_*ns()` stamp (CLOCK_MONOTONIC, the clock
/// `Instant` uses on Linux; the coarse variant only lags by up to a tick)
/// into an `Instant`; `None` for 0 (never seen).
pub fn instant_from_ktime(ktime_ns: u64) -> Option<Instant> {
    if ktime_ns == 0 {
        return None;
    }
    let now_ns = monotonic_now_ns()?;
    let age = Duration::from_nanos(now_ns.saturating_sub(ktime_ns));
    Instant::now().checked_sub(age)
}

fn monotonic_now_ns() -> Option<u64> {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u64::try_from(ts.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktime_maps_onto_instant() {
        assert_eq!(instant_from_ktime(0), None);
        let now = monotonic_now_ns().expect("clock");
        let two_s_ago = instant_from_ktime(now - 2_000_000_000).expect("instant");
        let age = two_s_ago.elapsed();
        assert!(
            age >= Duration::from_secs(2) && age < Duration::from_secs(3),
            "{age:?}"
        );
    }
}
