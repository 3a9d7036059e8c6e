//! What the agent remembers across restarts, per service, in
//! `<state_dir>/state.json`: idle timeouts set at run time (CLI/API), learned
//! start durations for the wait page's estimate, the RAM-savings totals and
//! the dashboard's history ([`timeline`]).
//!
//! Writes are atomic (temporary file, fsync, rename), so a crash mid-write
//! leaves the previous state. A file that cannot be parsed is never
//! overwritten: it is moved aside to `state.json.corrupt-<unix time>` and the
//! agent starts from empty state, saying so.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests_demands;
pub mod timeline;

pub use timeline::{StartRecord, Timeline, Transition};

/// File name of the state document inside `state_dir`.
pub const STATE_FILE: &str = "state.json";

/// What can go wrong reading or writing the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory or file could not be created, read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

/// Remembered facts about one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceMemory {
    /// Idle timeout set with `autostop set-timeout` or the API, in seconds;
    /// it overrides the config file's value until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_override_s: Option<u64>,
    /// Moving average of observed start durations, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_start_ms: Option<u64>,
    /// Last memory use observed while the service ran, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_memory_bytes: Option<u64>,
    /// Memory not used thanks to the service being stopped, in byte·seconds.
    pub memory_saved_byte_seconds: f64,
    /// The same savings by wall-clock hour (Unix time / 3600), the last
    /// [`SAVED_HOURS_KEPT`] hours only, for the "last 24 h" figure.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub memory_saved_by_hour: BTreeMap<u64, f64>,
    /// Requests that woke the service or found it pre-warmed, in Unix
    /// seconds, the last [`HABIT_DAYS_KEPT`] days: the pre-warm model's
    /// input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub demands: Vec<i64>,
    /// Past pre-warms as (Unix seconds, hit), the last [`HABIT_DAYS_KEPT`]
    /// days, oldest first: the pre-warm model's back-off reads them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prewarms: Vec<(i64, bool)>,
    /// The dashboard's history: transitions, starts, savings by day.
    #[serde(skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
}

/// How many days of demands and pre-warms are kept (the model looks four
/// weeks back, plus a week of margin).
pub const HABIT_DAYS_KEPT: i64 = 36;

/// How many hourly savings buckets are kept (24 full hours plus the
/// current one).
pub const SAVED_HOURS_KEPT: u64 = 25;

impl ServiceMemory {
    /// Whether only the dashboard's history is remembered (no setting,
    /// learned figure, saving or habit): what goes first when departed
    /// services are pruned. Written as a full destructuring so a new
    /// field has to be placed on one side or the other.
    pub fn history_only(&self) -> bool {
        let ServiceMemory {
            idle_timeout_override_s,
            learned_start_ms,
            last_memory_bytes,
            memory_saved_byte_seconds,
            memory_saved_by_hour,
            demands,
            prewarms,
            timeline: _,
        } = self;
        idle_timeout_override_s.is_none()
            && learned_start_ms.is_none()
            && last_memory_bytes.is_none()
            && *memory_saved_byte_seconds == 0.0
            && memory_saved_by_hour.is_empty()
            && demands.is_empty()
            && prewarms.is_empty()
    }

    /// The run-time idle timeout override, if any.
    pub fn idle_timeout_override(&self) -> Option<Duration> {
        self.idle_timeout_override_s.map(Duration::from_secs)
    }

    /// The learned start duration, if any.
    pub fn learned_start(&self) -> Option<Duration> {
        self.learned_start_ms.map(Duration::from_millis)
    }

    /// Adds saved memory (byte·seconds) to the total and to the bucket of
    /// `hour` (Unix time / 3600), forgetting buckets too old to matter.
    pub fn credit_saved(&mut self, byte_seconds: f64, hour: u64) {
        self.memory_saved_byte_seconds += byte_seconds;
        *self.memory_saved_by_hour.entry(hour).or_default() += byte_seconds;
        self.timeline.credit_day(byte_seconds, hour / 24);
        let oldest = hour.saturating_sub(SAVED_HOURS_KEPT - 1);
        self.memory_saved_by_hour.retain(|h, _| *h >= oldest);
    }

