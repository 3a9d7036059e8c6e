//! The agent's background tasks and the small adapters between modules:
//! wake events → state machines, Docker events → state machines, container
//! endpoints → kernel counters, the upstream lookup for held connections,
//! open-connection counts and the alert webhook.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{control::Services, kernel::KernelServices, steering::KernelSteering, FailureSink};
use crate::{
    bpf::{Datapath, Target, WakeEvents},
    coldstart::Upstreams,
    docker::{spawn_event_watcher, DockerRuntime, NetworkEvent, ServiceEndpoints},
    service::{Command, Trigger},
    supervisor::{Supervised, Supervisor},
};

/// How often container endpoints are re-read even without an event.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How often kernel counters are copied into the metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Held connections are forwarded to the container's own address: the one
/// the readiness probe just reached, else (a connection forwarded long
/// after readiness) as Docker reports it now.
pub(super) struct DockerUpstreams(pub Arc<DockerRuntime>);

#[async_trait::async_trait]
impl Upstreams for DockerUpstreams {
    async fn upstream(&self, service: &str, published_port: u16) -> Result<SocketAddr, String> {
        if let Some(addr) = self.0.ready_upstream(service, published_port) {
            return Ok(addr);
        }
        let endpoints = self.0.endpoints(service).await.map_err(|e| e.to_string())?;
        endpoints
            .endpoints
            .iter()
            .find(|e| e.published.port == published_port)
            .and_then(|e| e.ip.map(|ip| SocketAddr::new(ip, e.container_port)))
            .ok_or_else(|| format!("{service}: no running container serves port {published_port}"))
    }
}

/// Counts established TCP connections inside a service's containers (their
/// own network namespaces see every path: proxied, DNAT'd, external).
pub(crate) struct ContainerConnections {
    /// Container PIDs and ports per service, refreshed by the refresher.
    known: Mutex<HashMap<String, Vec<(u32, u16)>>>,
}

impl ContainerConnections {
    pub(crate) fn new() -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Records where `service`'s containers listen (PID of each container's
    /// init process and the container port).
    pub(crate) fn set(&self, service: &str, listeners: Vec<(u32, u16)>) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(service.to_owned(), listeners);
        }
    }
}

impl super::ConnectionCounter for ContainerConnections {
    fn established(&self, service: &str) -> u32 {
        let known = self
            .known
            .lock()
            .map(|k| k.get(service).cloned().unwrap_or_default())
            .unwrap_or_default();
        known
            .iter()
            .map(|(pid, port)| crate::procnet::established(*pid, *port))
            .sum()
    }
}

/// Turns kernel wake events into wakes of the right state machine.
pub(super) async fn wake_loop(
    mut events: WakeEvents,
    kernel: KernelServices,
    services: Arc<Services>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "reading wake events failed; steered connections still wake services");
                return;
            }
        };
        let name = kernel.read().ok().and_then(|k| {
            k.iter()
                .find(|(_, s)| s.index == event.service)
                .map(|(n, _)| n.clone())
        });
        let Some(name) = name else { continue };
        if event.ignored_source {
            tracing::debug!(service = %name, source = %event.source, "wake from an ignored source");
            continue;
        }
        services.metrics.wake_event(&name);
        if let Some(entry) = services.get(&name) {
            let _ = entry.handle.try_send(Command::Wake {
                trigger: Trigger::Syn,
            });
        }
    }
}

/// Follows Docker's events: container starts/stops go to the state
/// machines, new networks make the refresher attach to their bridges.
pub(super) fn docker_events(
    runtime: Arc<DockerRuntime>,
    services: Arc<Services>,
    refresh: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let sink_services = Arc::clone(&services);
    let sink_refresh = Arc::clone(&refresh);
    let sink = Arc::new(move |name: &str, command: Command| {
        match &command {
            Command::DockerUnreachable => sink_services
                .docker_reachable
                .store(false, std::sync::atomic::Ordering::Relaxed),
            Command::DockerBack => sink_services
                .docker_reachable
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Command::ContainerEvent(_) => sink_refresh.notify_one(),
            _ => {}
        }
        if let Some(entry) = sink_services.get(name) {
            let _ = entry.handle.try_send(command);
        }
    });
    let networks = Arc::new(move |event: NetworkEvent| {
        if matches!(event, NetworkEvent::Created { .. }) {
            refresh.notify_one();
        }
    });
    spawn_event_watcher(runtime, sink, Some(networks), shutdown)
}

/// What the endpoint refresher reads and feeds.
pub(super) struct Refresher {
    pub runtime: Arc<DockerRuntime>,
    pub connections: Arc<ContainerConnections>,
    pub datapath: Arc<Mutex<Datapath>>,
    pub kernel: KernelServices,
    pub steering: Arc<KernelSteering>,
    pub services: Arc<Services>,
}

