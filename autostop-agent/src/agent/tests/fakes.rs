//! Fakes of everything the agent drives: a kernel whose maps are plain
//! maps (steered bindings, counted targets, counters, ignored sources, a
//! wake-event channel), a warm-up redirect that records its set, and a
//! Docker that starts and stops pretend containers publishing each
//! configured port on every address.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use autostop_common::Activity;
use ipnet::IpNet;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    agent::{
        deps::{
            ActivityCounters, AgentDocker, Counting, EventSinks, HostSockets, IgnoreSources,
            SteerMaps, WakeSource, Warmup,
        },
        labels::{LabelCache, LabelScan, LabelScanError},
        memory::MemorySource,
    },
    bpf::{BpfError, Target, WakeEvent},
    coldstart::Upstreams,
    config::{Config, Protocol, ServiceConfig},
    docker::{ContainerEndpoint, DockerError, MemoryUse, ServiceEndpoints},
    netfilter::NetfilterError,
    procnet::{Listening, Owner, ProcnetError},
    published::HostPort,
    service::{ContainerRuntime, Hibernation, Observed, RuntimeError},
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("fake lock")
}

/// The fake kernel's maps.
#[derive(Debug, Default)]
pub struct Maps {
    pub steered: HashMap<HostPort, u32>,
    pub targets: HashMap<Target, u32>,
    pub activity: HashMap<u32, Activity>,
    pub attached: BTreeSet<String>,
    pub ignored: Vec<IpNet>,
    /// Every index cleared, in order, by which part.
    pub cleared: Vec<(&'static str, u32)>,
}

/// The host's listening sockets: the test says which (with owners).
#[derive(Debug, Clone, Default)]
pub struct FakeSockets(pub Arc<Mutex<Vec<SocketSeen>>>);

/// A listening socket and its owner, as the fake host shows it.
pub type SocketSeen = (Listening, Option<Owner>);

impl FakeSockets {
    /// A program `command` listening on `local`.
    pub fn listen(&self, local: &str, command: &str) {
        let listening = Listening {
            local: local.parse().expect("socket address"),
            inode: 4242,
        };
        let owner = Owner {
            pid: 4242,
            command: command.to_owned(),
            args: vec![command.to_owned()],
        };
        lock(&self.0).push((listening, Some(owner)));
    }

    /// Every listener gone.
    pub fn close_all(&self) {
        lock(&self.0).clear();
    }
}

impl HostSockets for FakeSockets {
    fn listening(&self, ports: &BTreeSet<u16>) -> Result<Vec<Listening>, ProcnetError> {
        Ok(lock(&self.0)
            .iter()
            .map(|(l, _)| *l)
            .filter(|l| ports.contains(&l.local.port()))
            .collect())
    }

    fn owners(&self, inodes: &BTreeSet<u64>) -> Vec<(u64, Owner)> {
        lock(&self.0)
            .iter()
            .filter(|(l, _)| inodes.contains(&l.inode))
            .filter_map(|(l, o)| o.clone().map(|o| (l.inode, o)))
            .collect()
    }
}

/// One kernel, handed out as each part.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel(pub Arc<Mutex<Maps>>);

impl FakeKernel {
    pub fn maps(&self) -> MutexGuard<'_, Maps> {
        lock(&self.0)
    }
}

impl SteerMaps for FakeKernel {
    fn steer(&mut self, binding: HostPort, id: u32) -> Result<(), BpfError> {
        self.maps().steered.insert(binding, id);
        Ok(())
    }

    fn unsteer(&mut self, binding: HostPort) -> Result<(), BpfError> {
        self.maps().steered.remove(&binding);
        Ok(())
    }

    fn clear_service(&mut self, id: u32) -> Result<(), BpfError> {
        let mut maps = self.maps();
        maps.steered.retain(|_, owner| *owner != id);
        maps.cleared.push(("steering", id));
        Ok(())
    }
}

impl Counting for FakeKernel {
    fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError> {
        self.maps().attached.insert(interface.to_owned());
        Ok(())
    }

