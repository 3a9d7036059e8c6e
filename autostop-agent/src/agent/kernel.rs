//! The service state machines' view of the kernel counters:
//! [`KernelActivity`] reads the per-service traffic counters, and
//! [`KernelServices`] is the kernel identity of every managed service
//! (index, published bindings, steering mode), kept by
//! [`super::steering::KernelSteering`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use crate::{
    bpf::Datapath,
    published::HostPort,
    service::{ActivityProbe, SteerMode},
};

/// Kernel identity of a managed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelService {
    /// Index into the per-service BPF arrays; stable for the agent's life.
    pub index: u32,
    /// Where Docker publishes the service's TCP ports on the host, as last
    /// read from Docker (empty until then): what steering matches. UDP
    /// ports are only counted, never steered.
    pub bindings: Vec<HostPort>,
    /// The steering mode its state machine asked for last (`Steered`
    /// until it has looked at Docker).
    pub mode: SteerMode,
}

/// Services known to the kernel side, by name. Written by the steering,
/// read by the activity probe and the wake loop.
pub type KernelServices = Arc<RwLock<HashMap<String, KernelService>>>;

/// Counts open TCP connections into a service (for `hold_while_connected`).
pub trait ConnectionCounter: Send + Sync {
    /// Established connections to `service` right now.
    fn established(&self, service: &str) -> u32;
}

/// [`ActivityProbe`] over the kernel's per-service counters.
pub struct KernelActivity {
    datapath: Arc<Mutex<Datapath>>,
    services: KernelServices,
    connections: Arc<dyn ConnectionCounter>,
}

impl KernelActivity {
    /// A probe reading `datapath`'s counters for the services in `services`.
    pub fn new(
        datapath: Arc<Mutex<Datapath>>,
        services: KernelServices,
        connections: Arc<dyn ConnectionCounter>,
    ) -> Self {
        Self {
            datapath,
            services,
            connections,
        }
    }
}

impl ActivityProbe for KernelActivity {
    fn last_activity(&self, service: &str) -> Option<Instant> {
        let index = self.services.read().ok()?.get(service)?.index;
        let activity = self.datapath.lock().ok()?.activity(index).ok()?;
        instant_from_ktime(activity.last_seen_ns)
    }

    fn open_connections(&self, service: &str) -> u32 {
        self.connections.established(service)
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
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
