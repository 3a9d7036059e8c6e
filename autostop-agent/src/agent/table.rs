//! The live set of managed services and the operations that change it:
//! adding one (kernel index, steering entry, state machine, cold-start
//! route), removing one, applying a reload's difference, and shutting all
//! of them down.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::{stream, StreamExt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    control::{ServiceEntry, Services},
    kernel::{KernelActivity, KernelServices},
    reload::{needs_restart, ConfigDiff},
    steering::KernelSteering,
    tasks::ContainerConnections,
};
use crate::{
    bpf::Datapath,
    coldstart::{Route, Routes},
    config::{Config, Protocol, ServiceConfig},
    docker::{DockerRuntime, ServiceEndpoints},
    netfilter::WarmupRedirect,
    service::{spawn_service, Command, Ports, ServiceSettings},
    supervisor::{Supervised, Supervisor},
};

/// How long the actors (then the steering worker) get to end at shutdown.
const ACTOR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How many services' bindings are read from Docker at once when adding.
const RESOLVE_CONCURRENCY: usize = 8;
/// How long adding a service waits for Docker to say where its ports are
/// published before leaving it to the refresher.
const BINDINGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the table needs to build services.
pub(super) struct Deps {
    pub datapath: Arc<Mutex<Datapath>>,
    /// The cold-start listener's copy of `agent.ignore_sources`.
    pub ignored_sources: crate::coldstart::IgnoredSources,
    pub warmup: Arc<WarmupRedirect>,
    pub runtime: Arc<DockerRuntime>,
    pub services: Arc<Services>,
    pub shutdown: CancellationToken,
    /// Watches the actors and the steering worker.
    pub supervisor: Supervisor,
}

/// The running services.
pub(super) struct ServiceTable {
    deps: Deps,
    ports: Ports,
    steering_worker: Option<Supervised>,
    /// Steering of every service (also fed the published bindings by the
    /// endpoint refresher).
    steering: Arc<KernelSteering>,
    kernel: KernelServices,
    routes: Routes,
    actors: HashMap<String, Supervised>,
    /// Kernel indexes by name; never reused during the agent's life, so a
    /// removed service's counters cannot leak into a new one.
    indexes: HashMap<String, u32>,
    next_index: u32,
    /// Wakes the endpoint refresher (service ready, container events).
    refresh: Arc<Notify>,
    /// Where each service's containers listen, for open-connection counts.
    connections: Arc<ContainerConnections>,
}

impl ServiceTable {
    pub fn new(deps: Deps) -> Self {
        let kernel = KernelServices::default();
        let (steering, worker) = KernelSteering::new(
            Arc::clone(&deps.datapath),
            Arc::clone(&kernel),
            Arc::clone(&deps.warmup),
        );
        let connections = Arc::new(ContainerConnections::new());
        let probe = KernelActivity::new(
            Arc::clone(&deps.datapath),
            Arc::clone(&kernel),
            Arc::clone(&connections) as _,
        );
        let steering = Arc::new(steering);
        let ports = Ports {
            runtime: Arc::clone(&deps.runtime) as _,
            steering: Arc::clone(&steering) as _,
            probe: Arc::new(probe),
            observer: Arc::clone(&deps.services) as _,
        };
        let worker = deps.supervisor.adopt("steering", worker);
        Self {
            deps,
            ports,
            steering_worker: Some(worker),
            steering,
            kernel,
            routes: Routes::default(),
            actors: HashMap::new(),
            indexes: HashMap::new(),
            next_index: 0,
            refresh: Arc::new(Notify::new()),
            connections,
        }
    }

    pub fn routes(&self) -> Routes {
        Arc::clone(&self.routes)
    }

    pub fn kernel_services(&self) -> KernelServices {
        Arc::clone(&self.kernel)
    }

    pub fn steering(&self) -> Arc<KernelSteering> {
        Arc::clone(&self.steering)
    }

    pub fn connections(&self) -> Arc<ContainerConnections> {
        Arc::clone(&self.connections)
    }

