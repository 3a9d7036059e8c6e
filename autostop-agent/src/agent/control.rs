//! The agent's shared table of services and what the status API sees of
//! it: [`Services`] implements [`Control`] (views, manual actions, health,
//! metrics) and [`LifecycleObserver`] (start history, metrics, persisted
//! start estimates, RAM accounting, alerts).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError, RwLock,
    },
    time::{Duration, SystemTime},
};

use tokio::sync::Semaphore;

use super::memory::{self, MemoryBook};
use crate::{
    api::{Action, Control, ControlError, Health, ServiceView},
    config::ServiceConfig,
    metrics::Metrics,
    service::{
        Command, LifecycleEvent, LifecycleObserver, ManualCommand, ServiceHandle, ServiceState,
        Trigger,
    },
    state::{unix_hour, StateStore},
    supervisor::TaskBoard,
};

/// How far back "starts in the last 24 h" looks.
const START_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// One managed service as the rest of the agent sees it.
#[derive(Clone)]
pub struct ServiceEntry {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Its state machine.
    pub handle: ServiceHandle,
    /// Held-connection permits of the cold-start listener (held = max -
    /// available).
    pub held: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct History {
    /// Wall-clock times of recent starts.
    starts: VecDeque<SystemTime>,
    /// Duration of the last start the agent made.
    last_start: Option<Duration>,
}

/// Something that wants to hear about failures (the alert webhook).
pub trait FailureSink: Send + Sync {
    /// A start failed; `crash_loop` when the guard tripped.
    fn failed(&self, service: &str, reason: &str, crash_loop: bool);
}

/// The table of services and everything derived from it.
pub struct Services {
    entries: RwLock<BTreeMap<String, ServiceEntry>>,
    history: Mutex<HashMap<String, History>>,
    /// What keeps part of a service from working as configured (a port
    /// no container publishes), by service, as last found.
    problems: Mutex<HashMap<String, Vec<String>>>,
    /// Labelled services the agent refused to manage, and why (last scan).
    label_refusals: Mutex<Vec<String>>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    state: Arc<Mutex<StateStore>>,
    /// Docker answered the last time the agent asked.
    pub docker_reachable: AtomicBool,
    /// The kernel programs are attached.
    pub datapath_attached: AtomicBool,
    /// Memory samples and the RAM-savings ledger.
    pub memory: MemoryBook,
    alerts: Option<Arc<dyn FailureSink>>,
    /// The long-lived tasks' states (`/healthz`).
    tasks: TaskBoard,
}

impl Services {
    /// An empty table.
    pub fn new(
        metrics: Arc<Metrics>,
        state: Arc<Mutex<StateStore>>,
        alerts: Option<Arc<dyn FailureSink>>,
    ) -> Self {
        Self {
            entries: RwLock::new(BTreeMap::new()),
            history: Mutex::new(HashMap::new()),
            problems: Mutex::new(HashMap::new()),
            label_refusals: Mutex::new(Vec::new()),
            metrics,
            state,
            docker_reachable: AtomicBool::new(false),
            datapath_attached: AtomicBool::new(false),
            memory: MemoryBook::default(),
            alerts,
            tasks: TaskBoard::default(),
        }
    }

    /// Shows `tasks` (the supervisor's board) on `/healthz`.
    pub fn with_tasks(mut self, tasks: TaskBoard) -> Self {
        self.tasks = tasks;
        self
    }

