//! Test fakes for the ports plus a harness that spawns one service actor
//! against them. Every port call is appended, with its (paused-clock) time,
//! to one shared log so tests can assert ordering, e.g. steering before stop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    spawn_service, ActivityProbe, Command, ContainerRuntime, Hibernation, LifecycleEvent,
    LifecycleObserver, Observed, Ports, RuntimeError, ServiceError, ServiceHandle, ServiceSettings,
    ServiceState, ServiceStatus, StateName, SteerMode, Steering,
};

/// Records lifecycle events in order, each with the state the service's
/// watchers saw while the observer ran.
#[derive(Debug, Default)]
pub struct FakeObserver {
    events: Mutex<Vec<(LifecycleEvent, Option<ServiceState>)>>,
    /// States entered without a step (`on_unannounced`).
    unannounced: Mutex<Vec<StateName>>,
    /// The service's status, once the harness has spawned it.
    watch: std::sync::OnceLock<tokio::sync::watch::Receiver<ServiceStatus>>,
}

impl FakeObserver {
    /// Events so far.
    pub fn events(&self) -> Vec<LifecycleEvent> {
        lock(&self.events).iter().map(|(e, _)| e.clone()).collect()
    }

    /// States entered without a lifecycle step so far.
    pub fn unannounced(&self) -> Vec<StateName> {
        lock(&self.unannounced).clone()
    }

    /// What watchers saw during each event so far.
    pub fn states_seen(&self) -> Vec<Option<ServiceState>> {
        lock(&self.events).iter().map(|(_, s)| s.clone()).collect()
    }
}

impl LifecycleObserver for FakeObserver {
    fn on_event(&self, _: &str, event: &LifecycleEvent) {
        let seen = self.watch.get().map(|w| w.borrow().state.clone());
        lock(&self.events).push((event.clone(), seen));
    }

    fn on_unannounced(&self, _: &str, state: StateName) {
        lock(&self.unannounced).push(state);
    }
}

/// One recorded port call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Start,
    Stop,
    WaitReady,
    Observe,
    Hibernate,
    Thaw,
    Steer(SteerMode),
}

