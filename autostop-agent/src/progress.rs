//! Start progress as the wait page shows it: one step per container of a
//! service (in start order) and per service it `requires`, each in a
//! [`Phase`] entered at a known instant.
//!
//! The Docker runtime records its containers' phases in a [`Book`] as it
//! starts and probes them (cleared at a new start and at stop, kept after
//! readiness or failure for the page's last poll); the agent puts the
//! requirements' steps in front; the cold-start listener turns them into
//! [`PublicStep`]s. Anonymous visitors see only generic labels ("container
//! 1 of 2", "required service 1 of 1") and the phase: never a container
//! name, image, compose path or Docker error.

use std::collections::HashMap;
use tokio::time::Instant;

use parking_lot::Mutex;

mod public;

pub use public::{done_count, public_steps, summary, PageStage, PublicStep};

/// Where one step of a start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet: waiting for its turn or for a dependency.
    Waiting,
    /// The start was asked for; not running yet.
    Starting,
    /// Running, without a healthcheck.
    Running,
    /// Running, its healthcheck has not passed yet.
    HealthPending,
    /// Running and healthy.
    Healthy,
    /// Running, its healthcheck fails.
    Unhealthy,
    /// A one-shot container that finished with exit code 0.
    Completed,
    /// Running; the agent waits for its service port to accept.
    PortWait,
    /// Its service port accepts connections.
    PortAnswering,
    /// A required service is ready.
    Ready,
    /// The start failed here.
    Failed,
}

impl Phase {
    /// The wire name (status JSON `phase`, `data-phase` in pages).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::HealthPending => "health_pending",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Completed => "completed",
            Phase::PortWait => "port_wait",
            Phase::PortAnswering => "port_answering",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
        }
    }

    /// What a visitor reads.
    pub fn text(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::HealthPending => "health check pending",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Completed => "completed",
            Phase::PortWait => "waiting for its port",
            Phase::PortAnswering => "port answering",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
        }
    }

    /// Whether the step has done its part of the start.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            Phase::Running
                | Phase::Healthy
                | Phase::Completed
                | Phase::PortAnswering
                | Phase::Ready
        )
    }
}

/// What a step stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A container of the service itself.
    Container,
    /// A service this one `requires`.
    Requirement,
}

/// One step of a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Container or requirement.
    pub kind: StepKind,
    /// Its phase.
    pub phase: Phase,
    /// When it entered `phase`.
    pub since: Instant,
}

/// A service's steps and when the start that recorded the container steps
/// began (`None` when none were recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// When the container steps' start began.
    pub began: Option<Instant>,
    /// Requirements first, then containers in start order.
    pub steps: Vec<Step>,
}

/// The container run state as the Docker runtime reads it, reduced to
/// what decides a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Running without a healthcheck.
    Running,
    /// Running, healthcheck starting.
    HealthStarting,
    /// Running and healthy.
    Healthy,
    /// Running and unhealthy.
    Unhealthy,
    /// Exited 0.
    Completed,
    /// Exited non-zero; `ours`: it exited after this start began.
    Exited {
        /// The exit belongs to this start.
        ours: bool,
    },
    /// Created, restarting, …
    NotRunning,
}

/// The phase after observing `seen` in phase `now`. A container the start
/// did not reach yet stays waiting; an old exit (before this start) or a
/// not-yet-running container keeps its phase; the port phases survive
/// re-inspections that still find it running.
pub fn next_phase(now: Phase, seen: Seen) -> Phase {
    match seen {
        Seen::Running | Seen::Healthy if matches!(now, Phase::PortWait | Phase::PortAnswering) => {
            now
        }
        Seen::Running => Phase::Running,
        Seen::HealthStarting => Phase::HealthPending,
        Seen::Healthy => Phase::Healthy,
        Seen::Unhealthy => Phase::Unhealthy,
        Seen::Completed => Phase::Completed,
        Seen::Exited { ours: true } => Phase::Failed,
        Seen::Exited { ours: false } | Seen::NotRunning => now,
    }
}

/// One recorded container step, keyed by the container's id or name.
#[derive(Debug, Clone)]
struct Entry {
    keys: Vec<String>,
    phase: Phase,
    since: Instant,
}

#[derive(Debug, Clone)]
struct Record {
    began: Instant,
    entries: Vec<Entry>,
}

