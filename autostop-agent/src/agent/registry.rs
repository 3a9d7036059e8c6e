//! The one registry of managed services: one [`ServiceRecord`] per service,
//! holding everything that belongs to it (its config, its kernel index, its
//! state machine's handle, its held-connection permits, and the live values
//! other tasks keep for it in [`ServiceCells`]). Dropping a record drops
//! all of that at once.
//!
//! [`Registry`] is owned by the service table (the agent's main task), the
//! only place services are added and removed. Every change publishes an
//! immutable [`Directory`] (by name, by kernel index) and the cold-start
//! routes (by published port); the other tasks read those snapshots
//! through a [`DirectoryReader`] or the [`Routes`] receiver, without a
//! lock they could contend on or poison.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{watch, Semaphore};

use super::ids::ServiceId;
use crate::{
    coldstart::{Route, RouteTable, Routes},
    config::{Protocol, ServiceConfig},
    docker::MemoryUse,
    service::ServiceHandle,
};

/// How far back "starts in the last 24 h" looks.
pub const START_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// A service's recent starts (written by the history observer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Wall-clock times of the starts of the last [`START_HISTORY`].
    pub starts: VecDeque<SystemTime>,
    /// Duration of the last start the agent made.
    pub last_start: Option<Duration>,
}

impl History {
    /// Records a start at `now`, forgetting those older than a day.
    pub fn started(&mut self, now: SystemTime) {
        self.starts.push_back(now);
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() > START_HISTORY)
        {
            self.starts.pop_front();
        }
    }

    /// Starts within the day before `now`.
    pub fn starts_24h(&self, now: SystemTime) -> u32 {
        let recent = self
            .starts
            .iter()
            .filter(|t| now.duration_since(**t).unwrap_or_default() < START_HISTORY)
            .count();
        u32::try_from(recent).unwrap_or(u32::MAX)
    }
}

/// The live values other tasks keep for one service. Each has one writer
/// (named below) and is read through its `watch` channel.
#[derive(Debug, Default)]
pub struct ServiceCells {
    /// What keeps part of the service from working as configured (a port
    /// no container publishes), as last found (endpoint refresher).
    pub problems: watch::Sender<Vec<String>>,
    /// Its bindings another program listens on, one problem entry each
    /// (port guard).
    pub ports: watch::Sender<Vec<String>>,
    /// Recent starts (history observer).
    pub history: watch::Sender<History>,
    /// The latest memory sample while it runs (memory sampler).
    pub memory: watch::Sender<Option<MemoryUse>>,
    /// Each container's init PID and container port, to count open
    /// connections inside its namespace (endpoint refresher).
    pub listeners: watch::Sender<Vec<(u32, u16)>>,
    /// Its next `keep_warm` window and pre-warm (keep-awake planner).
    pub awake: watch::Sender<super::awake::AwakeView>,
}

impl ServiceCells {
    /// Records what keeps `name` from working as configured (empty: all is
    /// well); a new problem is logged once.
    pub fn set_problems(&self, name: &str, problems: Vec<String>) {
        self.problems.send_if_modified(|known| {
            for problem in problems.iter().filter(|p| !known.contains(p)) {
                tracing::warn!(service = name, event = "problem", "{problem}");
            }
            if *known == problems {
                return false;
            }
            *known = problems;
            true
        });
    }
}

/// One managed service.
#[derive(Debug)]
pub struct ServiceRecord {
    /// Its kernel index (steering and target entries, counters).
    pub id: ServiceId,
    /// Its configuration.
    pub config: ServiceConfig,
    /// Its state machine.
    pub handle: ServiceHandle,
    /// Held-connection permits of the cold-start listener (held = max -
    /// available).
    pub held: Arc<Semaphore>,
    /// Paces the hand-over of held connections (see
    /// [`crate::coldstart::HANDOVER_WINDOW`]).
    pub handover: Arc<Semaphore>,
    /// Live values kept by other tasks; shared by every version of the
    /// record (a reload that only changes settings keeps them).
    pub cells: Arc<ServiceCells>,
}