/// Shared, timestamped call log.
#[derive(Debug, Default)]
pub struct Log(Mutex<Vec<(Instant, Call)>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    fn push(&self, c: Call) {
        lock(&self.0).push((Instant::now(), c));
    }
    /// All calls in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.0).iter().map(|(_, c)| *c).collect()
    }
    /// Number of calls equal to `c`.
    pub fn count(&self, c: Call) -> usize {
        lock(&self.0).iter().filter(|(_, x)| *x == c).count()
    }
    /// Times of calls equal to `c`.
    pub fn times(&self, c: Call) -> Vec<Instant> {
        lock(&self.0)
            .iter()
            .filter(|(_, x)| *x == c)
            .map(|(t, _)| *t)
            .collect()
    }
    /// Runtime calls only (steering filtered out).
    pub fn runtime_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::Steer(_)))
            .collect()
    }
    /// Steering modes set, in order.
    pub fn steering(&self) -> Vec<SteerMode> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Steer(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

/// How a `wait_ready` call behaves.
#[derive(Debug, Clone)]
pub enum Ready {
    After(Duration),
    Hang,
    Fail(String),
}

/// Scriptable container runtime.
pub struct FakeRuntime {
    pub log: Arc<Log>,
    pub start_results: Mutex<VecDeque<Result<(), RuntimeError>>>,
    pub ready_script: Mutex<VecDeque<Ready>>,
    pub ready_default: Mutex<Ready>,
    pub observe_script: Mutex<VecDeque<Result<Observed, RuntimeError>>>,
    pub observe_default: Mutex<Observed>,
    pub stop_delay: Mutex<Duration>,
    /// Results of `hibernate` calls (default: 300 MiB down to 10 MiB).
    pub hibernate_script: Mutex<VecDeque<Result<Hibernation, RuntimeError>>>,
}

impl FakeRuntime {
    pub fn new(log: Arc<Log>, observed: Observed) -> Self {
        Self {
            log,
            start_results: Mutex::default(),
            ready_script: Mutex::default(),
            ready_default: Mutex::new(Ready::After(Duration::from_secs(5))),
            observe_script: Mutex::default(),
            observe_default: Mutex::new(observed),
            stop_delay: Mutex::new(Duration::from_secs(1)),
            hibernate_script: Mutex::default(),
        }
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn start(&self, _service: &str) -> Result<(), RuntimeError> {
        self.log.push(Call::Start);
        lock(&self.start_results).pop_front().unwrap_or(Ok(()))
    }
    async fn stop(&self, _service: &str) -> Result<(), RuntimeError> {
        self.log.push(Call::Stop);
        let d = *lock(&self.stop_delay);
        tokio::time::sleep(d).await;
        Ok(())
    }
    async fn wait_ready(&self, _service: &str) -> Result<(), RuntimeError> {
        self.log.push(Call::WaitReady);
        let scripted = lock(&self.ready_script).pop_front();
        match scripted.unwrap_or_else(|| lock(&self.ready_default).clone()) {
            Ready::After(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Ready::Hang => std::future::pending().await,
            Ready::Fail(m) => Err(ServiceError::Runtime(m)),
        }
    }
    async fn observe(&self, _service: &str) -> Result<Observed, RuntimeError> {
        self.log.push(Call::Observe);
        let scripted = lock(&self.observe_script).pop_front();
        scripted.unwrap_or_else(|| Ok(*lock(&self.observe_default)))
    }
    async fn hibernate(&self, _service: &str) -> Result<Hibernation, RuntimeError> {
        self.log.push(Call::Hibernate);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let scripted = lock(&self.hibernate_script).pop_front();
        scripted.unwrap_or(Ok(Hibernation {
            awake: 300 << 20,
            resident: 10 << 20,
            swap: 290 << 20,
            reclaimed: true,
            note: None,
        }))
    }
    async fn thaw(&self, _service: &str) -> Result<(), RuntimeError> {
        self.log.push(Call::Thaw);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

/// Steering fake writing to the shared log.
pub struct FakeSteering(pub Arc<Log>);

impl Steering for FakeSteering {
    fn set_mode(&self, _service: &str, mode: SteerMode) -> super::traits::Steered {
        self.0.push(Call::Steer(mode));
        let (done, steered) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        steered
    }

    fn hand_back(&self, service: &str) -> super::traits::HandBack {
        drop(self.set_mode(service, SteerMode::Direct));
        let (done, handed_back) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        handed_back
    }
}

/// Probe fake; `touch_on_confirm` simulates traffic arriving between the
/// idle decision and the re-read (two reads at the same instant).
#[derive(Default)]
pub struct FakeProbe {
    pub last: Mutex<Option<Instant>>,
    pub open: AtomicU32,
    pub touch_on_confirm: AtomicBool,
    /// How many times the activity stamp was read.
    pub reads: AtomicU32,
    last_read: Mutex<Option<Instant>>,
}

impl FakeProbe {
    /// Marks traffic now.
    pub fn touch(&self) {
        *lock(&self.last) = Some(Instant::now());
    }
}

impl ActivityProbe for FakeProbe {
    fn last_activity(&self, _service: &str) -> Option<std::time::Instant> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        let prev = lock(&self.last_read).replace(now);
        if prev == Some(now) && self.touch_on_confirm.swap(false, Ordering::SeqCst) {
            self.touch();
        }
        lock(&self.last).map(Instant::into_std)
    }
    fn open_connections(&self, _service: &str) -> u32 {
        self.open.load(Ordering::SeqCst)
    }
}

/// Default test settings: idle 60 s, start timeout 30 s.
pub fn settings() -> ServiceSettings {
    ServiceSettings {
        idle_timeout: Duration::from_secs(60),
        start_timeout: Duration::from_secs(30),
        hold_while_connected: true,
        initial_start_estimate: None,
        sleep: crate::config::Sleep::Stop,
        resume: None,
    }
}

/// A running actor with its fakes.
pub struct Harness {
    pub handle: ServiceHandle,
    pub join: JoinHandle<()>,
    pub observer: Arc<FakeObserver>,
    pub log: Arc<Log>,
    pub rt: Arc<FakeRuntime>,
    pub probe: Arc<FakeProbe>,
    pub cancel: CancellationToken,
}

impl Harness {
    /// Spawns an actor whose `observe` reports `observed`; `tweak` scripts
    /// the runtime before the actor starts.
    pub fn spawn(observed: Observed, s: ServiceSettings, tweak: impl FnOnce(&FakeRuntime)) -> Self {
        let log = Arc::new(Log::default());
        let rt = Arc::new(FakeRuntime::new(Arc::clone(&log), observed));
        tweak(&rt);
        let probe = Arc::new(FakeProbe::default());
        let cancel = CancellationToken::new();
        let observer = Arc::new(FakeObserver::default());
        let ports = Ports {
            runtime: Arc::clone(&rt) as Arc<dyn ContainerRuntime>,
            steering: Arc::new(FakeSteering(Arc::clone(&log))),
            probe: Arc::clone(&probe) as Arc<dyn ActivityProbe>,
            observer: Arc::clone(&observer) as Arc<dyn LifecycleObserver>,
        };
        let (handle, join) = spawn_service("web", s, ports, cancel.clone());
        let _ = observer.watch.set(handle.subscribe());
        Self {
            handle,
            join,
            observer,
            log,
            rt,
            probe,
            cancel,
        }
    }

    /// Waits (virtual time, at most an hour) until the state matches.
    pub async fn wait(&self, pred: impl Fn(&ServiceState) -> bool) -> ServiceStatus {
        let mut rx = self.handle.subscribe();
        let fut = rx.wait_for(|s| pred(&s.state));
        let got = match tokio::time::timeout(Duration::from_secs(3600), fut).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        match got {
            Some(s) => s,
            None => panic!("state not reached, now {:?}", self.handle.status()),
        }
    }

    /// Waits for an exact state.
    pub async fn wait_state(&self, want: ServiceState) -> ServiceStatus {
        self.wait(|s| *s == want).await
    }

    /// Sends a command.
    pub async fn send(&self, cmd: Command) {
        self.handle.send(cmd).await.expect("actor alive");
    }

    /// Lets the actor process everything queued without advancing time.
    pub async fn settle(&self) {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
}

/// True for `Failed { .. }`.
pub fn is_failed(s: &ServiceState) -> bool {
    matches!(s, ServiceState::Failed { .. })
}