/// The Docker runtime's container steps per service. A `parking_lot` lock,
/// never held across an await.
#[derive(Debug, Default)]
pub struct Book {
    services: Mutex<HashMap<String, Record>>,
}

/// One entry per container (given by its keys), all waiting since `now`.
fn waiting(containers: Vec<Vec<String>>, now: Instant) -> Vec<Entry> {
    containers
        .into_iter()
        .map(|keys| Entry {
            keys,
            phase: Phase::Waiting,
            since: now,
        })
        .collect()
}

impl Book {
    /// A new start of `service` over its containers (each given by the
    /// keys it may be looked up with: id, name), all waiting.
    pub fn begin(&self, service: &str, containers: Vec<Vec<String>>) {
        let now = Instant::now();
        self.services.lock().insert(
            service.to_string(),
            Record {
                began: now,
                entries: waiting(containers, now),
            },
        );
    }

    /// Makes sure `service` has exactly these containers (a readiness wait
    /// that resolved them afresh): kept as they are when the keys match,
    /// else recorded anew, waiting, under the same start.
    pub fn ensure(&self, service: &str, containers: Vec<Vec<String>>) {
        let mut services = self.services.lock();
        let now = Instant::now();
        if let Some(record) = services.get_mut(service).filter(|r| {
            r.entries.len() == containers.len()
                && r.entries
                    .iter()
                    .zip(&containers)
                    .all(|(e, keys)| keys.iter().any(|k| e.keys.contains(k)))
        }) {
            // The same containers: learn the keys not known yet (a
            // container list begun by name, now also found by id).
            for (e, keys) in record.entries.iter_mut().zip(containers) {
                for k in keys {
                    if !e.keys.contains(&k) {
                        e.keys.push(k);
                    }
                }
            }
            return;
        }
        let began = services.get(service).map_or(now, |r| r.began);
        let entries = waiting(containers, now);
        services.insert(service.to_string(), Record { began, entries });
    }

    /// Sets the phase of `service`'s container known as `key` (its
    /// entry time changes only when the phase does).
    pub fn set(&self, service: &str, key: &str, phase: Phase) {
        self.update(service, key, |_| phase);
    }

    /// Moves `service`'s container known as `key` to phase `to` if it is
    /// in phase `from`.
    pub fn set_if(&self, service: &str, key: &str, from: Phase, to: Phase) {
        self.update(service, key, |now| if now == from { to } else { now });
    }

    /// Applies an observation to `service`'s container known as `key`.
    pub fn observe(&self, service: &str, key: &str, seen: Seen) {
        self.update(service, key, |now| next_phase(now, seen));
    }

    fn update(&self, service: &str, key: &str, f: impl FnOnce(Phase) -> Phase) {
        let mut services = self.services.lock();
        let Some(entry) = services.get_mut(service).and_then(|r| {
            r.entries
                .iter_mut()
                .find(|e| e.keys.iter().any(|k| k == key))
        }) else {
            return;
        };
        let next = f(entry.phase);
        if next != entry.phase {
            entry.phase = next;
            entry.since = Instant::now();
        }
    }

    /// A failed start: the first container not done yet (else the last)
    /// is marked failed, unless one already is.
    pub fn fail(&self, service: &str) {
        let mut services = self.services.lock();
        let Some(record) = services.get_mut(service) else {
            return;
        };
        if record.entries.iter().any(|e| e.phase == Phase::Failed) {
            return;
        }
        let at = record
            .entries
            .iter()
            .position(|e| !e.phase.is_done())
            .or(record.entries.len().checked_sub(1));
        if let Some(e) = at.and_then(|i| record.entries.get_mut(i)) {
            e.phase = Phase::Failed;
            e.since = Instant::now();
        }
    }

    /// Forgets `service` (stopped, or no longer configured).
    pub fn clear(&self, service: &str) {
        self.services.lock().remove(service);
    }

    /// Keeps only the services `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.services.lock().retain(|name, _| keep(name));
    }

    /// `service`'s container steps.
    pub fn get(&self, service: &str) -> Progress {
        let services = self.services.lock();
        let Some(record) = services.get(service) else {
            return Progress::default();
        };
        Progress {
            began: Some(record.began),
            steps: record
                .entries
                .iter()
                .map(|e| Step {
                    kind: StepKind::Container,
                    phase: e.phase,
                    since: e.since,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
