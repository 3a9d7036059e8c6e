//! What the agent drives, behind traits: the kernel's parts (each owned by
//! the one task that uses it), the warm-up redirect and Docker. The binary
//! builds the real ones ([`super::real`]); a unit test runs the whole agent
//! over fakes. The state machine's own traits ([`crate::service`]) are the
//! model: small, synchronous where the call is a map update, async where
//! it is I/O.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, sync::Arc};

use async_trait::async_trait;
use autostop_common::Activity;
use ipnet::IpNet;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::labels::{LabelCache, LabelScan, LabelScanError};
use crate::{
    alerts::Delivery,
    bpf::{BpfError, KernelLog, Target, WakeEvent},
    coldstart::Upstreams,
    config::{Config, ServiceConfig},
    docker::{DockerError, EventSink, LimitJournal, NetworkSink, ServiceEndpoints},
    netfilter::NetfilterError,
    procnet::{Listening, Owner, ProcnetError},
    published::HostPort,
    service::ContainerRuntime,
    state::StateStore,
};

/// The sk_lookup maps: owned by the steering worker.
pub trait SteerMaps: Send {
    /// Steers new connections to `binding` to the agent, for service `id`.
    fn steer(&mut self, binding: HostPort, id: u32) -> Result<(), BpfError>;
    /// Puts `binding` back on the stock path.
    fn unsteer(&mut self, binding: HostPort) -> Result<(), BpfError>;
    /// Removes every entry that points at `id` (before `id` is reused).
    fn clear_service(&mut self, id: u32) -> Result<(), BpfError>;
}

/// The classifier, its targets and counters: owned by the endpoint
/// refresher.
pub trait Counting: Send {
    /// Counts traffic leaving the host through `interface` (a bridge).
    fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError>;
    /// Counts traffic to `target` as service `id`'s.
    fn add_target(&mut self, target: &Target, id: u32) -> Result<(), BpfError>;
    /// Stops counting traffic to `target`.
    fn remove_target(&mut self, target: &Target) -> Result<(), BpfError>;
    /// Removes every target of `id` and zeroes its counters (before `id`
    /// is reused).
    fn clear_service(&mut self, id: u32) -> Result<(), BpfError>;
    /// Service `id`'s counters.
    fn activity(&self, id: u32) -> Result<Activity, BpfError>;
}

/// A read-only view of the counters, for the services' idle checks.
pub trait ActivityCounters: Send + Sync {
    /// Service `id`'s counters.
    fn activity(&self, id: u32) -> Result<Activity, BpfError>;
}

/// The ignored sources: owned by whoever applies reloads (the main task).
pub trait IgnoreSources: Send {
    /// Replaces the ignored CIDRs.
    fn set(&mut self, nets: &[IpNet]) -> Result<(), BpfError>;
}

/// The host's listening TCP sockets, as `/proc` shows them: read by the
/// port guard, on a blocking thread.
pub trait HostSockets: Send + Sync {
    /// The sockets listening on one of `ports`.
    fn listening(&self, ports: &BTreeSet<u16>) -> Result<Vec<Listening>, ProcnetError>;
    /// The processes holding the sockets `inodes` (those it can see).
    fn owners(&self, inodes: &BTreeSet<u64>) -> Vec<(u64, Owner)>;
}

/// The wake events: owned by the wake loop.
#[async_trait]
pub trait WakeSource: Send {
    /// The next wake event.
    async fn next(&mut self) -> Result<WakeEvent, BpfError>;
}

/// The warm-up redirect: owned by the steering worker, which deletes it
/// when it ends.
#[async_trait]
pub trait Warmup: Send + Sync {
    /// New connections to `binding` skip Docker's DNAT.
    async fn warm(&self, binding: HostPort) -> Result<(), NetfilterError>;
    /// Ends warm-up of `binding` (and clears its SYN_SENT entries).
    async fn cool(&self, binding: HostPort) -> Result<(), NetfilterError>;
    /// Deletes the SYN_SENT conntrack entries of `binding`.
    async fn forget_syn_sent(&self, binding: HostPort) -> Result<u64, NetfilterError>;
    /// Whether `binding` is in warm-up.
    fn is_warming(&self, binding: HostPort) -> bool;
    /// Removes the redirect.
    async fn shutdown(self: Box<Self>) -> Result<(), NetfilterError>;
}

