//! What the agent remembers across restarts, per service, in
//! `<state_dir>/state.json`: idle timeouts set at run time (CLI/API), learned
//! start durations for the wait page's estimate, the RAM-savings totals and
//! the dashboard's history ([`timeline`]); and, per container, the memory
//! limits a hibernation is changing ([`SavedLimits`], recorded before the
//! change and cleared once they are back: see [`crate::cgroup`]).
//!
//! The file's I/O is [`file`]'s: private (directory 0700, file 0600),
//! written atomically and durably (temporary file, fsync, rename, fsync of
//! the directory), so a crash mid-write leaves the previous state. A file
//! that cannot be used (not a regular file, over [`MAX_STATE_BYTES`], not
//! UTF-8, not the JSON below) is never overwritten nor deleted: it is
//! moved aside to `state.json.bad-<unix time>` and the agent starts from
//! empty state, saying so.
//!
//! The file is input: no slicing, indexing or unchecked arithmetic here
//! (denied below).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

mod file;
#[cfg(test)]
mod tests_demands;
pub mod timeline;

pub use crate::cgroup::SavedLimits;
pub use file::{DIR_MODE, FILE_MODE, MAX_STATE_BYTES};
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

/// [`HABIT_DAYS_KEPT`] in seconds.
const HABITS_KEPT_S: i64 = HABIT_DAYS_KEPT.saturating_mul(86_400);

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

    /// The run-time idle timeout override, if any and within the bounds
    /// every timeout is held to (a file edited by hand or written by an
    /// older agent may hold anything).
    pub fn idle_timeout_override(&self) -> Option<Duration> {
        self.idle_timeout_override_s
            .map(Duration::from_secs)
            .filter(|d| (crate::config::MIN_TIMEOUT..=crate::config::MAX_TIMEOUT).contains(d))
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
        let oldest = hour.saturating_sub(SAVED_HOURS_KEPT.saturating_sub(1));
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
        let oldest = at.saturating_sub(HABITS_KEPT_S);
        self.demands.retain(|d| *d >= oldest);
    }

    /// Records how a pre-warm at `at` (Unix seconds) turned out.
    pub fn note_prewarm(&mut self, at: i64, hit: bool) {
        self.prewarms.push((at, hit));
        self.prewarms.sort_unstable_by_key(|(t, _)| *t);
        let oldest = at.saturating_sub(HABITS_KEPT_S);
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

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    services: BTreeMap<String, ServiceMemory>,
    /// By container id: the limits a hibernation is changing, as they were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    limits: BTreeMap<String, SavedLimits>,
}

impl Document {
    fn empty() -> Self {
        Document {
            version: 1,
            ..Document::default()
        }
    }
}

/// The state file and its content in memory.
#[derive(Debug)]
pub struct StateStore {
    /// `<state_dir>/state.json`.
    path: PathBuf,
    /// Current content; written back by [`StateStore::save`].
    doc: Document,
}

/// Forgets saved idle-timeout overrides outside the accepted bounds (an
/// older agent accepted any length, and `Instant + timeout` then
/// overflowed at every start), saying which: the service falls back to its
/// configured timeout.
fn drop_out_of_range_overrides(doc: &mut Document, path: &Path, notes: &mut Vec<String>) {
    for (name, memory) in &mut doc.services {
        if let Some(seconds) = memory.idle_timeout_override_s {
            if memory.idle_timeout_override().is_none() {
                memory.idle_timeout_override_s = None;
                notes.push(format!(
                    "{}: service {name:?}: saved idle timeout of {seconds}s is outside 1s..=30days; \
                     using the configured timeout",
                    path.display()
                ));
            }
        }
    }
}

impl StateStore {
    /// Opens (or starts) the state in `dir`, creating the directory.
    /// Returns the store and what the log should say: a file that could
    /// not be used and where it was moved, modes that were tightened.
    pub fn open(dir: &Path) -> Result<(Self, Vec<String>), StateError> {
        let mut notes = Vec::new();
        file::prepare_dir(dir, &mut notes)?;
        let path = dir.join(STATE_FILE);
        let unusable = match file::read(&path)? {
            file::Read::Missing => {
                return Ok((
                    Self {
                        path,
                        doc: Document::empty(),
                    },
                    notes,
                ))
            }
            file::Read::Text(text) => match serde_json::from_str::<Document>(&text) {
                Ok(mut doc) => {
                    file::tighten(&path, FILE_MODE, &mut notes)?;
                    drop_out_of_range_overrides(&mut doc, &path, &mut notes);
                    return Ok((Self { path, doc }, notes));
                }
                Err(parse) => format!("line {} column {}: {parse}", parse.line(), parse.column()),
            },
            file::Read::Unusable(why) => why,
        };
        let aside = file::set_aside(&path)?;
        notes.push(format!(
            "{}: unusable state ({unusable}); kept as {} and starting empty",
            path.display(),
            aside.display()
        ));
        Ok((
            Self {
                path,
                doc: Document::empty(),
            },
            notes,
        ))
    }

    /// Reads the state without creating, moving or writing anything (for
    /// `autostop check`, which may run beside the agent or unprivileged).
    pub fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        let invalid = |why: String| StateError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        };
        let text = match file::read(&path)? {
            file::Read::Text(text) => text,
            file::Read::Missing => {
                return Err(StateError::Io {
                    path: path.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                })
            }
            file::Read::Unusable(why) => return Err(invalid(why)),
        };
        let doc = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
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

    /// The limits recorded for containers whose hibernation changed them.
    pub fn limits(&self) -> &BTreeMap<String, SavedLimits> {
        &self.doc.limits
    }

    /// Records `saved` for `container` (replacing an earlier record); call
    /// [`Self::save`] after.
    pub fn record_limits(&mut self, container: &str, saved: SavedLimits) {
        self.doc.limits.insert(container.to_owned(), saved);
    }

    /// Forgets `container`'s record if it is `saved` (`None`: whatever it
    /// is); whether one went.
    pub fn clear_limits(&mut self, container: &str, saved: Option<&SavedLimits>) -> bool {
        let matches = self
            .doc
            .limits
            .get(container)
            .is_some_and(|kept| saved.is_none_or(|s| s == kept));
        if matches {
            self.doc.limits.remove(container);
        }
        matches
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
        Ok(move || file::write_atomic(&path, text.as_bytes()))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_props;