    /// Records a demand at `at` (Unix seconds), forgetting old ones. One a
    /// minute is kept: the pre-warm model reads demands as (day, minute)
    /// and counts days, so more in one minute change nothing, and a
    /// service woken every few seconds would otherwise keep every wake of
    /// [`HABIT_DAYS_KEPT`] days (hundreds of thousands, in memory and in
    /// `state.json`); this way at most 1,440 a day.
    pub fn note_demand(&mut self, at: i64) {
        let minute = at.div_euclid(60);
        if self
            .demands
            .binary_search_by_key(&minute, |d| d.div_euclid(60))
            .is_ok()
        {
            return;
        }
        self.demands.push(at);
        self.demands.sort_unstable();
        let oldest = at - HABIT_DAYS_KEPT * 86_400;
        self.demands.retain(|d| *d >= oldest);
    }

    /// Records how a pre-warm at `at` (Unix seconds) turned out.
    pub fn note_prewarm(&mut self, at: i64, hit: bool) {
        self.prewarms.push((at, hit));
        self.prewarms.sort_unstable_by_key(|(t, _)| *t);
        let oldest = at - HABIT_DAYS_KEPT * 86_400;
        self.prewarms.retain(|(t, _)| *t >= oldest);
    }

    /// Savings of the last 24 hours as of `hour`, in byte·seconds: the
    /// current hour's bucket and the 23 before it (so the window is between
    /// 23 and 24 hours long).
    pub fn saved_last_24h(&self, hour: u64) -> f64 {
        let oldest = hour.saturating_sub(23);
        self.memory_saved_by_hour
            .range(oldest..=hour)
            .map(|(_, v)| v)
            .sum()
    }
}

/// The wall-clock hour of `at` (Unix time / 3600), the key of the savings
/// buckets.
pub fn unix_hour(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 3600
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    services: BTreeMap<String, ServiceMemory>,
}

/// The state file and its content in memory.
#[derive(Debug)]
pub struct StateStore {
    /// `<state_dir>/state.json`.
    path: PathBuf,
    /// Current content; written back by [`StateStore::save`].
    doc: Document,
}

