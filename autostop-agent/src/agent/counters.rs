//! The endpoint refresher: the one task that owns the classifier, its
//! targets and counters. It keeps the kernel's view of each service
//! current (where Docker publishes its ports, handed to the steering
//! worker; container address and port targets for the counters; the
//! classifier on every bridge a service uses; the containers' PIDs for
//! open-connection counts), copies the counters into the metrics, and
//! clears a departed service's index before it is reused.
//!
//! A refresh of one service runs when it is added or one of its
//! containers starts or dies ([`Counters::refresh_one`]), of every service
//! when a network appears ([`Counters::refresh`]), and of the services
//! whose containers run every [`REFRESH_EVERY`] as a safety resync (a
//! stopped service's endpoints cannot change until an event says it
//! started); requests pending at once make one pass. A pass that finds
//! Docker unreachable is followed by a full one every
//! [`UNREACHABLE_RETRY`] until Docker answers. Counters are copied
//! into the metrics every [`SAMPLE_EVERY`] only while a service is awake
//! (starting, ready or stopping), and only those services' (plus, once,
//! the ones that fell asleep since the last sample).
//! Clear requests are served between two services of a refresh, so an
//! index is never held back by a long one; and a service is written to the
//! kernel only while the directory still holds that same incarnation of
//! it, so a refresh that began before a removal cannot bring its targets
//! back.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

use super::{
    control::HealthFlags,
    deps::{AgentDocker, Counting},
    ids::ServiceId,
    port_guard::PortGuard,
    registry::{DirectoryReader, ServiceRecord},
};
use crate::{
    bpf::Target,
    docker::{DockerError, ServiceEndpoints},
    metrics::Metrics,
    service::ServiceState,
};

/// How often the endpoints of running services are re-read without an
/// event asking for it.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// How soon a pass that found Docker unreachable is tried again (until one
/// gets through: `/healthz` and the bindings must not wait for the
/// resync).
const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);
/// How often kernel counters are copied into the metrics while a service
/// is awake.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A request to the refresher: clear `id`, then say so.
struct ClearRequest {
    id: ServiceId,
    done: oneshot::Sender<()>,
}

/// What to refresh.
#[derive(Debug)]
enum Refresh {
    /// Every service (a new network, say).
    All,
    /// One service (added, or one of its containers started or died).
    One(String),
}

/// How the rest of the agent reaches the refresher. Cheap to clone.
#[derive(Clone)]
pub(super) struct Counters {
    clears: mpsc::UnboundedSender<ClearRequest>,
    refreshes: mpsc::UnboundedSender<Refresh>,
}

impl Counters {
    /// Asks for a refresh of every service soon (requests pending at once
    /// make one pass).
    pub(super) fn refresh(&self) {
        let _ = self.refreshes.send(Refresh::All);
    }

    /// Asks for a refresh of `service` soon.
    pub(super) fn refresh_one(&self, service: &str) {
        let _ = self.refreshes.send(Refresh::One(service.to_owned()));
    }

    /// Asks for every target of `id` to be removed and its counters
    /// zeroed; the answer comes once done.
    pub(super) fn clear(&self, id: ServiceId) -> oneshot::Receiver<()> {
        let (done, cleared) = oneshot::channel();
        let _ = self.clears.send(ClearRequest { id, done });
        cleared
    }
}

/// What the refresher reads and feeds.
pub(super) struct Refresher {
    pub docker: Arc<dyn AgentDocker>,
    pub kernel: Box<dyn Counting>,
    pub directory: DirectoryReader,
    pub guard: PortGuard,
    pub metrics: Arc<Metrics>,
    pub health: Arc<HealthFlags>,
}

/// The refresher's own state besides its inputs.
struct Books {
    /// The targets registered for each index.
    registered: HashMap<ServiceId, HashSet<Target>>,
    /// The kernel's last totals per index, to turn samples into increments.
    totals: HashMap<ServiceId, (u64, u64)>,
    /// The services awake at the last sample: read once more after they
    /// sleep, so their last counts reach the metrics.
    awake: HashSet<ServiceId>,
}

