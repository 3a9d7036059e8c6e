//! [`KernelSteering`]: turns each service's steering mode and the host
//! bindings Docker publishes for it into sk_lookup entries and warm-up
//! redirect elements, in the order that never strands a connection.
//!
//! Only the (address, port) pairs Docker publishes are ever steered or
//! redirected: a service whose bindings are not known yet (Docker not asked
//! yet, or unreachable since the agent started) steers nothing, and a
//! configured port no container publishes is never steered.
//!
//! sk_lookup entries change synchronously (a map update), so "steer before
//! stop" holds; netfilter changes go through one ordered worker. Jobs are
//! queued while the service table's lock is held, so the worker sees them
//! in the order the table changed.

use std::{
    collections::BTreeSet,
    sync::{Mutex, MutexGuard, PoisonError, RwLockWriteGuard},
};

use tokio::sync::mpsc;

use super::kernel::{KernelService, KernelServices};
use crate::{
    bpf::Datapath,
    netfilter::WarmupRedirect,
    published::HostPort,
    service::{SteerMode, Steering},
};

/// Work for the steering worker, which runs netfilter changes in order.
#[derive(Debug)]
enum SteerJob {
    /// Add the bindings to the warm-up redirect; with `already_started`,
    /// also clear SYN_SENT entries of SYNs already DNAT'd to a container
    /// that does not answer yet.
    Warm {
        /// The bindings to warm.
        bindings: Vec<HostPort>,
        /// See [`SteerMode::Warming`].
        already_started: bool,
    },
    /// Leave the warm-up set (and clear SYN_SENT entries), then un-steer
    /// if the service still wants the stock path: this order never sends a
    /// new connection to a socket that does not accept.
    Direct {
        /// The service, whose mode is checked again before un-steering.
        service: String,
        /// Its bindings when it asked for the stock path.
        bindings: Vec<HostPort>,
    },
    /// Leave the warm-up set if in it (stop, failure, removal: the
    /// bindings stay steered or are gone).
    Cool(Vec<HostPort>),
}

/// [`Steering`] over the sk_lookup map and the warm-up redirect.
pub struct KernelSteering {
    datapath: std::sync::Arc<Mutex<Datapath>>,
    services: KernelServices,
    jobs: mpsc::UnboundedSender<SteerJob>,
}

/// Takes a std lock; a poisoned one is taken anyway: every change made
/// under these locks is a whole kernel map update, so a panicking holder
/// cannot leave a half-written value behind.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KernelSteering {
    /// Creates the steering and its worker; the worker ends once this value
    /// (and every clone of its sender) is dropped, so join it after the
    /// service actors.
    pub fn new(
        datapath: std::sync::Arc<Mutex<Datapath>>,
        services: KernelServices,
        warmup: std::sync::Arc<WarmupRedirect>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(steering_worker(
            rx,
            std::sync::Arc::clone(&datapath),
            std::sync::Arc::clone(&services),
            warmup,
        ));
        (
            Self {
                datapath,
                services,
                jobs,
            },
            worker,
        )
    }

    fn services(&self) -> RwLockWriteGuard<'_, std::collections::HashMap<String, KernelService>> {
        self.services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking `service` under kernel `index`. Nothing is steered
    /// until its bindings are known ([`Self::set_bindings`]); until its
    /// state machine has looked at Docker, its mode is `Steered`, so a new
    /// connection is held rather than refused.
    pub fn add(&self, service: &str, index: u32) {
        let _datapath = lock(&self.datapath);
        self.services().insert(
            service.to_owned(),
            KernelService {
                index,
                bindings: Vec::new(),
                mode: SteerMode::Steered,
            },
        );
    }

    /// Stops tracking `service`: its bindings go back to the stock path.
    pub fn remove(&self, service: &str) {
        let mut datapath = lock(&self.datapath);
        let mut services = self.services();
        let Some(kernel) = services.remove(service) else {
            return;
        };
        for binding in &kernel.bindings {
            unsteer(&mut datapath, service, *binding);
        }
        self.queue(SteerJob::Cool(kernel.bindings));
    }

    /// Records where Docker now publishes `service`'s TCP ports and moves
    /// the kernel entries of a steered or warming service to them.
    pub fn set_bindings(&self, service: &str, bindings: Vec<HostPort>) {
        let mut datapath = lock(&self.datapath);
        let mut services = self.services();
        let Some(kernel) = services.get_mut(service) else {
            return;
        };
        let old: BTreeSet<HostPort> = kernel.bindings.iter().copied().collect();
        let new: BTreeSet<HostPort> = bindings.iter().copied().collect();
        if old == new {
            return;
        }
        kernel.bindings = new.iter().copied().collect();
        tracing::info!(service, bindings = ?kernel.bindings, "published bindings");
        let gone: Vec<HostPort> = old.difference(&new).copied().collect();
        let added: Vec<HostPort> = new.difference(&old).copied().collect();
        match kernel.mode {
            // The stock path: a pending `Direct` job un-steers what was
            // steered before; nothing new is steered.
            SteerMode::Direct => {}
            SteerMode::Steered | SteerMode::Warming { .. } => {
                for binding in &gone {
                    unsteer(&mut datapath, service, *binding);
                }
                for binding in &added {
                    steer(&mut datapath, service, *binding, kernel.index);
                }
                self.queue(SteerJob::Cool(gone));
                if let SteerMode::Warming { already_started } = kernel.mode {
                    self.queue(SteerJob::Warm {
                        bindings: added,
                        already_started,
                    });
                }
            }
        }
    }

    fn queue(&self, job: SteerJob) {
        // The worker outlives every actor; a send error means shutdown.
        let _ = self.jobs.send(job);
    }
}

