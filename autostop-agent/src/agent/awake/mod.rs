//! The keep-awake planner: one task that decides, for every service, what
//! besides its own traffic keeps it awake or wakes it (issue #18):
//!
//! - a `keep_warm` window: started when the window opens (or when the
//!   agent finds it down inside one; once per window, so an operator's
//!   manual stop inside it stands) and never idle-stopped inside it;
//! - `requires`: a requirement is never idle-stopped while a service that
//!   requires it is starting or ready; when the last one stops, its idle
//!   timer restarts (the start chain itself is [`super::requires`]);
//! - `busy_cpu_percent`: not idle-stopped while its containers used more
//!   CPU than that over the last minute, read from the memory task's
//!   Docker stats samples;
//! - `prewarm`: started ahead of its habitual first request
//!   ([`prewarm`]).
//!
//! It sends each service's reasons to its state machine
//! ([`Command::KeepAwake`]) when they change, and publishes what the API
//! shows (next window, next pre-warm) in the service's record. It runs
//! when a service changes state, when a request wakes one, on reloads, at
//! the next window edge or pre-warm, on each memory sample of a ready
//! service with a busy guard, every second while a service's state is not
//! known yet (adoption, a Docker outage) and every [`PREWARM_WATCH`] while
//! a pre-warm's outcome is being watched; otherwise it sleeps (at most
//! [`MAX_SLEEP`]). The busy guard reads the CPU rate between samples, so
//! it holds from the second sample after the service became ready on (15
//! to 30 s).

mod prewarm;
pub mod reasons;

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::{tz::TimeZone, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{registry::DirectoryReader, state_owner::StateHandle};
use crate::{
    config::{warm::needed_by, ServiceConfig},
    metrics::Metrics,
    schedule::{prewarm::Prediction, Schedule, WallClock},
    service::{Command, LifecycleEvent, LifecycleObserver, Trigger},
};
use reasons::CpuWindow;

/// How often a pre-warm's outcome is looked at while it is pending.
const PREWARM_WATCH: Duration = Duration::from_secs(15);
/// How often it looks while a service's state is not known yet.
const ADOPTING_POLL: Duration = Duration::from_secs(1);
/// Longest sleep between evaluations (a clock change is noticed by then).
const MAX_SLEEP: Duration = Duration::from_secs(15 * 60);

/// What the API shows of a service's schedule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwakeView {
    /// When the `keep_warm` window it is in closes.
    pub window_until: Option<Timestamp>,
    /// The next `keep_warm` opening.
    pub next_window: Option<Timestamp>,
    /// The next learned pre-warm, and why.
    pub next_prewarm: Option<Prediction>,
}

/// What wakes the planner besides time.
#[derive(Debug)]
pub enum AwakeEvent {
    /// A service changed state.
    Changed,
    /// A request woke `service` (the pre-warm model's demand).
    Demand(String),
}

/// Feeds the planner from the services' lifecycle steps.
pub struct AwakeObserver(mpsc::UnboundedSender<AwakeEvent>);

impl AwakeObserver {
    /// An observer sending to `events`.
    pub fn new(events: mpsc::UnboundedSender<AwakeEvent>) -> Self {
        Self(events)
    }
}

impl LifecycleObserver for AwakeObserver {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        if let LifecycleEvent::Starting {
            trigger: Trigger::Syn | Trigger::HeldConnection,
        } = event
        {
            let _ = self.0.send(AwakeEvent::Demand(service.to_owned()));
        }
        let _ = self.0.send(AwakeEvent::Changed);
    }
}

/// The planner's memory of one incarnation of a service (a service
/// re-created by a reload gets a new one: its new state machine has heard
/// nothing yet).
#[derive(Debug, Default)]
struct Plan {
    /// The incarnation's cells (see [`crate::agent::ServiceRecord::same_incarnation`]).
    cells: Option<Arc<crate::agent::registry::ServiceCells>>,
    /// Reasons last sent to the state machine.
    sent: Vec<String>,
    /// The closing of the window occurrence it was already started for.
    woke_for: Option<Timestamp>,
    cpu: CpuWindow,
    /// The memory task's samples of the service (each read once).
    samples: Option<Samples>,
    prewarm: prewarm::PrewarmPlan,
}

/// The planner task.
pub struct Planner {
    /// The services.
    pub directory: DirectoryReader,
    /// Demands and pre-warm outcomes are remembered there.
    pub state: StateHandle,
    /// `autostop_prewarm_total`.
    pub metrics: Arc<Metrics>,
    /// Where "now" comes from.
    pub clock: WallClock,
    /// The host's time zone.
    pub tz: TimeZone,
}