    fn add_target(&mut self, target: &Target, id: u32) -> Result<(), BpfError> {
        self.maps().targets.insert(*target, id);
        Ok(())
    }

    fn remove_target(&mut self, target: &Target) -> Result<(), BpfError> {
        self.maps().targets.remove(target);
        Ok(())
    }

    fn clear_service(&mut self, id: u32) -> Result<(), BpfError> {
        let mut maps = self.maps();
        maps.targets.retain(|_, owner| *owner != id);
        maps.activity.remove(&id);
        maps.cleared.push(("counters", id));
        Ok(())
    }

    fn activity(&self, id: u32) -> Result<Activity, BpfError> {
        Ok(self.maps().activity.get(&id).copied().unwrap_or_default())
    }
}

impl ActivityCounters for FakeKernel {
    fn activity(&self, id: u32) -> Result<Activity, BpfError> {
        Counting::activity(self, id)
    }
}

impl IgnoreSources for FakeKernel {
    fn set(&mut self, nets: &[IpNet]) -> Result<(), BpfError> {
        self.maps().ignored = nets.to_vec();
        Ok(())
    }
}

/// Wake events the test sends.
pub struct FakeWake(pub mpsc::UnboundedReceiver<WakeEvent>);

#[async_trait]
impl WakeSource for FakeWake {
    async fn next(&mut self) -> Result<WakeEvent, BpfError> {
        match self.0.recv().await {
            Some(event) => Ok(event),
            // The test is done sending: no more events, ever.
            None => std::future::pending().await,
        }
    }
}

/// A wake event for `id` on `port` from 192.0.2.1.
pub fn wake(id: u32, port: u16) -> WakeEvent {
    WakeEvent {
        service: id,
        port,
        family: crate::bpf::Family::V4,
        source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000),
        ignored_source: false,
        ktime_ns: 1,
    }
}

/// The warm-up set, and whether it was removed.
#[derive(Debug, Default)]
pub struct Redirect {
    pub warming: BTreeSet<HostPort>,
    pub removed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FakeWarmup(pub Arc<Mutex<Redirect>>);

#[async_trait]
impl Warmup for FakeWarmup {
    async fn warm(&self, binding: HostPort) -> Result<(), NetfilterError> {
        lock(&self.0).warming.insert(binding);
        Ok(())
    }

    async fn cool(&self, binding: HostPort) -> Result<(), NetfilterError> {
        lock(&self.0).warming.remove(&binding);
        Ok(())
    }

    async fn forget_syn_sent(&self, _binding: HostPort) -> Result<u64, NetfilterError> {
        Ok(0)
    }

    fn is_warming(&self, binding: HostPort) -> bool {
        lock(&self.0).warming.contains(&binding)
    }

    async fn shutdown(self: Box<Self>) -> Result<(), NetfilterError> {
        lock(&self.0).removed = true;
        Ok(())
    }
}

/// Pretend containers: one per service, named after it, at 10.0.0.<n>.
#[derive(Default)]
pub struct FakeDocker {
    pub services: Mutex<HashMap<String, ServiceConfig>>,
    pub running: Mutex<HashSet<String>>,
    /// Every start and stop, in order (`+name`, `-name`).
    pub calls: Mutex<Vec<String>>,
    /// Services whose containers burn CPU: 5 s of CPU time per memory
    /// sample (one every 15 s, so a third of a core).
    pub busy: Mutex<HashSet<String>>,
    /// CPU time used so far, by service.
    pub cpu_ns: Mutex<HashMap<String, u64>>,
    /// Services whose start fails (a container exiting at once).
    pub broken: Mutex<HashSet<String>>,
    /// What every label scan finds.
    pub labelled: Mutex<Vec<ServiceConfig>>,
    /// Each service's one container: starting, then running or failed.
    pub progress: crate::progress::Book,
}

impl FakeDocker {
    fn config(&self, service: &str) -> Result<ServiceConfig, DockerError> {
        lock(&self.services)
            .get(service)
            .cloned()
            .ok_or_else(|| DockerError::NotFound(service.to_owned()))
    }
}

#[async_trait]
impl ContainerRuntime for FakeDocker {
    async fn start(&self, service: &str) -> Result<(), RuntimeError> {
        lock(&self.calls).push(format!("+{service}"));
        self.progress.begin(service, vec![vec![service.to_owned()]]);
        self.progress
            .set(service, service, crate::progress::Phase::Starting);
        if lock(&self.broken).contains(service) {
            self.progress.fail(service);
            return Err(RuntimeError::Runtime(format!(
                "{service} exited with code 1"
            )));
        }
        self.progress
            .set(service, service, crate::progress::Phase::Running);
        lock(&self.running).insert(service.to_owned());
        Ok(())
    }

