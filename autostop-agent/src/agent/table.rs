//! The service table: the one place services are added to and removed from
//! the agent. Adding one gives it a kernel index, tells the steering
//! worker, spawns its state machine and publishes its record; removing one
//! ends its state machine, puts its ports back on the stock path, drops its
//! record (and with it everything kept for it), forgets its metrics and
//! hands its index back once the kernel has cleared it. It also applies a
//! reload's difference and shuts every service down at the end.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{stream, StreamExt};
use ipnet::IpNet;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    counters::{addresses, problems, Counters},
    deps::{AgentDocker, IgnoreSources},
    ids::IdPool,
    port_guard::PortGuard,
    registry::{Registry, ServiceCells, ServiceRecord},
    reload::{needs_restart, ConfigDiff},
    state_owner::{StateHandle, StateUpdate},
    steering::KernelSteering,
};
use crate::{
    config::{Config, Protocol, ServiceConfig},
    docker::ServiceEndpoints,
    metrics::Metrics,
    service::{spawn_service, Command, Ports, ServiceSettings},
    supervisor::{Supervised, Supervisor},
};

/// How long the actors get to end at shutdown.
const ACTOR_GRACE: Duration = Duration::from_secs(2);
/// How many services' bindings are read from Docker at once when adding.
const RESOLVE_CONCURRENCY: usize = 8;
/// How long adding a service waits for Docker to say where its ports are
/// published before leaving it to the refresher.
const BINDINGS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the table works with.
pub(super) struct TableParts {
    pub registry: Registry,
    pub ids: IdPool,
    /// Shared by every state machine.
    pub ports: Ports,
    pub steering: KernelSteering,
    /// Checks bindings before they are steered.
    pub guard: PortGuard,
    pub counters: Counters,
    pub docker: Arc<dyn AgentDocker>,
    pub state: StateHandle,
    pub metrics: Arc<Metrics>,
    /// The kernel's ignored sources (owned here: reloads change them).
    pub sources: Box<dyn IgnoreSources>,
    /// The cold-start listener's copy of `agent.ignore_sources`.
    pub ignored: watch::Sender<Vec<IpNet>>,
    pub shutdown: CancellationToken,
    /// Watches the actors.
    pub supervisor: Supervisor,
    /// Reloads are told to the events stream.
    pub events: crate::events::EventSender,
}

/// The running services.
pub(super) struct ServiceTable {
    parts: TableParts,
    actors: HashMap<String, Supervised>,
    /// What the agent this one took over from knew of its services (see
    /// [`crate::service::ServiceSettings::resume`]); emptied once the first
    /// services are added.
    resuming: HashMap<String, crate::service::Resumed>,
}

impl ServiceTable {
    pub fn new(parts: TableParts) -> Self {
        Self {
            parts,
            actors: HashMap::new(),
            resuming: HashMap::new(),
        }
    }

    /// What the agent this one took over from knew of each service, for
    /// the services added next; empty to stop that.
    pub fn resume(
        &mut self,
        services: impl IntoIterator<Item = (String, crate::service::Resumed)>,
    ) {
        self.resuming = services.into_iter().collect();
    }