impl Planner {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<AwakeEvent>,
        shutdown: CancellationToken,
    ) {
        let mut plans: HashMap<String, Plan> = HashMap::new();
        let mut directory = self.directory.changes();
        loop {
            let next = self.evaluate(&mut plans);
            let mut samples: Vec<Samples> =
                plans.values().filter_map(|p| p.samples.clone()).collect();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(next) => {}
                () = any_sample(&mut samples) => {}
                changed = directory.changed() => if changed.is_err() { break },
                Some(event) = events.recv() => {
                    self.on_event(event);
                    while let Ok(event) = events.try_recv() {
                        self.on_event(event);
                    }
                }
            }
        }
    }

    fn on_event(&self, event: AwakeEvent) {
        if let AwakeEvent::Demand(service) = event {
            let at = self.clock.now().as_second();
            self.state
                .send(super::state_owner::StateUpdate::Demand { service, at });
        }
    }

    /// One pass over every service; returns how long to sleep.
    fn evaluate(&self, plans: &mut HashMap<String, Plan>) -> Duration {
        let now = self.clock.now();
        let directory = self.directory.snapshot();
        plans.retain(|name, _| directory.get(name).is_some());
        let configs: Vec<ServiceConfig> = directory.iter().map(|r| r.config.clone()).collect();
        let mut next: Option<Timestamp> = None;
        let mut watch_soon = false;
        // Adoption (and re-adoption after a Docker outage) changes states
        // without a lifecycle step: look again until it is done.
        let mut adopting = false;
        for record in directory.iter() {
            let name = record.name();
            let policy = &record.config.wake;
            let status = record.handle.status();
            let plan = plans.entry(name.to_owned()).or_default();
            if !plan
                .cells
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &record.cells))
            {
                *plan = Plan {
                    cells: Some(Arc::clone(&record.cells)),
                    ..Plan::default()
                };
            }
            adopting |= status.state == crate::service::ServiceState::Unknown;
            let mut reasons = Vec::new();
            let mut view = AwakeView::default();

            let schedule = Schedule::in_zone(policy.keep_warm.clone(), self.tz.clone());
            if !schedule.is_empty() {
                view.window_until = schedule.open_until(now);
                view.next_window = schedule.next_opening(now);
                if let Some(until) = view.window_until {
                    reasons.push(reasons::window_reason(until, &self.tz));
                    if plan.woke_for != Some(until) && reasons::startable(&status) {
                        tracing::info!(service = %name, event = "keep_warm_start", until = %reasons::local_time(until, &self.tz));
                        if record
                            .handle
                            .try_send(Command::Wake {
                                trigger: Trigger::Schedule,
                            })
                            .is_ok()
                        {
                            plan.woke_for = Some(until);
                        }
                    }
                }
                next = earliest(next, view.window_until.or(view.next_window));
            }

            let running: Vec<String> = needed_by(name, &configs)
                .into_iter()
                .filter(|d| {
                    directory
                        .get(d)
                        .is_some_and(|r| reasons::needs_requirements(&r.handle.status().state))
                })
                .collect();
            reasons.extend(reasons::needed_reason(&running));
            match policy.busy_cpu_percent {
                Some(limit) if status.state == crate::service::ServiceState::Ready => {
                    let fresh = plan.samples.is_none();
                    let samples = plan
                        .samples
                        .get_or_insert_with(|| record.cells.memory.subscribe());
                    if fresh || samples.has_changed().unwrap_or(false) {
                        if let Some(sample) = *samples.borrow_and_update() {
                            plan.cpu.push(tokio::time::Instant::now(), sample.cpu_ns);
                        }
                    }
                    reasons.extend(plan.cpu.busy_reason(limit));
                }
                _ => {
                    plan.cpu.clear();
                    plan.samples = None;
                }
            }

            if policy.prewarm {
                let step = self.prewarm_step(&mut plan.prewarm, record, &status, now);
                watch_soon |= step.watching;
                next = earliest(next, step.next.as_ref().map(|p| p.at));
                view.next_prewarm = step.next;
            } else {
                plan.prewarm = prewarm::PrewarmPlan::default();
            }

            if reasons != plan.sent {
                if record
                    .handle
                    .try_send(Command::KeepAwake(reasons.clone()))
                    .is_ok()
                {
                    plan.sent = reasons;
                } else {
                    watch_soon = true;
                }
            }
            record.cells.awake.send_if_modified(|v| {
                let changed = *v != view;
                *v = view;
                changed
            });
        }
        let mut sleep = next
            .map(|at| {
                let wait = now.duration_until(at);
                Duration::try_from(wait).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        if watch_soon {
            sleep = sleep.min(PREWARM_WATCH);
        }
        if adopting {
            sleep = sleep.min(ADOPTING_POLL);
        }
        // An edge exactly now was just handled: look again a moment later.
        sleep.max(Duration::from_millis(100))
    }
}

/// A service's memory (and CPU) samples, as the memory task publishes them.
type Samples = tokio::sync::watch::Receiver<Option<crate::docker::MemoryUse>>;

/// Resolves when any of `samples` has a new sample (never if none).
async fn any_sample(samples: &mut [Samples]) {
    if samples.is_empty() {
        return std::future::pending().await;
    }
    let changes = samples.iter_mut().map(|s| Box::pin(s.changed()));
    // A closed channel (the service went) is a change too: the next pass
    // forgets it.
    let _ = futures_util::future::select_all(changes).await;
}

/// The earlier of two optional times.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