    pub fn refresh_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.refresh)
    }

    /// Starts managing `services`, after reading where Docker publishes
    /// their ports (a few at a time), so each state machine's first
    /// steering decision applies to known bindings.
    pub async fn add_all(&mut self, services: &[ServiceConfig]) {
        let runtime = Arc::clone(&self.deps.runtime);
        let mut found: HashMap<String, ServiceEndpoints> = stream::iter(services)
            .map(|service| {
                let runtime = Arc::clone(&runtime);
                async move {
                    let endpoints =
                        tokio::time::timeout(BINDINGS_TIMEOUT, runtime.endpoints(&service.name))
                            .await;
                    (service.name.clone(), endpoints)
                }
            })
            .buffer_unordered(RESOLVE_CONCURRENCY)
            .filter_map(|(name, endpoints)| async move {
                match endpoints {
                    Ok(Ok(endpoints)) => Some((name, endpoints)),
                    Ok(Err(e)) => {
                        tracing::debug!(service = %name, error = %e, "bindings not known yet");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(service = %name, "Docker did not say where the ports are published in time; the refresher will");
                        None
                    }
                }
            })
            .collect()
            .await;
        for service in services {
            self.add(service, found.remove(&service.name));
        }
    }

    /// Starts managing `service`: its state machine adopts the containers'
    /// real state (nothing is started or stopped because the agent
    /// started). `endpoints`, when known, says where Docker publishes its
    /// ports; otherwise nothing is steered until the refresher knows.
    fn add(&mut self, service: &ServiceConfig, endpoints: Option<ServiceEndpoints>) {
        let index = match self.indexes.get(&service.name) {
            Some(index) => *index,
            None => {
                let index = self.next_index;
                self.next_index += 1;
                self.indexes.insert(service.name.clone(), index);
                index
            }
        };
        let tcp_ports: Vec<u16> = service
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
            .collect();
        // Nothing is steered until the refresher has read where Docker
        // publishes the ports; until the state machine has looked at
        // Docker, those bindings are steered, so a new connection is held
        // (and answered once the state is known) rather than refused. Its
        // adoption un-steers a running service; the cold-start listener
        // waits briefly for the route added below.
        self.steering.add(&service.name, index);
        if let Some(endpoints) = endpoints {
            self.steering
                .set_bindings(&service.name, endpoints.bindings.clone());
            self.deps
                .services
                .set_problems(&service.name, super::tasks::problems(&endpoints));
        }
        let settings = self.settings_for(service);
        let (handle, join) = spawn_service(
            service.name.clone(),
            settings,
            self.ports.clone(),
            self.deps.shutdown.child_token(),
        );
        let held = Arc::new(Semaphore::new(
            usize::try_from(service.max_held_connections).unwrap_or(1024),
        ));
        let handover = Arc::new(Semaphore::new(crate::coldstart::HANDOVER_WINDOW));
        if let Ok(mut routes) = self.routes.write() {
            for port in &tcp_ports {
                routes.insert(
                    *port,
                    Route {
                        service: service.name.clone(),
                        mode: service.mode,
                        theme: service.theme.clone(),
                        handle: handle.clone(),
                        start_timeout: service.start_timeout,
                        held: Arc::clone(&held),
                        handover: Arc::clone(&handover),
                    },
                );
            }
        }
        self.deps.services.insert(ServiceEntry {
            config: service.clone(),
            handle,
            held,
        });
        let actor = self
            .deps
            .supervisor
            .adopt(format!("service:{}", service.name), join);
        self.actors.insert(service.name.clone(), actor);
        self.refresh.notify_one();
        tracing::info!(service = %service.name, event = "managed", index, ports = ?tcp_ports);
    }

    /// The state machine's settings: the config, with the run-time idle
    /// timeout and the learned start estimate from the state directory.
    fn settings_for(&self, service: &ServiceConfig) -> ServiceSettings {
        let memory = self
            .deps
            .services
            .state()
            .lock()
            .map(|s| s.service(&service.name))
            .unwrap_or_default();
        ServiceSettings {
            idle_timeout: memory
                .idle_timeout_override()
                .unwrap_or(service.idle_timeout),
            start_timeout: service.start_timeout,
            hold_while_connected: service.hold_while_connected,
            initial_start_estimate: memory.learned_start(),
        }
    }

    fn forget_idle_override(&self, name: &str) {
        if let Ok(mut state) = self.deps.services.state().lock() {
            if state.service(name).idle_timeout_override_s.is_some() {
                state.update(name, |m| m.idle_timeout_override_s = None);
                if let Err(e) = state.save() {
                    tracing::warn!(service = name, error = %e, "cannot persist state");
                }
            }
        }
    }

    /// Stops managing `name`: its actor ends (containers are left as they
    /// are) and its ports go back to the stock datapath.
    pub async fn remove(&mut self, name: &str) {
        let actor = self.actors.remove(name);
        if let Some(actor) = &actor {
            actor.retire();
        }
        let entry = self.deps.services.remove(name);
        if let Ok(mut routes) = self.routes.write() {
            routes.retain(|_, route| route.service != name);
        }
        self.steering.remove(name);
        if let Some(entry) = entry {
            let _ = entry.handle.send(Command::Shutdown).await;
        }
        if let Some(actor) = actor {
            actor.join().await;
        }
        tracing::info!(service = name, event = "unmanaged");
    }

    /// Applies a reload: only the services that changed are touched.
    pub async fn apply(&mut self, old: &Config, new: &Config, changes: &ConfigDiff) {
        for name in &changes.removed {
            self.remove(name).await;
        }
        for service in &changes.changed {
            let restart = old
                .service(&service.name)
                .is_none_or(|before| needs_restart(before, service));
            if restart {
                self.remove(&service.name).await;
                self.add_all(std::slice::from_ref(service)).await;
                continue;
            }
            let Some(entry) = self.deps.services.get(&service.name) else {
                continue;
            };
            if old.service(&service.name).map(|o| o.idle_timeout) != Some(service.idle_timeout) {
                // Editing the file's idle_timeout supersedes a run-time one.
                self.forget_idle_override(&service.name);
            }
            let settings = self.settings_for(service);
            let _ = entry.handle.send(Command::ConfigChanged(settings)).await;
            let held = if entry.config.max_held_connections == service.max_held_connections {
                Arc::clone(&entry.held)
            } else {
                Arc::new(Semaphore::new(
                    usize::try_from(service.max_held_connections).unwrap_or(1024),
                ))
            };
            if let Ok(mut routes) = self.routes.write() {
                for route in routes.values_mut().filter(|r| r.service == service.name) {
                    route.mode = service.mode;
                    route.theme = service.theme.clone();
                    route.start_timeout = service.start_timeout;
                    route.held = Arc::clone(&held);
                }
            }
            self.deps.services.insert(ServiceEntry {
                config: service.clone(),
                handle: entry.handle,
                held,
            });
            tracing::info!(service = %service.name, event = "reconfigured");
        }
        self.add_all(&changes.added).await;
        if changes.agent_changed {
            if old.agent.ignore_sources != new.agent.ignore_sources {
                if let Ok(mut datapath) = self.deps.datapath.lock() {
                    if let Err(e) = datapath.set_ignored_sources(&new.agent.ignore_sources) {
                        tracing::error!(error = %e, "cannot update agent.ignore_sources");
                    }
                }
                if let Ok(mut ignored) = self.deps.ignored_sources.write() {
                    ignored.clone_from(&new.agent.ignore_sources);
                }
            }
            let mut rest_old = old.agent.clone();
            rest_old.ignore_sources = new.agent.ignore_sources.clone();
            if rest_old != new.agent {
                tracing::warn!(
                    "changes to [agent] other than ignore_sources take effect after a restart"
                );
            }
        }
        tracing::info!(
            event = "reloaded",
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len()
        );
    }

    /// Ends every actor (without touching containers), then the steering
    /// worker.
    pub async fn shutdown(mut self) {
        for entry in self.deps.services.all() {
            let _ = entry.handle.send(Command::Shutdown).await;
        }
        let actors: Vec<Supervised> = self.actors.drain().map(|(_, actor)| actor).collect();
        Supervisor::join_all(actors, ACTOR_GRACE).await;
        // The actors and the table held the last clones of the steering
        // sender (the refresher, which holds one too, has ended).
        drop(self.ports);
        drop(self.steering);
        if let Some(worker) = self.steering_worker.take() {
            Supervisor::join_all(vec![worker], ACTOR_GRACE).await;
        }
    }
}
