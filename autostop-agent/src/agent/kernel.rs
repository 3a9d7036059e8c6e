//! The service state machines' view of the kernel: [`KernelSteering`] turns
//! a service's steering mode into sk_lookup entries and warm-up redirect
//! elements, in the order that never strands a connection, and
//! [`KernelActivity`] reads the per-service traffic counters.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    bpf::Datapath,
    netfilter::WarmupRedirect,
    published::HostPort,
    service::{ActivityProbe, SteerMode, Steering},
};

/// Kernel identity of a managed service: its index in the BPF arrays and
/// the published TCP ports steered while it sleeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelService {
    /// Index into the per-service BPF arrays; stable for the agent's life.
    pub index: u32,
    /// Published TCP ports (UDP ports are only counted, never steered).
    pub tcp_ports: Vec<u16>,
}

/// Services known to the kernel side, by name. Shared by the steering,
/// the activity probe and the agent (which edits it on reload).
pub type KernelServices = Arc<RwLock<HashMap<String, KernelService>>>;

/// Work for the steering worker, which runs netfilter changes in order.
#[derive(Debug)]
enum SteerJob {
    /// Add the bindings to the warm-up redirect; with `already_started`,
    /// also clear SYN_SENT entries of SYNs already DNAT'd to a container
    /// that does not answer yet.
    Warm {
        /// The service's published TCP bindings.
        hosts: Vec<HostPort>,
        /// See [`SteerMode::Warming`].
        already_started: bool,
    },
    /// Leave the warm-up set (and clear SYN_SENT entries), then un-steer:
    /// this order never sends a new connection to a socket that does not
    /// accept.
    Direct(Vec<HostPort>),
    /// Leave the warm-up set if in it (stop or failure: stay steered).
    Cool(Vec<HostPort>),
}

/// [`Steering`] over the sk_lookup map and the warm-up redirect.
///
/// sk_lookup entries change synchronously (a map update), so "steer before
/// stop" holds; netfilter changes, which take a few milliseconds each, go
/// through one ordered worker.
pub struct KernelSteering {
    datapath: Arc<Mutex<Datapath>>,
    services: KernelServices,
    jobs: mpsc::UnboundedSender<SteerJob>,
    /// Ports whose latest requested mode is `Direct`. The worker un-steers
    /// a port only if it is still here: a service that stops right after
    /// turning ready is steered again at once (synchronously), and the
    /// un-steer queued behind a slow netfilter call must not undo that
    /// (it did: new connections to the stopped service were refused).
    direct: Arc<Mutex<HashSet<u16>>>,
}

impl KernelSteering {
    /// Creates the steering and its worker; the worker ends once this value
    /// (and every clone of its sender) is dropped, so join it after the
    /// service actors.
    pub fn new(
        datapath: Arc<Mutex<Datapath>>,
        services: KernelServices,
        warmup: Arc<WarmupRedirect>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let direct = Arc::new(Mutex::new(HashSet::new()));
        let worker = tokio::spawn(steering_worker(
            rx,
            Arc::clone(&datapath),
            warmup,
            Arc::clone(&direct),
        ));
        (
            Self {
                datapath,
                services,
                jobs,
                direct,
            },
            worker,
        )
    }

    fn steer_now(&self, service: &str, kernel: &KernelService) {
        let Ok(mut datapath) = self.datapath.lock() else {
            return;
        };
        for &port in &kernel.tcp_ports {
            if let Err(e) = datapath.steer(port, kernel.index) {
                tracing::error!(service, port, error = %e, "cannot steer port to the agent");
            }
        }
    }
}

impl Steering for KernelSteering {
    fn set_mode(&self, service: &str, mode: SteerMode) {
        let kernel = self
            .services
            .read()
            .ok()
            .and_then(|s| s.get(service).cloned());
        let Some(kernel) = kernel else {
            tracing::warn!(service, ?mode, "steering asked for an unknown service");
            return;
        };
        if let Ok(mut direct) = self.direct.lock() {
            for port in &kernel.tcp_ports {
                if mode == SteerMode::Direct {
                    direct.insert(*port);
                } else {
                    direct.remove(port);
                }
            }
        }
        // Every local address for now; the published bindings come with
        // address-aware steering.
        let hosts: Vec<HostPort> = kernel.tcp_ports.iter().map(|&p| HostPort::any(p)).collect();
        let job = match mode {
            SteerMode::Steered => {
                self.steer_now(service, &kernel);
                SteerJob::Cool(hosts)
            }
            SteerMode::Warming { already_started } => {
                self.steer_now(service, &kernel);
                SteerJob::Warm {
                    hosts,
                    already_started,
                }
            }
            SteerMode::Direct => SteerJob::Direct(hosts),
        };
        // The worker outlives every actor; a send error means shutdown.
        let _ = self.jobs.send(job);
    }
}

async fn steering_worker(
    mut jobs: mpsc::UnboundedReceiver<SteerJob>,
    datapath: Arc<Mutex<Datapath>>,
    warmup: Arc<WarmupRedirect>,
    direct: Arc<Mutex<HashSet<u16>>>,
) {
    while let Some(job) = jobs.recv().await {
        match job {
            SteerJob::Warm {
                hosts,
                already_started,
            } => {
                for host in hosts {
                    if let Err(e) = warmup.warm(host).await {
                        tracing::error!(%host, error = %e, "cannot add to the warm-up redirect");
                    }
                    if !already_started {
                        continue;
                    }
                    if let Err(e) = warmup.forget_syn_sent(host).await {
                        tracing::warn!(%host, error = %e, "conntrack clean-up failed");
                    }
                }
            }
            SteerJob::Direct(hosts) => {
                for host in hosts {
                    cool(&warmup, host).await;
                    let port = host.port;
                    if let Ok(mut datapath) = datapath.lock() {
                        // Checked under the datapath lock: a later steer
                        // (which records its mode first) cannot slip in
                        // between this check and the un-steer.
                        let still_direct = direct.lock().is_ok_and(|d| d.contains(&port));
                        if !still_direct {
                            continue;
                        }
                        if let Err(e) = datapath.unsteer(port) {
                            tracing::error!(port, error = %e, "cannot un-steer port");
                        }
                    }
                }
            }
            SteerJob::Cool(hosts) => {
                for host in hosts {
                    cool(&warmup, host).await;
                }
            }
        }
    }
}

async fn cool(warmup: &WarmupRedirect, host: HostPort) {
    if !warmup.warming().contains(&host) {
        return;
    }
    if let Err(e) = warmup.cool(host).await {
        tracing::error!(%host, error = %e, "cannot remove from the warm-up redirect");
    }
}

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