    /// Adds or replaces a service.
    pub fn insert(&self, entry: ServiceEntry) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(entry.config.name.clone(), entry);
        }
    }

    /// Records what keeps `name` from working as configured (empty: all
    /// is well); a new problem is logged once.
    pub fn set_problems(&self, name: &str, problems: Vec<String>) {
        let mut all = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        let known = all.get(name).map(Vec::as_slice).unwrap_or_default();
        for problem in problems.iter().filter(|p| !known.contains(p)) {
            tracing::warn!(service = name, event = "problem", "{problem}");
        }
        if problems.is_empty() {
            all.remove(name);
        } else {
            all.insert(name.to_owned(), problems);
        }
    }

    /// Records the labelled services the last scan refused; a new refusal
    /// is logged once.
    pub fn set_label_refusals(&self, refusals: Vec<String>) {
        let mut known = self
            .label_refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for refusal in refusals.iter().filter(|r| !known.contains(r)) {
            tracing::warn!(event = "label_rejected", "{refusal}");
        }
        *known = refusals;
    }

    /// Removes a service.
    pub fn remove(&self, name: &str) -> Option<ServiceEntry> {
        self.metrics.remove_service(name);
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.entries.write().ok()?.remove(name)
    }

    /// A copy of one entry.
    pub fn get(&self, name: &str) -> Option<ServiceEntry> {
        self.entries.read().ok()?.get(name).cloned()
    }

    /// Copies of every entry, by name.
    pub fn all(&self) -> Vec<ServiceEntry> {
        self.entries
            .read()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The shared state store.
    pub fn state(&self) -> &Arc<Mutex<StateStore>> {
        &self.state
    }

    fn view(&self, entry: &ServiceEntry) -> ServiceView {
        let status = entry.handle.status();
        let config = &entry.config;
        let now_wall = SystemTime::now();
        let last_activity = status.last_activity.map(|at| at.into_std());
        let idle_for = last_activity.map(|at| at.elapsed());
        let until_stop = match (&status.state, status.hold) {
            (ServiceState::Ready, false) => {
                let idle = idle_for.unwrap_or_else(|| status.since.elapsed());
                Some(status.idle_timeout.saturating_sub(idle).as_secs())
            }
            _ => None,
        };
        let (starts_24h, last_start) = self
            .history
            .lock()
            .ok()
            .and_then(|h| {
                h.get(&config.name).map(|h| {
                    let recent = h
                        .starts
                        .iter()
                        .filter(|t| {
                            now_wall.duration_since(**t).unwrap_or_default() < START_HISTORY
                        })
                        .count();
                    (u32::try_from(recent).unwrap_or(u32::MAX), h.last_start)
                })
            })
            .unwrap_or((0, None));
        let memory = self.state.lock().ok().map(|s| s.service(&config.name));
        let live = self
            .memory
            .live(&config.name)
            .filter(|_| status.state == ServiceState::Ready);
        let to_gb_h = |byte_seconds: f64| byte_seconds / 1e9 / 3600.0;
        let max_held = u64::from(config.max_held_connections);
        let available = u64::try_from(entry.held.available_permits()).unwrap_or(max_held);
        ServiceView {
            name: config.name.clone(),
            state: status.state.name(),
            state_for_s: status.since.elapsed().as_secs(),
            mode: config.mode.as_str().to_owned(),
            port: config.ports.first().map_or(0, |p| p.port),
            ports: config.ports.iter().map(ToString::to_string).collect(),
            idle_timeout_s: status.idle_timeout.as_secs(),
            held: max_held.saturating_sub(available),
            hold: status.hold,
            last_activity: last_activity
                .and_then(|at| now_wall.checked_sub(at.elapsed()))
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            idle_for_s: idle_for.map(|d| d.as_secs()),
            seconds_until_stop: until_stop,
            memory_bytes: live.map(|m| m.used_bytes),
            memory_limit_bytes: live.map(|m| m.limit_bytes),
            last_start_duration_s: last_start.map(|d| d.as_secs_f64()),
            average_start_duration_s: status.start_estimate.map(|d| d.as_secs_f64()),
            starts_24h,
            last_error: status.last_error.clone(),
            ram_saved_gb_h: memory
                .as_ref()
                .map_or(0.0, |m| to_gb_h(m.memory_saved_byte_seconds)),
            ram_saved_gb_h_24h: memory
                .map_or(0.0, |m| to_gb_h(m.saved_last_24h(unix_hour(now_wall)))),
            problems: self
                .problems
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&config.name)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn entry(&self, name: &str) -> Result<ServiceEntry, ControlError> {
        self.get(name)
            .ok_or_else(|| ControlError::UnknownService(name.to_owned()))
    }
}

#[async_trait::async_trait]
impl Control for Services {
    fn services(&self) -> Vec<ServiceView> {
        self.all().iter().map(|e| self.view(e)).collect()
    }

    fn service(&self, name: &str) -> Option<ServiceView> {
        self.get(name).map(|e| self.view(&e))
    }

    async fn act(&self, name: &str, action: Action) -> Result<(), ControlError> {
        let entry = self.entry(name)?;
        let command = match action {
            Action::Start => ManualCommand::Start,
            Action::Stop => ManualCommand::Stop,
            Action::Hold => ManualCommand::Hold,
            Action::Release => ManualCommand::Release,
        };
        entry
            .handle
            .send(Command::Manual(command))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }

    async fn set_idle_timeout(&self, name: &str, timeout: Duration) -> Result<(), ControlError> {
        let entry = self.entry(name)?;
        entry
            .handle
            .send(Command::Manual(ManualCommand::SetIdleTimeout(timeout)))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| ControlError::Unavailable("state store poisoned".into()))?;
        state.update(name, |m| {
            m.idle_timeout_override_s = Some(timeout.as_secs())
        });
        state
            .save()
            .map_err(|e| ControlError::Unavailable(format!("persisting the idle timeout: {e}")))
    }

    fn health(&self) -> Health {
        Health {
            docker_reachable: self.docker_reachable.load(Ordering::Relaxed),
            datapath_attached: self.datapath_attached.load(Ordering::Relaxed),
            tasks: self
                .tasks
                .snapshot()
                .into_iter()
                .map(|(name, state)| (name, state.as_str().to_owned()))
                .collect(),
        }
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn problems(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .label_refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let by_service = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = by_service.keys().collect();
        names.sort();
        for name in names {
            all.extend(
                by_service[name]
                    .iter()
                    .map(|p| format!("service {name:?}: {p}")),
            );
        }
        all
    }
}

impl LifecycleObserver for Services {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        self.metrics.on_event(service, event);
        match event {
            LifecycleEvent::Starting { .. } => memory::on_starting(self, service),
            LifecycleEvent::Stopping { .. } | LifecycleEvent::Stopped { .. } => {
                memory::on_stopped(self, service);
            }
            _ => {}
        }
        match event {
            LifecycleEvent::Starting { trigger } if *trigger != Trigger::External => {
                if let Ok(mut history) = self.history.lock() {
                    let h = history.entry(service.to_owned()).or_default();
                    let now = SystemTime::now();
                    h.starts.push_back(now);
                    while h
                        .starts
                        .front()
                        .is_some_and(|t| now.duration_since(*t).unwrap_or_default() > START_HISTORY)
                    {
                        h.starts.pop_front();
                    }
                }
            }
            LifecycleEvent::Ready { .. } => self.memory.sample_now.notify_one(),
            _ => {}
        }
        match event {
            LifecycleEvent::Ready {
                took: Some(took),
                estimate,
            } => {
                if let Ok(mut history) = self.history.lock() {
                    history.entry(service.to_owned()).or_default().last_start = Some(*took);
                }
                // Persist the learned estimate the wait page shows.
                if let (Some(estimate), Ok(mut state)) = (estimate, self.state.lock()) {
                    state.update(service, |m| {
                        m.learned_start_ms = u64::try_from(estimate.as_millis()).ok()
                    });
                    if let Err(e) = state.save() {
                        tracing::warn!(service, error = %e, "cannot persist the learned start time");
                    }
                }
            }
            LifecycleEvent::Failed { reason, crash_loop } => {
                if let Some(alerts) = &self.alerts {
                    alerts.failed(service, reason, *crash_loop);
                }
            }
            _ => {}
        }
    }
}
