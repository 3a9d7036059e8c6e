//! [`DockerRuntime`]: the [`ContainerRuntime`] of the agent over the Docker
//! API. Containers are resolved afresh at every call; start follows the
//! dependency order, stop the reverse; readiness (`readiness.rs`) is
//! health plus a TCP connect to each service port at the container's own
//! address. Each start's progress is recorded for the wait page.

use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rtnetlink::Handle;
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use super::client::DockerClient;
use super::endpoints::{self, bridge_name, ServiceEndpoints};
use super::limits::{LimitJournal, Reclaims};
use super::order::DependsCondition;
use super::project::ProjectId;
use super::readiness::member_keys;
use super::ready::{seen, wait_dependency};
use super::resolve::{resolve, Member, Resolved, RunState};
use super::DockerError;
use crate::config::{ServiceConfig, Target};
use crate::progress::{Book, Phase, Progress};
use crate::service::{ContainerRuntime, Hibernation, Observed, RuntimeError};

/// How often the connect phase re-inspects containers to notice an exit.
pub(super) const RECHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Docker-backed container runtime for the configured services.
#[derive(Debug)]
pub struct DockerRuntime {
    /// Shared API client.
    pub(super) client: DockerClient,
    /// Service configs by name (replaced on config reload).
    services: RwLock<HashMap<String, ServiceConfig>>,
    /// Pin a PERMANENT neighbour entry while probing (see `neigh`).
    pub(super) pin_neighbours: bool,
    /// Netlink handle, opened on first use (`None` if that failed).
    pub(super) netlink: OnceCell<Option<Handle>>,
    /// Network id/name → bridge interface (networks are immutable).
    bridges: Mutex<HashMap<String, String>>,
    /// When the last `start` of each service began (judges exits).
    pub(super) started: Mutex<HashMap<String, SystemTime>>,
    /// The containers the last `start` resolved, handed to the readiness
    /// wait that follows so it does not list and inspect them all again.
    pub(super) resolved_at_start: Mutex<HashMap<String, Vec<Member>>>,
    /// Published TCP port → container address:port of each service, as the
    /// last successful readiness wait probed them. Held connections are
    /// forwarded there the moment the service is ready, without a Docker
    /// call each (200 held connections asked dockerd 200 times, on the
    /// first response's critical path). Cleared by `start` and `stop`.
    pub(super) ready_upstreams: Mutex<HashMap<String, HashMap<u16, SocketAddr>>>,
    /// Each service's containers' start progress (the wait page's steps):
    /// begun by `start`, kept after readiness or failure, cleared by `stop`.
    pub(super) progress: Book,
    /// Where hibernation records the memory limits it changes (the state
    /// file's owner; set once by the agent). Without it, no reclaim.
    limit_journal: OnceLock<Arc<dyn LimitJournal>>,
    /// The memory reclaims under way, by service.
    pub(super) reclaims: Reclaims,
    /// The compose project each compose service's last resolution chose:
    /// Docker events of containers outside it are not the service's.
    projects: Mutex<HashMap<String, ProjectId>>,
}

