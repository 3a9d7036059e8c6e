//! The steering worker: the one task that owns the sk_lookup maps and the
//! warm-up redirect. It turns each service's steering mode and the host
//! bindings Docker publishes for it into sk_lookup entries and warm-up
//! elements, in the order that never strands a connection.
//!
//! Map changes are applied the moment a request arrives (a map update
//! takes microseconds), and the requester is told; netfilter changes (a
//! netlink round trip each) run one at a time, in request order, beside
//! them, so a slow warm-up never delays another service's steering. A
//! hand-back leaves the warm-up set first and un-steers after, and only if
//! the service still wants the stock path then; it is queued ahead of
//! other bindings' work (a ready service waits on nobody else's warm-up or
//! stop), never ahead of work on its own bindings. When every sender is gone
//! the queued netfilter work is finished and the redirect is removed.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    future::Future,
    pin::Pin,
};

use tokio::sync::{mpsc, oneshot};

use super::{
    deps::{SteerMaps, Warmup},
    ids::ServiceId,
    steering::SteerRequest,
};
use crate::{published::HostPort, service::SteerMode};

/// What the worker knows of one service.
#[derive(Debug)]
struct Tracked {
    id: ServiceId,
    /// Where Docker publishes its TCP ports (empty until known).
    bindings: Vec<HostPort>,
    /// The mode its state machine asked for last.
    mode: SteerMode,
    /// Bindings another program listens on: never steered nor warmed.
    yielded: BTreeSet<HostPort>,
}

impl Tracked {
    /// Its bindings that may be steered (not yielded).
    fn steerable(&self) -> Vec<HostPort> {
        self.bindings
            .iter()
            .filter(|b| !self.yielded.contains(b))
            .copied()
            .collect()
    }
}

/// Netfilter work, run one job at a time.
enum NetJob {
    /// Add the bindings to the warm-up redirect; with `already_started`,
    /// also clear SYN_SENT entries of SYNs already DNAT'd to a container
    /// that does not answer yet.
    Warm {
        bindings: Vec<HostPort>,
        already_started: bool,
    },
    /// Leave the warm-up set if in it (stop, failure, removal: the bindings
    /// stay steered or are gone).
    Cool(Vec<HostPort>),
    /// Leave the warm-up set, then un-steer if `service` still wants the
    /// stock path.
    HandBack { service: String, binding: HostPort },
    /// Every job queued before is done.
    Notify(oneshot::Sender<()>),
}

impl NetJob {
    /// Whether the job changes anything about one of `bindings`.
    fn touches(&self, bindings: &[HostPort]) -> bool {
        match self {
            NetJob::Warm { bindings: own, .. } | NetJob::Cool(own) => {
                own.iter().any(|b| bindings.contains(b))
            }
            NetJob::HandBack { binding, .. } => bindings.contains(binding),
            NetJob::Notify(_) => false,
        }
    }
}

/// Where a hand-back of `bindings` goes in `queue`: right after the last
/// job on one of them (their order is what keeps connections on a path),
/// ahead of everything else.
fn hand_back_slot(queue: &VecDeque<NetJob>, bindings: &[HostPort]) -> usize {
    queue
        .iter()
        .rposition(|job| job.touches(bindings))
        .map_or(0, |last| last.saturating_add(1))
}

/// What a finished job leaves to do on the maps.
enum Finished {
    Nothing,
    UnsteerIfDirect { service: String, binding: HostPort },
}

/// The worker's own state: the maps, the services and the queued work.
struct Worker {
    maps: Box<dyn SteerMaps>,
    services: HashMap<String, Tracked>,
    queue: VecDeque<NetJob>,
}

type JobFuture<'a> = Pin<Box<dyn Future<Output = Finished> + Send + 'a>>;

/// Runs the worker until every [`super::steering::KernelSteering`] is
/// dropped, then finishes the queued netfilter work and removes the
/// warm-up redirect.
pub(super) async fn run(
    mut requests: mpsc::UnboundedReceiver<SteerRequest>,
    maps: Box<dyn SteerMaps>,
    warmup: Box<dyn Warmup>,
) {
    let mut worker = Worker {
        maps,
        services: HashMap::new(),
        queue: VecDeque::new(),
    };
    let redirect: &dyn Warmup = warmup.as_ref();
    let mut current: Option<JobFuture<'_>> = None;
    let mut open = true;
    loop {
        if current.is_none() {
            current = worker
                .queue
                .pop_front()
                .map(|job| Box::pin(run_job(redirect, job)) as JobFuture<'_>);
        }
        if !open && current.is_none() {
            break;
        }
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some(request) => worker.handle(request),
                None => open = false,
            },
            finished = next_finished(&mut current), if current.is_some() => {
                current = None;
                worker.finish(finished);
            }
        }
    }
    drop(current);
    if let Err(e) = warmup.shutdown().await {
        tracing::error!(error = %e, "removing the warm-up redirect table");
    }
}