    /// Starts managing `services`, after reading where Docker publishes
    /// their ports (a few at a time), so each state machine's first
    /// steering decision applies to known bindings. Returns the names of
    /// those it could not add (no kernel index free).
    pub async fn add_all(&mut self, services: &[ServiceConfig]) -> Vec<String> {
        let docker = Arc::clone(&self.parts.docker);
        let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
        let mut found: HashMap<String, ServiceEndpoints> = stream::iter(names)
            .map(|name| {
                let docker = Arc::clone(&docker);
                async move {
                    let endpoints =
                        tokio::time::timeout(BINDINGS_TIMEOUT, docker.endpoints(&name)).await;
                    (name, endpoints)
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
        let mut refused = Vec::new();
        for service in services {
            if !self.add(service, found.remove(&service.name)).await {
                refused.push(service.name.clone());
            }
        }
        refused
    }

    /// Starts managing `service`: its state machine adopts the containers'
    /// real state (nothing is started or stopped because the agent
    /// started). `endpoints`, when known, says where Docker publishes its
    /// ports; otherwise nothing is steered until the refresher knows.
    async fn add(&mut self, service: &ServiceConfig, endpoints: Option<ServiceEndpoints>) -> bool {
        let id = match self.parts.ids.allocate().await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(service = %service.name, event = "not_managed", error = %e, "service not managed");
                return false;
            }
        };
        let cells = Arc::new(ServiceCells::default());
        // Nothing is steered until the refresher has read where Docker
        // publishes the ports; until the state machine has looked at
        // Docker, those bindings are steered, so a new connection is held
        // (and answered once the state is known) rather than refused. Its
        // adoption un-steers a running service; the cold-start listener
        // waits briefly for the route published below.
        self.parts.steering.add(&service.name, id);
        if let Some(endpoints) = endpoints {
            self.parts.guard.bindings(
                &service.name,
                endpoints.bindings.clone(),
                addresses(&endpoints),
            );
            cells.set_problems(&service.name, problems(&endpoints));
        }
        let settings = self.settings_for(service);
        let (handle, join) = spawn_service(
            service.name.clone(),
            settings,
            self.parts.ports.clone(),
            self.parts.shutdown.child_token(),
        );
        self.parts.registry.insert(ServiceRecord {
            id,
            config: service.clone(),
            handle,
            held: Arc::new(Semaphore::new(permits(service))),
            handover: Arc::new(Semaphore::new(crate::coldstart::HANDOVER_WINDOW)),
            cells,
        });
        self.parts
            .state
            .send(StateUpdate::Managed(service.name.clone()));
        let actor = self
            .parts
            .supervisor
            .adopt(format!("service:{}", service.name), join);
        self.actors.insert(service.name.clone(), actor);
        self.parts.counters.refresh_one(&service.name);
        let tcp_ports: Vec<u16> = service
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
            .collect();
        tracing::info!(service = %service.name, event = "managed", index = %id, ports = ?tcp_ports);
        if service.sleep == crate::config::Sleep::Hibernate {
            let free = crate::cgroup::swap_free().ok();
            if let Some(warning) = crate::commands::swap_warning(&[&service.name], free) {
                tracing::warn!(service = %service.name, event = "no_swap", "{warning}");
            }
        }
        true
    }

    /// The state machine's settings: the config, with the run-time idle
    /// timeout and the learned start estimate from the state file.
    fn settings_for(&self, service: &ServiceConfig) -> ServiceSettings {
        let memory = self.parts.state.service(&service.name);
        ServiceSettings {
            idle_timeout: memory
                .idle_timeout_override()
                .unwrap_or(service.idle_timeout),
            start_timeout: service.start_timeout,
            hold_while_connected: service.hold_while_connected,
            initial_start_estimate: memory.learned_start(),
            sleep: service.sleep,
            resume: self.resuming.get(&service.name).cloned(),
        }
    }

    /// Stops managing `name`: its actor ends (containers are left as they
    /// are), its ports go back to the stock datapath, its record and
    /// metrics go, and its kernel index is handed back once cleared.
    pub async fn remove(&mut self, name: &str) {
        let actor = self.actors.remove(name);
        if let Some(actor) = &actor {
            actor.retire();
        }
        let record = self.parts.registry.remove(name);
        self.parts.steering.remove(name);
        self.parts.guard.remove(name);
        if let Some(record) = &record {
            let _ = record.handle.send(Command::Shutdown).await;
        }
        if let Some(actor) = actor {
            actor.join().await;
        }
        if let Some(record) = record {
            let acks = vec![
                self.parts.steering.clear(record.id),
                self.parts.counters.clear(record.id),
            ];
            self.parts.ids.release(record.id, acks);
        }
        self.parts.metrics.remove_service(name);
        self.parts
            .state
            .send(StateUpdate::Departed(name.to_owned()));
        tracing::info!(service = name, event = "unmanaged");
    }

    /// Applies a reload: only the services that changed are touched.
    /// Returns the names of the services it could not add.
    pub async fn apply(&mut self, old: &Config, new: &Config, changes: &ConfigDiff) -> Vec<String> {
        let mut refused = Vec::new();
        for name in &changes.removed {
            self.remove(name).await;
        }
        for service in &changes.changed {
            let restart = old
                .service(&service.name)
                .is_none_or(|before| needs_restart(before, service));
            if restart {
                self.remove(&service.name).await;
                refused.extend(self.add_all(std::slice::from_ref(service)).await);
                continue;
            }
            self.reconfigure(old, service).await;
        }
        refused.extend(self.add_all(&changes.added).await);
        if changes.agent_changed {
            if old.agent.ignore_sources != new.agent.ignore_sources {
                if let Err(e) = self.parts.sources.set(&new.agent.ignore_sources) {
                    tracing::error!(error = %e, "cannot update agent.ignore_sources");
                }
                self.parts
                    .ignored
                    .send_replace(new.agent.ignore_sources.clone());
            }
            let mut rest_old = old.agent.clone();
            rest_old.ignore_sources = new.agent.ignore_sources.clone();
            if rest_old != new.agent {
                tracing::warn!(
                    "changes to [agent] other than ignore_sources take effect after a restart"
                );
            }
        }
        self.parts.events.reload(
            changes.added.len(),
            changes.removed.len(),
            changes.changed.len(),
        );
        tracing::info!(
            event = "reloaded",
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len()
        );
        refused
    }

    /// New settings for a running service whose identity did not change.
    async fn reconfigure(&mut self, old: &Config, service: &ServiceConfig) {
        let Some(record) = self.parts.registry.get(&service.name).cloned() else {
            return;
        };
        let mut settings = self.settings_for(service);
        if old.service(&service.name).map(|o| o.idle_timeout) != Some(service.idle_timeout) {
            // Editing the file's idle_timeout supersedes a run-time one.
            self.parts.state.send(StateUpdate::IdleTimeout {
                service: service.name.clone(),
                seconds: None,
                saved: None,
            });
            settings.idle_timeout = service.idle_timeout;
        }
        let _ = record.handle.send(Command::ConfigChanged(settings)).await;
        let held = if record.config.max_held_connections == service.max_held_connections {
            Arc::clone(&record.held)
        } else {
            Arc::new(Semaphore::new(permits(service)))
        };
        self.parts.registry.insert(ServiceRecord {
            id: record.id,
            config: service.clone(),
            handle: record.handle.clone(),
            held,
            handover: Arc::clone(&record.handover),
            cells: Arc::clone(&record.cells),
        });
        tracing::info!(service = %service.name, event = "reconfigured");
    }

    /// Ends every actor (without touching containers); the steering
    /// worker ends once the last sender is gone (the caller drops the
    /// refresher's first).
    pub async fn shutdown(self) {
        for record in self.parts.registry.records() {
            let _ = record.handle.send(Command::Shutdown).await;
        }
        let actors: Vec<Supervised> = self.actors.into_values().collect();
        Supervisor::join_all(actors, ACTOR_GRACE).await;
    }
}

/// The held-connection permits of `service`.
fn permits(service: &ServiceConfig) -> usize {
    usize::try_from(service.max_held_connections).unwrap_or(1024)
}
