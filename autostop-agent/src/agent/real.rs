//! The real dependencies of `autostop run`: the kernel programs loaded and
//! cut into their parts, the steered listeners registered, the warm-up
//! table installed, and Docker over its socket. [`build`] makes them from
//! the configuration file; the traits of [`super::deps`] are implemented
//! here for the real types.

use std::{net::SocketAddr, sync::Arc};

use async_trait::async_trait;
use autostop_common::{Activity, MAX_SERVICES};
use ipnet::IpNet;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    deps::{
        upstream_of, ActivityCounters, AgentDeps, AgentDocker, Counting, EventSinks, HostSockets,
        IgnoreSources, KernelDeps, SteerMaps, WakeSource, Warmup,
    },
    handing,
    labels::{self, LabelCache, LabelScan, LabelScanError},
    memory::MemorySource,
    takeover, AgentError, AgentOptions,
};
use crate::{
    alerts::Delivery,
    api,
    bpf::{
        ActivityReader, BpfError, Classifier, Datapath, SourceFilter, SteeringMaps, Target,
        WakeEvent, WakeEvents,
    },
    coldstart::Upstreams,
    config::{Config, ServiceConfig},
    docker::{
        spawn_watcher, DockerClient, DockerError, DockerRuntime, LimitJournal, MemoryUse,
        ServiceEndpoints,
    },
    netfilter::{NetfilterError, WarmupRedirect},
    published::HostPort,
    service::{ContainerRuntime, Hibernation, Observed, RuntimeError},
    state::StateStore,
};