async fn next_finished(current: &mut Option<JobFuture<'_>>) -> Finished {
    match current {
        Some(job) => job.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn run_job(redirect: &dyn Warmup, job: NetJob) -> Finished {
    match job {
        NetJob::Warm {
            bindings,
            already_started,
        } => {
            for binding in bindings {
                if let Err(e) = redirect.warm(binding).await {
                    tracing::error!(%binding, error = %e, "cannot add to the warm-up redirect");
                }
                if already_started {
                    if let Err(e) = redirect.forget_syn_sent(binding).await {
                        tracing::warn!(%binding, error = %e, "conntrack clean-up failed");
                    }
                }
            }
            Finished::Nothing
        }
        NetJob::Cool(bindings) => {
            for binding in bindings {
                cool(redirect, binding).await;
            }
            Finished::Nothing
        }
        NetJob::HandBack { service, binding } => {
            cool(redirect, binding).await;
            Finished::UnsteerIfDirect { service, binding }
        }
        NetJob::Notify(done) => {
            let _ = done.send(());
            Finished::Nothing
        }
    }
}

#[cfg(test)]
#[path = "tests_steer_worker.rs"]
mod tests;

async fn cool(redirect: &dyn Warmup, binding: HostPort) {
    if !redirect.is_warming(binding) {
        return;
    }
    if let Err(e) = redirect.cool(binding).await {
        tracing::error!(%binding, error = %e, "cannot remove from the warm-up redirect");
    }
}

impl Worker {
    fn handle(&mut self, request: SteerRequest) {
        match request {
            SteerRequest::Add { service, id } => {
                let tracked = Tracked {
                    id,
                    bindings: Vec::new(),
                    mode: SteerMode::Steered,
                    yielded: BTreeSet::new(),
                };
                if let Some(old) = self.services.insert(service.clone(), tracked) {
                    self.drop_bindings(&service, old.steerable());
                }
            }
            SteerRequest::Remove { service } => {
                if let Some(old) = self.services.remove(&service) {
                    self.drop_bindings(&service, old.steerable());
                }
            }
            SteerRequest::Bindings { service, bindings } => self.set_bindings(&service, bindings),
            SteerRequest::Yielded { service, yielded } => self.set_yielded(&service, yielded),
            SteerRequest::Mode {
                service,
                mode,
                steered,
                handed_back,
            } => {
                self.set_mode(&service, mode, handed_back);
                let _ = steered.send(());
            }
            SteerRequest::Flush { done } => {
                let _ = done.send(());
            }
            SteerRequest::Clear { id, done } => {
                if let Err(e) = self.maps.clear_service(id.0) {
                    tracing::error!(index = %id, error = %e, "cannot clear a service's steering entries");
                }
                let _ = done.send(());
            }
        }
    }

    /// Un-steers `bindings` at once and leaves the warm-up set after.
    fn drop_bindings(&mut self, service: &str, bindings: Vec<HostPort>) {
        for binding in &bindings {
            unsteer(self.maps.as_mut(), service, *binding);
        }
        self.queue.push_back(NetJob::Cool(bindings));
    }

    fn set_bindings(&mut self, service: &str, bindings: Vec<HostPort>) {
        let Some(tracked) = self.services.get_mut(service) else {
            return;
        };
        let all: BTreeSet<HostPort> = bindings.into_iter().collect();
        if tracked.bindings.iter().copied().collect::<BTreeSet<_>>() == all {
            return;
        }
        let old: BTreeSet<HostPort> = tracked.steerable().into_iter().collect();
        tracked.bindings = all.iter().copied().collect();
        tracing::info!(service, bindings = ?tracked.bindings, "published bindings");
        let new: BTreeSet<HostPort> = tracked.steerable().into_iter().collect();
        let gone: Vec<HostPort> = old.difference(&new).copied().collect();
        let added: Vec<HostPort> = new.difference(&old).copied().collect();
        match tracked.mode {
            // The stock path: a pending hand-back un-steers what was
            // steered before; nothing new is steered.
            SteerMode::Direct => {}
            SteerMode::Steered | SteerMode::Warming { .. } => {
                let (id, mode) = (tracked.id, tracked.mode);
                for binding in &gone {
                    unsteer(self.maps.as_mut(), service, *binding);
                }
                for binding in &added {
                    steer(self.maps.as_mut(), service, *binding, id);
                }
                self.queue.push_back(NetJob::Cool(gone));
                if let SteerMode::Warming { already_started } = mode {
                    self.queue.push_back(NetJob::Warm {
                        bindings: added,
                        already_started,
                    });
                }
            }
        }
    }

    /// Records `mode`, steers at once what must be steered and queues the
    /// netfilter work; `handed_back` hears when a `Direct` has put every
    /// binding on the stock path (dropped at once otherwise).
    fn set_mode(
        &mut self,
        service: &str,
        mode: SteerMode,
        handed_back: Option<oneshot::Sender<()>>,
    ) {
        let Some(tracked) = self.services.get_mut(service) else {
            tracing::warn!(service, ?mode, "steering asked for an unknown service");
            return;
        };
        tracked.mode = mode;
        let (id, bindings) = (tracked.id, tracked.steerable());
        match mode {
            SteerMode::Steered | SteerMode::Warming { .. } => {
                for binding in &bindings {
                    steer(self.maps.as_mut(), service, *binding, id);
                }
                self.queue.push_back(match mode {
                    SteerMode::Warming { already_started } => NetJob::Warm {
                        bindings,
                        already_started,
                    },
                    _ => NetJob::Cool(bindings),
                });
            }
            SteerMode::Direct => {
                let mut at = hand_back_slot(&self.queue, &bindings);
                let jobs = bindings
                    .into_iter()
                    .map(|binding| NetJob::HandBack {
                        service: service.to_owned(),
                        binding,
                    })
                    .chain(handed_back.map(NetJob::Notify));
                for job in jobs {
                    self.queue.insert(at, job);
                    at = at.saturating_add(1);
                }
            }
        }
    }

    /// Replaces the yielded set of `service`: newly yielded bindings leave
    /// the kernel path and the warm-up set at once, released ones are
    /// steered (and warmed) again as the service's mode asks.
    fn set_yielded(&mut self, service: &str, yielded: BTreeSet<HostPort>) {
        let Some(tracked) = self.services.get_mut(service) else {
            return;
        };
        let before: BTreeSet<HostPort> = tracked.steerable().into_iter().collect();
        tracked.yielded = yielded;
        let after: BTreeSet<HostPort> = tracked.steerable().into_iter().collect();
        let (id, mode) = (tracked.id, tracked.mode);
        if mode == SteerMode::Direct {
            // On the stock path already (or being handed back).
            return;
        }
        let gone: Vec<HostPort> = before.difference(&after).copied().collect();
        let back: Vec<HostPort> = after.difference(&before).copied().collect();
        for binding in &gone {
            unsteer(self.maps.as_mut(), service, *binding);
        }
        for binding in &back {
            steer(self.maps.as_mut(), service, *binding, id);
        }
        self.queue.push_back(NetJob::Cool(gone));
        if let SteerMode::Warming { already_started } = mode {
            self.queue.push_back(NetJob::Warm {
                bindings: back,
                already_started,
            });
        }
    }

    fn finish(&mut self, finished: Finished) {
        let Finished::UnsteerIfDirect { service, binding } = finished else {
            return;
        };
        let still_direct = self
            .services
            .get(&service)
            .is_some_and(|t| t.mode == SteerMode::Direct);
        if still_direct {
            unsteer(self.maps.as_mut(), &service, binding);
        }
    }
}

fn steer(maps: &mut dyn SteerMaps, service: &str, binding: HostPort, id: ServiceId) {
    if let Err(e) = maps.steer(binding, id.0) {
        tracing::error!(service, %binding, error = %e, "cannot steer to the agent");
    }
}

fn unsteer(maps: &mut dyn SteerMaps, service: &str, binding: HostPort) {
    if let Err(e) = maps.unsteer(binding) {
        tracing::error!(service, %binding, error = %e, "cannot un-steer");
    }
}