impl Steering for KernelSteering {
    fn set_mode(&self, service: &str, mode: SteerMode) {
        let mut datapath = lock(&self.datapath);
        let mut services = self.services();
        let Some(kernel) = services.get_mut(service) else {
            tracing::warn!(service, ?mode, "steering asked for an unknown service");
            return;
        };
        kernel.mode = mode;
        let bindings = kernel.bindings.clone();
        let job = match mode {
            SteerMode::Steered | SteerMode::Warming { .. } => {
                for binding in &bindings {
                    steer(&mut datapath, service, *binding, kernel.index);
                }
                match mode {
                    SteerMode::Warming { already_started } => SteerJob::Warm {
                        bindings,
                        already_started,
                    },
                    _ => SteerJob::Cool(bindings),
                }
            }
            SteerMode::Direct => SteerJob::Direct {
                service: service.to_owned(),
                bindings,
            },
        };
        self.queue(job);
    }
}

fn steer(datapath: &mut Datapath, service: &str, binding: HostPort, index: u32) {
    if let Err(e) = datapath.steer(binding, index) {
        tracing::error!(service, %binding, error = %e, "cannot steer to the agent");
    }
}

fn unsteer(datapath: &mut Datapath, service: &str, binding: HostPort) {
    if let Err(e) = datapath.unsteer(binding) {
        tracing::error!(service, %binding, error = %e, "cannot un-steer");
    }
}

async fn steering_worker(
    mut jobs: mpsc::UnboundedReceiver<SteerJob>,
    datapath: std::sync::Arc<Mutex<Datapath>>,
    services: KernelServices,
    warmup: std::sync::Arc<WarmupRedirect>,
) {
    while let Some(job) = jobs.recv().await {
        match job {
            SteerJob::Warm {
                bindings,
                already_started,
            } => {
                for binding in bindings {
                    if let Err(e) = warmup.warm(binding.port).await {
                        tracing::error!(%binding, error = %e, "cannot add to the warm-up redirect");
                    }
                    if !already_started {
                        continue;
                    }
                    if let Err(e) = warmup.forget_syn_sent(binding.port).await {
                        tracing::warn!(%binding, error = %e, "conntrack clean-up failed");
                    }
                }
            }
            SteerJob::Direct { service, bindings } => {
                for binding in bindings {
                    cool(&warmup, binding).await;
                    let mut datapath = lock(&datapath);
                    // Checked under the datapath lock, which every steer
                    // holds: a later steer cannot slip in between this
                    // check and the un-steer.
                    let still_direct = services
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&service)
                        .is_some_and(|k| k.mode == SteerMode::Direct);
                    if still_direct {
                        unsteer(&mut datapath, &service, binding);
                    }
                }
            }
            SteerJob::Cool(bindings) => {
                for binding in bindings {
                    cool(&warmup, binding).await;
                }
            }
        }
    }
}

async fn cool(warmup: &WarmupRedirect, binding: HostPort) {
    if !warmup.warming_ports().await.contains(&binding.port) {
        return;
    }
    if let Err(e) = warmup.cool(binding.port).await {
        tracing::error!(%binding, error = %e, "cannot remove from the warm-up redirect");
    }
}