/// Keeps the kernel's view of each service current: where Docker publishes
/// its ports (what steering may match), container address and port
/// targets for the counters, and the classifier on every bridge a service
/// uses. Runs on every signal and every [`REFRESH_EVERY`]; also copies
/// counters into the metrics.
pub(super) async fn refresher(deps: Refresher, signal: Arc<Notify>, shutdown: CancellationToken) {
    let mut registered: HashMap<String, HashSet<Target>> = HashMap::new();
    let mut periodic = tokio::time::interval(REFRESH_EVERY);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = signal.notified() => {}
            _ = periodic.tick() => {}
            _ = sample.tick() => {
                sample_counters(&deps.datapath, &deps.kernel, &deps.services);
                continue;
            }
        }
        let snapshot: Vec<(String, u32)> = deps
            .kernel
            .read()
            .map(|k| k.iter().map(|(n, s)| (n.clone(), s.index)).collect())
            .unwrap_or_default();
        let mut reachable = true;
        for (name, index) in &snapshot {
            let endpoints = match deps.runtime.endpoints(name).await {
                Ok(endpoints) => endpoints,
                Err(e) => {
                    let unreachable = matches!(e, crate::docker::DockerError::Unreachable(_));
                    reachable &= !unreachable;
                    if matches!(e, crate::docker::DockerError::NotFound(_)) {
                        // No container: Docker publishes nothing for it.
                        deps.steering.set_bindings(name, Vec::new());
                        deps.services.set_problems(name, vec![e.to_string()]);
                    }
                    tracing::debug!(service = %name, error = %e, "endpoints not available");
                    continue;
                }
            };
            deps.steering.set_bindings(name, endpoints.bindings.clone());
            deps.services.set_problems(name, problems(&endpoints));
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
            let mut listeners = Vec::new();
            for endpoint in endpoints.endpoints.iter().filter(|e| e.ip.is_some()) {
                let pid = deps
                    .runtime
                    .client()
                    .inspect(&endpoint.container)
                    .await
                    .ok()
                    .and_then(|i| i.state.and_then(|s| s.pid))
                    .and_then(|pid| u32::try_from(pid).ok())
                    .filter(|pid| *pid > 0);
                if let Some(pid) = pid {
                    listeners.push((pid, endpoint.container_port));
                }
            }
            deps.connections.set(name, listeners);
            let Ok(mut datapath) = deps.datapath.lock() else {
                continue;
            };
            for bridge in &endpoints.bridges {
                if let Err(e) = datapath.attach_egress(bridge) {
                    tracing::warn!(bridge, error = %e, "cannot attach the classifier");
                }
            }
            let old = registered.remove(name).unwrap_or_default();
            for stale in old.difference(&targets) {
                let _ = datapath.remove_target(stale);
            }
            for target in targets.difference(&old) {
                if let Err(e) = datapath.add_target(target, *index) {
                    tracing::warn!(service = %name, %target, error = %e, "cannot count target");
                }
            }
            registered.insert(name.clone(), targets);
        }
        deps.services
            .docker_reachable
            .store(reachable, std::sync::atomic::Ordering::Relaxed);
        registered.retain(|name, _| snapshot.iter().any(|(n, _)| n == name));
    }
}

/// What keeps a service's ports from working as configured.
pub(super) fn problems(endpoints: &ServiceEndpoints) -> Vec<String> {
    endpoints
        .unpublished
        .iter()
        .map(|port| {
            format!("port {port}: no container of the service publishes it; it is not steered")
        })
        .collect()
}

fn sample_counters(datapath: &Mutex<Datapath>, kernel: &KernelServices, services: &Services) {
    let snapshot: Vec<(String, u32)> = kernel
        .read()
        .map(|k| k.iter().map(|(n, s)| (n.clone(), s.index)).collect())
        .unwrap_or_default();
    let Ok(datapath) = datapath.lock() else {
        return;
    };
    for (name, index) in snapshot {
        if let Ok(activity) = datapath.activity(index) {
            services
                .metrics
                .record_activity(&name, activity.packets, activity.bytes);
        }
    }
}

/// Queues failure events for the alert webhook's delivery task (bounded
/// retries, see [`crate::alerts`]), so the state machines never wait.
pub(super) struct Webhook {
    queue: tokio::sync::mpsc::Sender<String>,
}

impl Webhook {
    /// Spawns the (supervised) delivery task; the caller joins it at
    /// shutdown.
    pub(super) fn start(
        delivery: crate::alerts::Delivery,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> (Self, Supervised) {
        let (queue, rx) = tokio::sync::mpsc::channel(64);
        let task = supervisor.spawn("alert-webhook", delivery.run(rx, shutdown));
        (Self { queue }, task)
    }
}

impl FailureSink for Webhook {
    fn failed(&self, service: &str, reason: &str, crash_loop: bool) {
        let event = serde_json::json!({
            "event": if crash_loop { "crash_loop" } else { "start_failed" },
            "service": service,
            "reason": reason,
            "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        if self.queue.try_send(event.to_string()).is_err() {
            tracing::warn!(service, "alert queue full; dropping an alert");
        }
    }
}