impl StateStore {
    /// Opens (or starts) the state in `dir`, creating the directory. Returns
    /// the store and, when the old file was unreadable and moved aside, a
    /// message saying where it went.
    pub fn open(dir: &Path) -> Result<(Self, Option<String>), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.into(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((
                    Self {
                        path,
                        doc: Document {
                            version: 1,
                            ..Document::default()
                        },
                    },
                    None,
                ));
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        match serde_json::from_str::<Document>(&text) {
            Ok(doc) => Ok((Self { path, doc }, None)),
            Err(parse) => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let aside = dir.join(format!("{STATE_FILE}.corrupt-{stamp}"));
                fs::rename(&path, &aside).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                let note = format!(
                    "{}:{}:{}: unreadable state ({parse}); kept as {} and starting empty",
                    path.display(),
                    parse.line(),
                    parse.column(),
                    aside.display()
                );
                Ok((
                    Self {
                        path,
                        doc: Document {
                            version: 1,
                            ..Document::default()
                        },
                    },
                    Some(note),
                ))
            }
        }
    }

    /// Reads the state without creating, moving or writing anything (for
    /// `autostop check`, which may run beside the agent or unprivileged).
    pub fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        let doc = serde_json::from_str(&text).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(Self { path, doc })
    }

    /// What is remembered about `service` (defaults when nothing is).
    pub fn service(&self, service: &str) -> ServiceMemory {
        self.doc.services.get(service).cloned().unwrap_or_default()
    }

    /// Changes what is remembered about `service`; call [`Self::save`] after.
    pub fn update(&mut self, service: &str, change: impl FnOnce(&mut ServiceMemory)) {
        change(self.doc.services.entry(service.to_owned()).or_default());
    }

    /// Everything remembered, by service.
    pub fn services(&self) -> &BTreeMap<String, ServiceMemory> {
        &self.doc.services
    }

    /// Forgets everything about `service`.
    pub fn forget(&mut self, service: &str) {
        self.doc.services.remove(service);
    }

    /// Writes the state atomically.
    pub fn save(&self) -> Result<(), StateError> {
        self.save_job()?()
    }

    /// The write [`Self::save`] does, prepared now (the document is
    /// serialised) and run later: the file I/O and its fsync belong on a
    /// blocking thread, not on a runtime worker.
    pub fn save_job(
        &self,
    ) -> Result<impl FnOnce() -> Result<(), StateError> + Send + 'static, StateError> {
        let path = self.path.clone();
        let mut text = serde_json::to_string_pretty(&self.doc).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        text.push('\n');
        Ok(move || {
            let io = |source| StateError::Io {
                path: path.clone(),
                source,
            };
            let tmp = path.with_extension("json.tmp");
            let mut file = fs::File::create(&tmp).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_starts_empty_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, note) = StateStore::open(dir.path()).expect("open");
        assert!(note.is_none());
        assert_eq!(store.service("web"), ServiceMemory::default());
        store.update("web", |m| {
            m.idle_timeout_override_s = Some(600);
            m.learned_start_ms = Some(1500);
        });
        store.save().expect("save");
        let (again, _) = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(
            again.service("web").idle_timeout_override(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            again.service("web").learned_start(),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn savings_keep_a_total_and_a_sliding_day() {
        let mut m = ServiceMemory::default();
        m.credit_saved(100.0, 1000);
        m.credit_saved(50.0, 1000);
        m.credit_saved(10.0, 1010);
        assert_eq!(m.memory_saved_byte_seconds, 160.0);
        assert_eq!(m.saved_last_24h(1010), 160.0);
        assert_eq!(m.saved_last_24h(1023), 160.0);
        // Hour 1000 leaves the window at 1024, and the file at 1025.
        assert_eq!(m.saved_last_24h(1024), 10.0);
        m.credit_saved(1.0, 1025);
        assert_eq!(m.memory_saved_by_hour.len(), 2, "hour 1000 is forgotten");
        assert_eq!(
            m.memory_saved_byte_seconds, 161.0,
            "the total never shrinks"
        );
    }

    #[test]
    fn savings_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = StateStore::open(dir.path()).expect("open");
        store.update("web", |m| {
            m.last_memory_bytes = Some(6_200_000_000);
            m.credit_saved(6.2e9 * 3600.0, 500_000);
        });
        store.save().expect("save");
        let (again, _) = StateStore::open(dir.path()).expect("reopen");
        let m = again.service("web");
        assert_eq!(m.last_memory_bytes, Some(6_200_000_000));
        assert_eq!(m.saved_last_24h(500_001), 6.2e9 * 3600.0);
    }

    #[test]
    fn a_file_without_the_timeline_loads_and_one_with_it_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        fs::write(
            &path,
            r#"{"version":1,"services":{"web":{"learned_start_ms":1500,
                "memory_saved_byte_seconds":10.0,"memory_saved_by_hour":{"480000":10.0}}}}"#,
        )
        .expect("write");
        let (mut store, note) = StateStore::open(dir.path()).expect("open");
        assert!(note.is_none(), "an older file is not corrupt: {note:?}");
        assert!(store.service("web").timeline.is_empty());
        store.update("web", |m| {
            m.timeline.note(
                Transition {
                    at_ms: 5,
                    state: crate::service::StateName::Starting,
                    cause: Some("api".into()),
                },
                None,
                Some(1500),
            );
            m.credit_saved(7.0, 480_001);
        });
        store.save().expect("save");
        let (again, _) = StateStore::open(dir.path()).expect("reopen");
        let timeline = again.service("web").timeline;
        assert_eq!(timeline.transitions.len(), 1);
        assert_eq!(timeline.saved_by_day.get(&20_000), Some(&7.0));
    }

    #[test]
    fn corrupt_file_is_kept_aside_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, "{\n  \"version\": 1,\n  \"services\": {oops}\n}\n").expect("write");
        let (store, note) = StateStore::open(dir.path()).expect("open");
        let note = note.expect("a note about the corrupt file");
        assert!(note.contains(":3:"), "names the line: {note}");
        let aside: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "corrupt file kept");
        let kept = fs::read_to_string(aside[0].path()).expect("read aside");
        assert!(kept.contains("{oops}"));
        store.save().expect("save fresh state");
    }
}