/// Docker as the agent uses it: the state machines' runtime, the
/// upstreams of held connections, memory samples, where ports are
/// published, container PIDs, label scans and the event stream.
#[async_trait]
pub trait AgentDocker: ContainerRuntime + Upstreams + super::memory::MemorySource {
    /// The services events and lookups are resolved against (on reload).
    fn set_services(&self, services: &[ServiceConfig]);
    /// Where `service`'s containers listen and publish.
    async fn endpoints(&self, service: &str) -> Result<ServiceEndpoints, DockerError>;
    /// PID of `container`'s init process, if it runs.
    async fn container_pid(&self, container: &str) -> Option<u32>;
    /// The services Docker labels describe, checked against `file`;
    /// `cache` carries what earlier scans learned.
    async fn scan_labels(
        &self,
        file: &Config,
        cache: &mut LabelCache,
    ) -> Result<LabelScan, LabelScanError>;
    /// Follows Docker's events until `shutdown`.
    fn watch_events(&self, sinks: EventSinks, shutdown: CancellationToken) -> JoinHandle<()>;
    /// Where hibernation records the memory limits it changes (the state
    /// file's owner), set once at start. Fakes do not reclaim: ignored.
    fn set_limit_journal(&self, _journal: Arc<dyn LimitJournal>) {}
    /// At shutdown: cancels the memory reclaims under way and waits, up
    /// to `wait`, until their limits are back.
    async fn settle_reclaims(&self, _wait: std::time::Duration) {}
}

/// Where Docker's events go.
pub struct EventSinks {
    /// Container and daemon events, by service.
    pub commands: EventSink,
    /// Networks created and removed.
    pub networks: NetworkSink,
    /// A container labelled `autostop.enable` was created or removed.
    pub labelled: Arc<dyn Fn() + Send + Sync>,
}

/// The kernel's parts.
pub struct KernelDeps {
    /// The classifier: the endpoint refresher's.
    pub counting: Box<dyn Counting>,
    /// The counters, read-only: the services' idle checks.
    pub activity: Arc<dyn ActivityCounters>,
    /// The sk_lookup maps: the steering worker's.
    pub steering: Box<dyn SteerMaps>,
    /// The ignored sources: the main task's.
    pub sources: Box<dyn IgnoreSources>,
    /// The wake events: the wake loop's.
    pub wake: Box<dyn WakeSource>,
    /// The kernel programs' log lines: their own task's (`None` without a
    /// log map, and for fakes).
    pub log: Option<KernelLog>,
    /// How many service indexes the kernel arrays have.
    pub capacity: u32,
}

/// Everything [`super::run_with`] needs, built by the binary from the
/// config (or by a test from fakes).
pub struct AgentDeps {
    /// The configuration file, watched for reloads.
    pub config_path: PathBuf,
    /// Its content when the agent started (warnings already logged).
    pub config: Config,
    /// The status API's socket, bound.
    pub api_listener: tokio::net::TcpListener,
    /// The status API's token, if any.
    pub token: Option<String>,
    /// The alert webhook, if any.
    pub alerts: Option<Delivery>,
    /// The state directory's store, opened.
    pub state: StateStore,
    /// The sockets steered connections land on.
    pub steered: Vec<tokio::net::TcpListener>,
    /// The kernel's parts.
    pub kernel: KernelDeps,
    /// The warm-up redirect, installed.
    pub warmup: Box<dyn Warmup>,
    /// Docker.
    pub docker: Arc<dyn AgentDocker>,
    /// The wall clock `keep_warm` windows and pre-warms read.
    pub clock: crate::schedule::WallClock,
    /// The host's listening sockets (the port guard's).
    pub sockets: Arc<dyn HostSockets>,
    /// The control socket, and the hand-over this agent took, if any.
    pub handover: super::handing::HandoverDeps,
}

/// A container's address for `published_port`, from its endpoints.
pub fn upstream_of(
    endpoints: &ServiceEndpoints,
    service: &str,
    published_port: u16,
) -> Result<SocketAddr, String> {
    endpoints
        .endpoints
        .iter()
        .find(|e| e.published.port == published_port)
        .and_then(|e| e.ip.map(|ip| SocketAddr::new(ip, e.container_port)))
        .ok_or_else(|| format!("{service}: no running container serves port {published_port}"))
}