impl Refresher {
    /// The mailbox and the task's body. When the task ends it hands the
    /// classifier back through `keep`, so the agent detaches the programs
    /// last, after the steering worker removed the warm-up table.
    pub(super) fn start(
        self,
        keep: oneshot::Sender<Box<dyn Counting>>,
        shutdown: CancellationToken,
    ) -> (Counters, impl std::future::Future<Output = ()> + Send) {
        let (clears, rx) = mpsc::unbounded_channel();
        let (refreshes, asked) = mpsc::unbounded_channel();
        let counters = Counters { clears, refreshes };
        let task = async move {
            let kernel = self.run(rx, asked, shutdown).await;
            let _ = keep.send(kernel);
        };
        (counters, task)
    }

    async fn run(
        mut self,
        clears: mpsc::UnboundedReceiver<ClearRequest>,
        asked: mpsc::UnboundedReceiver<Refresh>,
        shutdown: CancellationToken,
    ) -> Box<dyn Counting> {
        self.serve(clears, asked, &shutdown).await;
        self.kernel
    }

    async fn serve(
        &mut self,
        mut clears: mpsc::UnboundedReceiver<ClearRequest>,
        mut asked: mpsc::UnboundedReceiver<Refresh>,
        shutdown: &CancellationToken,
    ) {
        let mut books = Books {
            registered: HashMap::new(),
            totals: HashMap::new(),
            awake: HashSet::new(),
        };
        let start = tokio::time::Instant::now();
        let mut periodic = tokio::time::interval_at(start + REFRESH_EVERY, REFRESH_EVERY);
        periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Whether the last sample saw a service awake: one more sample
        // after the last one sleeps copies its final counts.
        let mut sampled_awake = true;
        // Set while Docker did not answer the last pass.
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let sampling = sampled_awake || self.any_awake();
            let mut only: Option<HashSet<String>> = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(clear) = clears.recv() => {
                    self.clear(&mut books, clear);
                    continue;
                }
                Some(first) = asked.recv() => match first {
                    Refresh::All => None,
                    Refresh::One(name) => Some(HashSet::from([name])),
                },
                _ = periodic.tick() => {
                    let running = self.running();
                    if running.is_empty() {
                        continue;
                    }
                    Some(running)
                }
                _ = sample.tick(), if sampling => {
                    sampled_awake = self.sample(&mut books);
                    continue;
                }
                () = sleep_until_opt(retry_at) => None,
            };
            // Every request pending now is served by this pass.
            while let Ok(more) = asked.try_recv() {
                match (more, only.as_mut()) {
                    (Refresh::One(name), Some(names)) => {
                        names.insert(name);
                    }
                    _ => only = None,
                }
            }
            let snapshot = self.directory.snapshot();
            let mut reachable = true;
            let chosen = snapshot
                .iter()
                .filter(|r| only.as_ref().is_none_or(|names| names.contains(r.name())));
            for record in chosen {
                let endpoints = tokio::select! {
                    () = shutdown.cancelled() => return,
                    endpoints = self.docker.endpoints(record.name()) => endpoints,
                };
                while let Ok(clear) = clears.try_recv() {
                    self.clear(&mut books, clear);
                }
                if !self.directory.snapshot().holds(record) {
                    continue;
                }
                match endpoints {
                    Ok(endpoints) => self.apply(&mut books, record, &endpoints).await,
                    Err(e) => {
                        reachable &= !matches!(e, DockerError::Unreachable(_));
                        if matches!(e, DockerError::NotFound(_)) {
                            // No container: Docker publishes nothing for it.
                            self.guard.bindings(record.name(), Vec::new(), Vec::new());
                            record
                                .cells
                                .set_problems(record.name(), vec![e.to_string()]);
                        }
                        tracing::debug!(service = %record.name(), error = %e, "endpoints not available");
                    }
                }
            }
            self.health.docker_checked(reachable);
            retry_at = (!reachable).then(|| tokio::time::Instant::now() + UNREACHABLE_RETRY);
        }
    }

    /// Feeds one service's endpoints to the steering, its cells and the
    /// kernel.
    async fn apply(
        &mut self,
        books: &mut Books,
        record: &ServiceRecord,
        endpoints: &ServiceEndpoints,
    ) {
        let name = record.name();
        self.guard
            .bindings(name, endpoints.bindings.clone(), addresses(endpoints));
        record.cells.set_problems(name, problems(endpoints));
        let mut listeners = Vec::new();
        for endpoint in endpoints.endpoints.iter().filter(|e| e.ip.is_some()) {
            if let Some(pid) = self.docker.container_pid(&endpoint.container).await {
                listeners.push((pid, endpoint.container_port));
            }
        }
        record.cells.listeners.send_replace(listeners);
        // The PIDs took Docker calls: check the service is still there.
        if !self.directory.snapshot().holds(record) {
            return;
        }
        for bridge in &endpoints.bridges {
            if let Err(e) = self.kernel.attach_egress(bridge) {
                tracing::warn!(bridge, error = %e, "cannot attach the classifier");
            }
        }
        let targets: HashSet<Target> = endpoints
            .endpoints
            .iter()
            .flat_map(|e| {
                // Both families: docker-proxy relays `[::]` to the IPv6
                // address, and IPv6 clients may route to it directly.
                [e.ip, e.ipv6].into_iter().flatten().map(|ip| Target {
                    addr: SocketAddr::new(ip, e.container_port),
                    protocol: e.protocol,
                })
            })
            .collect();
        let old = books.registered.remove(&record.id).unwrap_or_default();
        for stale in old.difference(&targets) {
            if let Err(e) = self.kernel.remove_target(stale) {
                tracing::warn!(service = %name, target = %stale, error = %e, "cannot stop counting target");
            }
        }
        for target in targets.difference(&old) {
            if let Err(e) = self.kernel.add_target(target, record.id.0) {
                tracing::warn!(service = %name, %target, error = %e, "cannot count target");
            }
        }
        books.registered.insert(record.id, targets);
    }

    /// Forgets `id` in the kernel and in the books, then answers.
    fn clear(&mut self, books: &mut Books, clear: ClearRequest) {
        books.registered.remove(&clear.id);
        books.totals.remove(&clear.id);
        books.awake.remove(&clear.id);
        if let Err(e) = self.kernel.clear_service(clear.id.0) {
            tracing::error!(index = %clear.id, error = %e, "cannot clear a service's counters");
        }
        let _ = clear.done.send(());
    }

    /// Whether a service is starting, ready or stopping.
    fn any_awake(&self) -> bool {
        self.directory
            .snapshot()
            .iter()
            .any(|r| is_awake(&r.handle.status().state))
    }

    /// The services whose containers may run (awake, or not known yet).
    fn running(&self) -> HashSet<String> {
        self.directory
            .snapshot()
            .iter()
            .filter(|r| {
                let state = r.handle.status().state;
                is_awake(&state) || state == ServiceState::Unknown
            })
            .map(|r| r.name().to_owned())
            .collect()
    }

    /// Copies the counters of the services awake now or at the last
    /// sample into the metrics (a sleeping service's do not move: nothing
    /// reaches its containers); whether one of them is awake.
    fn sample(&self, books: &mut Books) -> bool {
        let was_awake = std::mem::take(&mut books.awake);
        for record in self.directory.snapshot().iter() {
            if is_awake(&record.handle.status().state) {
                books.awake.insert(record.id);
            } else if !was_awake.contains(&record.id) {
                continue;
            }
            let Ok(activity) = self.kernel.activity(record.id.0) else {
                continue;
            };
            let (packets, bytes) = books
                .totals
                .insert(record.id, (activity.packets, activity.bytes))
                .unwrap_or((0, 0));
            // A reset (a cleared index) restarts the count.
            let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
            self.metrics.add_activity(
                record.name(),
                delta(activity.packets, packets),
                delta(activity.bytes, bytes),
            );
        }
        !books.awake.is_empty()
    }
}

/// The addresses of a service's running containers (what its
/// docker-proxy relays to).
pub(super) fn addresses(endpoints: &ServiceEndpoints) -> Vec<std::net::IpAddr> {
    endpoints
        .endpoints
        .iter()
        .flat_map(|e| [e.ip, e.ipv6])
        .flatten()
        .collect()
}

/// Starting, ready or stopping: its containers run and may see traffic.
fn is_awake(state: &ServiceState) -> bool {
    matches!(
        state,
        ServiceState::Starting | ServiceState::Ready | ServiceState::Stopping
    )
}

/// What keeps a service's ports (or its compose project) from working as
/// configured.
pub(super) fn problems(endpoints: &ServiceEndpoints) -> Vec<String> {
    endpoints
        .unpublished
        .iter()
        .map(|port| {
            format!("port {port}: no container of the service publishes it; it is not steered")
        })
        .chain(endpoints.notes.iter().cloned())
        .collect()
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