/// Gives the heap pages freed so far back to the kernel. Loading the
/// kernel programs parses the kernel's BTF (about 5 MB of it, some 30 MB of
/// short-lived allocations); glibc keeps those pages once freed, which was
/// more than half of the settled agent's RSS (27.5 MiB before, measured by
/// `cargo xtask bench agent`).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only returns unused pages of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads the config and builds every real dependency from it. Everything
/// that can refuse the start (config, token, CA file, sockets, state
/// directory, kernel, netfilter) is checked here, before a service is
/// touched.
pub(super) async fn build(options: &AgentOptions) -> Result<AgentDeps, AgentError> {
    let config = Config::load_with_own_themes(&options.config_path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    crate::test_hooks::announce();
    let token = api::load_token(
        config.agent.status_listen,
        config.agent.token_file.as_deref(),
    )?;
    // Checked before anything is attached: a bad CA file refuses the start.
    let alerts = config
        .agent
        .alert_webhook
        .as_deref()
        .map(|url| Delivery::new(url, config.agent.alert_ca_file.as_deref()))
        .transpose()?;
    // Taking over: the running agent's sockets, before anything changes.
    let taking = if options.takeover {
        Some(takeover::offered(&config.agent.state_dir).await?)
    } else {
        None
    };
    let api_listener = takeover::api_listener(&config, taking.as_ref()).await?;

    // Kernel side: classifier, sk_lookup, listeners, wake events. Taking
    // over, they attach beside the running agent's and steer to the same
    // inherited sockets.
    let mut datapath = Datapath::load()?;
    release_freed_heap();
    datapath.attach_steering()?;
    datapath.set_ignored_sources(&config.agent.ignore_sources)?;
    let (sockets, warmup_options) = takeover::steered(taking.as_ref())?;
    for socket in &sockets {
        datapath.register_listener(socket)?;
    }
    let parts = datapath.into_parts()?;
    let nft_table = warmup_options.table.clone();
    let warmup = WarmupRedirect::install(warmup_options).await?;
    let control_listeners = takeover::offered_later(&sockets, &api_listener)?;
    let steered = takeover::on_runtime(sockets)?;
    let taken = match taking {
        Some(taking) => Some(takeover::stop_old(taking).await?),
        None => None,
    };
    let (mut state, notes) = StateStore::open(&config.agent.state_dir)?;
    // In the state directory, which the store made (0700).
    let control = takeover::control(&config.agent.state_dir, control_listeners, nft_table);
    for note in notes {
        tracing::warn!("{note}");
    }
    // Memory limits an earlier agent recorded and did not put back (it
    // was killed mid-hibernation): back before any service is looked at,
    // so no container is adopted, thawed or unpaused under them.
    let state = tokio::task::spawn_blocking(move || {
        let left = crate::docker::undo_at_start(&mut state);
        (state, left)
    })
    .await
    .map(|(state, left)| {
        if left > 0 {
            tracing::warn!(
                records = left,
                "memory limits left to restore before their containers are unpaused"
            );
        }
        state
    })
    .map_err(|e| AgentError::Fatal(format!("restoring recorded memory limits: {e}")))?;

    // Lazy: the agent starts (and steers) even while Docker is down.
    let client = DockerClient::lazy(&config.agent.docker_socket.to_string_lossy());
    let runtime = Arc::new(DockerRuntime::new(client.clone(), &config.services));
    Ok(AgentDeps {
        config_path: options.config_path.clone(),
        config,
        api_listener,
        token,
        alerts,
        state,
        steered,
        kernel: KernelDeps {
            counting: Box::new(parts.classifier),
            activity: Arc::new(parts.activity),
            steering: Box::new(parts.steering),
            sources: Box::new(parts.sources),
            wake: Box::new(parts.wake_events),
            log: parts.kernel_log,
            capacity: MAX_SERVICES,
        },
        warmup: Box::new(warmup),
        docker: Arc::new(RealDocker { runtime, client }),
        clock: crate::schedule::WallClock::system(),
        sockets: Arc::new(ProcSockets),
        handover: handing::HandoverDeps { control, taken },
    })
}

/// The host's listening sockets, read from `/proc`.
struct ProcSockets;

impl HostSockets for ProcSockets {
    fn listening(
        &self,
        ports: &std::collections::BTreeSet<u16>,
    ) -> Result<Vec<crate::procnet::Listening>, crate::procnet::ProcnetError> {
        crate::procnet::listening(ports)
    }

    fn owners(
        &self,
        inodes: &std::collections::BTreeSet<u64>,
    ) -> Vec<(u64, crate::procnet::Owner)> {
        crate::procnet::socket_owners(inodes)
    }
}

impl SteerMaps for SteeringMaps {
    fn steer(&mut self, binding: HostPort, id: u32) -> Result<(), BpfError> {
        SteeringMaps::steer(self, binding, id)
    }

    fn unsteer(&mut self, binding: HostPort) -> Result<(), BpfError> {
        SteeringMaps::unsteer(self, binding)
    }

    fn clear_service(&mut self, id: u32) -> Result<(), BpfError> {
        SteeringMaps::clear_service(self, id)
    }
}

impl Counting for Classifier {
    fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError> {
        Classifier::attach_egress(self, interface)
    }

    fn add_target(&mut self, target: &Target, id: u32) -> Result<(), BpfError> {
        Classifier::add_target(self, target, id)
    }

    fn remove_target(&mut self, target: &Target) -> Result<(), BpfError> {
        Classifier::remove_target(self, target)
    }

    fn clear_service(&mut self, id: u32) -> Result<(), BpfError> {
        Classifier::clear_service(self, id)
    }

    fn activity(&self, id: u32) -> Result<Activity, BpfError> {
        Classifier::activity(self, id)
    }
}

impl ActivityCounters for ActivityReader {
    fn activity(&self, id: u32) -> Result<Activity, BpfError> {
        ActivityReader::activity(self, id)
    }
}

impl IgnoreSources for SourceFilter {
    fn set(&mut self, nets: &[IpNet]) -> Result<(), BpfError> {
        self.set_ignored_sources(nets)
    }
}

#[async_trait]
impl WakeSource for WakeEvents {
    async fn next(&mut self) -> Result<WakeEvent, BpfError> {
        WakeEvents::next(self).await
    }
}

#[async_trait]
impl Warmup for WarmupRedirect {
    async fn warm(&self, binding: HostPort) -> Result<(), NetfilterError> {
        WarmupRedirect::warm(self, binding).await
    }

    async fn cool(&self, binding: HostPort) -> Result<(), NetfilterError> {
        WarmupRedirect::cool(self, binding).await
    }

    async fn forget_syn_sent(&self, binding: HostPort) -> Result<u64, NetfilterError> {
        WarmupRedirect::forget_syn_sent(self, binding).await
    }

    fn is_warming(&self, binding: HostPort) -> bool {
        self.warming().contains(&binding)
    }

    async fn shutdown(self: Box<Self>) -> Result<(), NetfilterError> {
        WarmupRedirect::shutdown(*self).await
    }
}

/// Docker over its socket: the runtime the state machines drive and the
/// client label scans use.
struct RealDocker {
    runtime: Arc<DockerRuntime>,
    client: DockerClient,
}

#[async_trait]
impl ContainerRuntime for RealDocker {
    async fn start(&self, service: &str) -> Result<(), RuntimeError> {
        self.runtime.start(service).await
    }

    async fn stop(&self, service: &str) -> Result<(), RuntimeError> {
        self.runtime.stop(service).await
    }

    async fn wait_ready(&self, service: &str) -> Result<(), RuntimeError> {
        self.runtime.wait_ready(service).await
    }

    async fn observe(&self, service: &str) -> Result<Observed, RuntimeError> {
        self.runtime.observe(service).await
    }

    async fn hibernate(&self, service: &str) -> Result<Hibernation, RuntimeError> {
        self.runtime.hibernate(service).await
    }

    async fn thaw(&self, service: &str) -> Result<(), RuntimeError> {
        self.runtime.thaw(service).await
    }
}

/// Held connections are forwarded to the container's own address: the one
/// the readiness probe just reached, else (a connection forwarded long
/// after readiness) as Docker reports it now.
#[async_trait]
impl Upstreams for RealDocker {
    async fn upstream(&self, service: &str, published_port: u16) -> Result<SocketAddr, String> {
        if let Some(addr) = self.runtime.ready_upstream(service, published_port) {
            return Ok(addr);
        }
        let endpoints = self
            .runtime
            .endpoints(service)
            .await
            .map_err(|e| e.to_string())?;
        upstream_of(&endpoints, service, published_port)
    }

    fn progress(&self, service: &str) -> crate::progress::Progress {
        self.runtime.progress(service)
    }
}

#[async_trait]
impl MemorySource for RealDocker {
    async fn memory(&self, service: &str) -> Result<Option<MemoryUse>, String> {
        self.runtime
            .memory(service)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl AgentDocker for RealDocker {
    fn set_services(&self, services: &[ServiceConfig]) {
        self.runtime.set_services(services);
    }

    fn set_limit_journal(&self, journal: Arc<dyn LimitJournal>) {
        self.runtime.set_limit_journal(journal);
    }

    async fn settle_reclaims(&self, wait: std::time::Duration) {
        self.runtime.settle_reclaims(wait).await;
    }

    async fn endpoints(&self, service: &str) -> Result<ServiceEndpoints, DockerError> {
        self.runtime.endpoints(service).await
    }

    async fn container_pid(&self, container: &str) -> Option<u32> {
        self.client
            .inspect(container)
            .await
            .ok()
            .and_then(|i| i.state.and_then(|s| s.pid))
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
    }

    async fn scan_labels(
        &self,
        file: &Config,
        cache: &mut LabelCache,
    ) -> Result<LabelScan, LabelScanError> {
        labels::discover(&self.client, file, cache).await
    }

    fn watch_events(&self, sinks: EventSinks, shutdown: CancellationToken) -> JoinHandle<()> {
        spawn_watcher(
            Arc::clone(&self.runtime),
            sinks.commands,
            Some(sinks.networks),
            Some(sinks.labelled),
            shutdown,
        )
    }
}