impl ServiceRecord {
    /// The record's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether `other` is the same incarnation of the service (same index,
    /// same cells): not a service removed and added again meanwhile.
    pub fn same_incarnation(&self, other: &ServiceRecord) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.cells, &other.cells)
    }

    /// The cold-start route of each of its TCP ports.
    fn routes(&self) -> impl Iterator<Item = (u16, Route)> + '_ {
        self.config
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| {
                (
                    p.port,
                    Route {
                        service: self.config.name.clone(),
                        mode: self.config.mode,
                        theme: self.config.theme.clone(),
                        handle: self.handle.clone(),
                        start_timeout: self.config.start_timeout,
                        held: Arc::clone(&self.held),
                        handover: Arc::clone(&self.handover),
                    },
                )
            })
    }
}

/// A snapshot of the managed services.
#[derive(Debug, Default)]
pub struct Directory {
    by_name: BTreeMap<String, Arc<ServiceRecord>>,
    by_id: HashMap<ServiceId, Arc<ServiceRecord>>,
}

impl Directory {
    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ServiceRecord>> {
        self.by_name.get(name)
    }

    /// The service under kernel index `id`.
    pub fn by_id(&self, id: ServiceId) -> Option<&Arc<ServiceRecord>> {
        self.by_id.get(&id)
    }

    /// Every service, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceRecord>> {
        self.by_name.values()
    }

    /// How many services there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `record` is still managed as that same incarnation.
    pub fn holds(&self, record: &ServiceRecord) -> bool {
        self.by_id
            .get(&record.id)
            .is_some_and(|now| now.same_incarnation(record))
    }
}

/// Reads the latest published [`Directory`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DirectoryReader(watch::Receiver<Arc<Directory>>);

impl DirectoryReader {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Directory> {
        Arc::clone(&self.0.borrow())
    }

    /// The service named `name` now.
    pub fn get(&self, name: &str) -> Option<Arc<ServiceRecord>> {
        self.0.borrow().get(name).cloned()
    }

    /// A receiver told of every new snapshot (services added, removed or
    /// reconfigured).
    pub fn changes(&self) -> watch::Receiver<Arc<Directory>> {
        let mut changes = self.0.clone();
        changes.mark_unchanged();
        changes
    }
}

/// The registry: the records and their publication.
pub struct Registry {
    records: BTreeMap<String, Arc<ServiceRecord>>,
    directory: watch::Sender<Arc<Directory>>,
    routes: watch::Sender<RouteTable>,
}

impl Registry {
    /// An empty registry, its directory reader and the cold-start routes.
    pub fn new() -> (Self, DirectoryReader, Routes) {
        let (directory, reader) = watch::channel(Arc::new(Directory::default()));
        let (routes, routes_rx) = watch::channel(RouteTable::default());
        (
            Self {
                records: BTreeMap::new(),
                directory,
                routes,
            },
            DirectoryReader(reader),
            routes_rx,
        )
    }

    /// The record of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ServiceRecord>> {
        self.records.get(name)
    }

    /// Every record, by name.
    pub fn records(&self) -> impl Iterator<Item = &Arc<ServiceRecord>> {
        self.records.values()
    }

    /// Adds or replaces the record of its name, and publishes.
    pub fn insert(&mut self, record: ServiceRecord) -> Arc<ServiceRecord> {
        let record = Arc::new(record);
        self.records
            .insert(record.config.name.clone(), Arc::clone(&record));
        self.publish();
        record
    }

    /// Removes the record of `name`, and publishes.
    pub fn remove(&mut self, name: &str) -> Option<Arc<ServiceRecord>> {
        let record = self.records.remove(name)?;
        self.publish();
        Some(record)
    }

    fn publish(&self) {
        let directory = Directory {
            by_name: self.records.clone(),
            by_id: self
                .records
                .values()
                .map(|r| (r.id, Arc::clone(r)))
                .collect(),
        };
        self.directory.send_replace(Arc::new(directory));
        let routes: HashMap<u16, Route> = self.records.values().flat_map(|r| r.routes()).collect();
        self.routes.send_replace(Arc::new(routes));
    }
}