    async fn stop(&self, service: &str) -> Result<(), RuntimeError> {
        lock(&self.calls).push(format!("-{service}"));
        lock(&self.running).remove(service);
        self.progress.clear(service);
        Ok(())
    }

    async fn wait_ready(&self, _service: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn observe(&self, service: &str) -> Result<Observed, RuntimeError> {
        Ok(if lock(&self.running).contains(service) {
            Observed::AllRunning
        } else {
            Observed::AllStopped
        })
    }

    /// Paused, never reclaimed (the agent's tests use `sleep = "stop"`).
    async fn hibernate(&self, service: &str) -> Result<Hibernation, RuntimeError> {
        lock(&self.calls).push(format!("~{service}"));
        Ok(Hibernation::default())
    }

    async fn thaw(&self, service: &str) -> Result<(), RuntimeError> {
        lock(&self.calls).push(format!("^{service}"));
        Ok(())
    }
}

#[async_trait]
impl Upstreams for FakeDocker {
    async fn upstream(&self, service: &str, _port: u16) -> Result<SocketAddr, String> {
        Err(format!("{service}: the fake has no upstream"))
    }

    fn progress(&self, service: &str) -> crate::progress::Progress {
        self.progress.get(service)
    }
}

#[async_trait]
impl MemorySource for FakeDocker {
    async fn memory(&self, service: &str) -> Result<Option<MemoryUse>, String> {
        let busy = lock(&self.busy).contains(service);
        let mut cpu = lock(&self.cpu_ns);
        let used = cpu.entry(service.to_owned()).or_default();
        if busy {
            *used += 5_000_000_000;
        }
        Ok(Some(MemoryUse {
            used_bytes: 1 << 20,
            limit_bytes: 1 << 30,
            cpu_ns: *used,
        }))
    }
}

#[async_trait]
impl AgentDocker for FakeDocker {
    fn set_services(&self, services: &[ServiceConfig]) {
        *lock(&self.services) = services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
    }

    async fn endpoints(&self, service: &str) -> Result<ServiceEndpoints, DockerError> {
        let config = self.config(service)?;
        let host = u8::try_from(service.len() % 250).unwrap_or(1) + 2;
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, host));
        let running = lock(&self.running).contains(service);
        Ok(ServiceEndpoints {
            endpoints: config
                .ports
                .iter()
                .map(|p| ContainerEndpoint {
                    published: *p,
                    container: service.to_owned(),
                    ip: running.then_some(ip),
                    ipv6: None,
                    container_port: p.port,
                    protocol: p.protocol,
                    bridge: Some("br-fake".to_owned()),
                })
                .collect(),
            bridges: vec!["br-fake".to_owned()],
            bindings: config
                .ports
                .iter()
                .filter(|p| p.protocol == Protocol::Tcp)
                .map(|p| HostPort::any(p.port))
                .collect(),
            unpublished: Vec::new(),
            notes: Vec::new(),
        })
    }

    async fn container_pid(&self, _container: &str) -> Option<u32> {
        None
    }

    async fn scan_labels(
        &self,
        _file: &Config,
        _cache: &mut LabelCache,
    ) -> Result<LabelScan, LabelScanError> {
        Ok(LabelScan {
            services: lock(&self.labelled).clone(),
            refusals: Vec::new(),
        })
    }

    fn watch_events(&self, _sinks: EventSinks, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { shutdown.cancelled().await })
    }
}