/// A container's own stop grace period (`StopTimeout`), if it sets one.
fn stop_grace(inspect: &bollard::models::ContainerInspectResponse) -> Option<std::time::Duration> {
    let seconds = inspect.config.as_ref()?.stop_timeout?;
    u64::try_from(seconds)
        .ok()
        .map(std::time::Duration::from_secs)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

/// Prefixes an error with the service (and container) it concerns.
pub(super) fn ctx(service: &str, container: &str, e: DockerError) -> DockerError {
    match e {
        DockerError::NotFound(m) => {
            DockerError::NotFound(format!("service {service}: container {container}: {m}"))
        }
        DockerError::Api(m) => {
            DockerError::Api(format!("service {service}: container {container}: {m}"))
        }
        other => other,
    }
}

impl DockerRuntime {
    /// Runtime for `services`, pinning neighbour entries during readiness.
    pub fn new(client: DockerClient, services: &[ServiceConfig]) -> Self {
        let rt = Self {
            client,
            services: RwLock::default(),
            pin_neighbours: true,
            netlink: OnceCell::new(),
            bridges: Mutex::default(),
            started: Mutex::default(),
            resolved_at_start: Mutex::default(),
            ready_upstreams: Mutex::default(),
            progress: Book::default(),
            limit_journal: OnceLock::new(),
            reclaims: Reclaims::default(),
            projects: Mutex::default(),
        };
        rt.set_services(services);
        rt
    }

    /// Turns the neighbour-entry fast path on or off (off: plain ARP).
    pub fn with_neighbour_pinning(mut self, on: bool) -> Self {
        self.pin_neighbours = on;
        self
    }

    /// Replaces the service set (config reload); what was cached for
    /// services no longer in it goes.
    pub fn set_services(&self, services: &[ServiceConfig]) {
        let map: HashMap<String, ServiceConfig> = services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        lock(&self.started).retain(|name, _| map.contains_key(name));
        lock(&self.resolved_at_start).retain(|name, _| map.contains_key(name));
        lock(&self.ready_upstreams).retain(|name, _| map.contains_key(name));
        lock(&self.projects).retain(|name, _| map.contains_key(name));
        self.progress.retain(|name| map.contains_key(name));
        self.reclaims.retain(|name| map.contains_key(name));
        *self.services.write() = map;
    }

    /// Where hibernation records the memory limits it changes, before it
    /// changes them (the agent's state file). Set once; later calls are
    /// ignored. Until it is set, hibernation only pauses.
    pub fn set_limit_journal(&self, journal: Arc<dyn LimitJournal>) {
        let _ = self.limit_journal.set(journal);
    }

    pub(super) fn limit_journal(&self) -> Option<Arc<dyn LimitJournal>> {
        self.limit_journal.get().cloned()
    }

    /// At shutdown: cancels the memory reclaims under way and waits, up to
    /// `wait`, until their threads have put the limits back.
    pub async fn settle_reclaims(&self, wait: Duration) {
        self.reclaims.settle_all(wait).await;
    }

    /// Snapshot of the configured services.
    pub fn services(&self) -> Vec<ServiceConfig> {
        let map = self.services.read();
        map.values().cloned().collect()
    }

    /// The compose project each compose service was last resolved to.
    pub fn projects(&self) -> HashMap<String, ProjectId> {
        lock(&self.projects).clone()
    }

    /// Resolves `svc`'s containers (see [`resolve`]) and remembers the
    /// compose project chosen.
    pub(super) async fn resolve_service(
        &self,
        svc: &ServiceConfig,
    ) -> Result<Resolved, DockerError> {
        let last = lock(&self.projects).get(&svc.name).map(|p| p.name.clone());
        let r = resolve(&self.client, svc, last.as_deref()).await?;
        if let Some(project) = &r.project {
            lock(&self.projects).insert(svc.name.clone(), project.clone());
        }
        Ok(r)
    }

    /// The shared client (e.g. for [`spawn_event_watcher`](super::spawn_event_watcher)).
    pub fn client(&self) -> &DockerClient {
        &self.client
    }

    pub(super) fn config(&self, service: &str) -> Result<ServiceConfig, DockerError> {
        let map = self.services.read();
        map.get(service)
            .cloned()
            .ok_or_else(|| DockerError::NotFound(format!("service {service} is not configured")))
    }

    /// Bridge interface of a network id (or name), cached; `None` for
    /// non-bridge networks or when Docker cannot tell.
    pub async fn bridge(&self, net: &str) -> Option<String> {
        if let Some(b) = lock(&self.bridges).get(net) {
            return Some(b.clone());
        }
        let inspect = self.client.network(net).await.ok()?;
        let name = bridge_name(&inspect)?;
        let mut cache = lock(&self.bridges);
        cache.insert(net.to_string(), name.clone());
        if let Some(id) = inspect.id {
            cache.insert(id, name.clone());
        }
        Some(name)
    }

    /// Container addresses/ports behind each published port of `service`,
    /// the host bindings Docker publishes, and the bridges of its
    /// networks, for the datapath. A configured port no container
    /// publishes is listed in `unpublished`.
    pub async fn endpoints(&self, service: &str) -> Result<ServiceEndpoints, DockerError> {
        let svc = self.config(service)?;
        let r = self.resolve_service(&svc).await?;
        let mut bridges = HashMap::new();
        for m in &r.members {
            for id in endpoints::network_ids(&m.inspect) {
                if let Some(b) = self.bridge(&id).await {
                    bridges.insert(id, b);
                }
            }
        }
        let mut built = endpoints::build(&svc.ports, &r.members, &bridges);
        built.notes = r.notes;
        Ok(built)
    }

    /// Where the published TCP port `port` of `service` was found ready:
    /// the container address the readiness probe connected to. `None`
    /// unless the service's last readiness wait succeeded since its last
    /// start or stop.
    pub fn ready_upstream(&self, service: &str, port: u16) -> Option<SocketAddr> {
        lock(&self.ready_upstreams)
            .get(service)?
            .get(&port)
            .copied()
    }

    /// The start progress of `service`'s containers (see [`Book`]).
    pub fn progress(&self, service: &str) -> Progress {
        self.progress.get(service)
    }

    async fn start_inner(&self, service: &str) -> Result<(), DockerError> {
        let svc = self.config(service)?;
        lock(&self.ready_upstreams).remove(service);
        let began = SystemTime::now();
        lock(&self.started).insert(service.to_string(), began);
        if let Target::Containers(names) = &svc.target {
            let keys = names.iter().map(|n| vec![n.clone()]).collect();
            self.progress.begin(service, keys);
            // Named containers have no dependencies: start them by name, in
            // order, without inspecting first (a stopped container's inspect
            // has no address to reuse, and readiness inspects them again):
            // request -> start call went from 2-5 ms to under 1 ms in `cargo
            // xtask bench cold`. Docker answers a start of a running one
            // with "not modified", a success. The log line comes right
            // before the call: that bench reads its time as the start of
            // the container's own start.
            for name in names {
                self.progress.set(service, name, Phase::Starting);
                info!(service, container = %name, event = "container_start");
                self.client
                    .start(name, svc.start_timeout)
                    .await
                    .map_err(|e| ctx(service, name, e))?;
            }
            return Ok(());
        }
        let Resolved {
            mut members, deps, ..
        } = self.resolve_service(&svc).await?;
        self.progress.begin(service, member_keys(&members));
        let observe = |m: &Member| self.progress.observe(service, &m.id, seen(m, began));
        for i in 0..members.len() {
            let own = members[i].compose_service.clone();
            for dep in own.and_then(|s| deps.get(&s)).into_iter().flatten() {
                if dep.condition != DependsCondition::Started {
                    wait_dependency(&self.client, &mut members, dep, &observe).await?;
                }
            }
            let m = &members[i];
            if matches!(m.run_state(), RunState::Up | RunState::Unhealthy) {
                observe(m);
                continue;
            }
            self.progress.set(service, &m.id, Phase::Starting);
            info!(service, container = %m.name, event = "container_start");
            self.client
                .start(&m.id, svc.start_timeout)
                .await
                .map_err(|e| ctx(service, &m.name, e))?;
        }
        lock(&self.resolved_at_start).insert(service.to_string(), members);
        Ok(())
    }

    async fn stop_inner(&self, service: &str) -> Result<(), DockerError> {
        let svc = self.config(service)?;
        self.reclaims.settle(service).await;
        let r = self.resolve_service(&svc).await?;
        // A hibernated container's limits go back before it is unpaused to
        // take the stop signal. If they cannot, it is stopped anyway (a
        // stop ends its cgroup, lowered limit and all).
        if let Err(e) = self.undo_limits(service, &r.members).await {
            warn!(service, error = %e, "stopping it anyway");
        }
        for m in r.members.iter().rev() {
            let running = m.inspect.state.as_ref().and_then(|s| s.running) == Some(true);
            if super::hibernate::is_paused(m) {
                debug!(service, container = %m.name, event = "container_unpause");
                self.client
                    .unpause(&m.id)
                    .await
                    .map_err(|e| ctx(service, &m.name, e))?;
            }
            if running {
                debug!(service, container = %m.name, event = "container_stop");
                self.client
                    .stop(&m.id, stop_grace(&m.inspect))
                    .await
                    .map_err(|e| ctx(service, &m.name, e))?;
            }
        }
        lock(&self.started).remove(service);
        lock(&self.resolved_at_start).remove(service);
        lock(&self.ready_upstreams).remove(service);
        self.progress.clear(service);
        Ok(())
    }

    async fn observe_inner(&self, service: &str) -> Result<Observed, DockerError> {
        let svc = self.config(service)?;
        let members = self.resolve_service(&svc).await?.members;
        let (mut running, mut completed, mut paused) = (0usize, 0usize, 0usize);
        for m in &members {
            if super::hibernate::is_paused(m) {
                paused += 1;
                continue;
            }
            match m.run_state() {
                RunState::Up | RunState::Unhealthy => running += 1,
                RunState::Completed => completed += 1,
                _ => {}
            }
        }
        // An exited-0 container next to running ones is a finished one-shot.
        Ok(
            if paused > 0 && running + paused + completed == members.len() {
                Observed::Paused
            } else if running + paused == 0 {
                Observed::AllStopped
            } else if running + completed == members.len() {
                Observed::AllRunning
            } else {
                Observed::Partial
            },
        )
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    /// A failed start marks the step it was on in the progress.
    async fn start(&self, service: &str) -> Result<(), RuntimeError> {
        let r = self.start_inner(service).await;
        if r.is_err() {
            self.progress.fail(service);
        }
        Ok(r?)
    }

    async fn stop(&self, service: &str) -> Result<(), RuntimeError> {
        Ok(self.stop_inner(service).await?)
    }

    async fn wait_ready(&self, service: &str) -> Result<(), RuntimeError> {
        let r = self.wait_ready_inner(service).await;
        if r.is_err() {
            self.progress.fail(service);
        }
        Ok(r?)
    }

    async fn observe(&self, service: &str) -> Result<Observed, RuntimeError> {
        Ok(self.observe_inner(service).await?)
    }

    async fn hibernate(&self, service: &str) -> Result<Hibernation, RuntimeError> {
        Ok(self.hibernate_inner(service).await?)
    }

    async fn thaw(&self, service: &str) -> Result<(), RuntimeError> {
        Ok(self.thaw_inner(service).await?)
    }
}
