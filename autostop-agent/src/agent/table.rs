//! The live set of managed services and the operations that change it:
//! adding one (kernel index, steering entry, state machine, cold-start
//! route), removing one, applying a reload's difference, and shutting all
//! of them down.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    control::{ServiceEntry, Services},
    kernel::{KernelActivity, KernelService, KernelServices, KernelSteering},
    reload::{needs_restart, ConfigDiff},
    tasks::ContainerConnections,
};
use crate::{
    bpf::Datapath,
    coldstart::{Route, Routes},
    config::{Config, Protocol, ServiceConfig},
    docker::DockerRuntime,
    netfilter::WarmupRedirect,
    service::{spawn_service, Command, Ports, ServiceSettings},
    supervisor::{Supervised, Supervisor},
};

/// How long the actors (then the steering worker) get to end at shutdown.
const ACTOR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
        let ports = Ports {
            runtime: Arc::clone(&deps.runtime) as _,
            steering: Arc::new(steering),
            probe: Arc::new(probe),
            observer: Arc::clone(&deps.services) as _,
        };
        let worker = deps.supervisor.adopt("steering", worker);
        Self {
            deps,
            ports,
            steering_worker: Some(worker),
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

    pub fn connections(&self) -> Arc<ContainerConnections> {
        Arc::clone(&self.connections)
    }

    pub fn refresh_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.refresh)
    }

    /// Starts managing `service`: its state machine adopts the containers'
    /// real state (nothing is started or stopped because the agent started).
    pub fn add(&mut self, service: &ServiceConfig) {
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
        if let Ok(mut kernel) = self.kernel.write() {
            kernel.insert(
                service.name.clone(),
                KernelService {
                    index,
                    tcp_ports: tcp_ports.clone(),
                },
            );
        }
        // Steer at once, before the state machine exists: until it has
        // looked at Docker, a new connection is held (and answered once the
        // state is known) rather than refused. Its adoption un-steers a
        // running service; the cold-start listener waits briefly for the
        // route added below.
        if let Ok(mut datapath) = self.deps.datapath.lock() {
            for port in &tcp_ports {
                if let Err(e) = datapath.steer(*port, index) {
                    tracing::error!(service = %service.name, port, error = %e, "cannot steer port");
                }
            }
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
        let kernel = self.kernel.write().ok().and_then(|mut k| k.remove(name));
        if let (Some(kernel), Ok(mut datapath)) = (kernel, self.deps.datapath.lock()) {
            for port in kernel.tcp_ports {
                let _ = datapath.unsteer(port);
            }
        }
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
                self.add(service);
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
        for service in &changes.added {
            self.add(service);
        }
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
        // The actors held the last clones of the steering sender.
        drop(self.ports);
        if let Some(worker) = self.steering_worker.take() {
            Supervisor::join_all(vec![worker], ACTOR_GRACE).await;
        }
    }
}
