//! The dashboard's history of one service, kept in `state.json` beside the
//! rest of its [`ServiceMemory`](super::ServiceMemory): its state
//! transitions (the last [`TRANSITIONS_KEPT_MS`], at most
//! [`TRANSITIONS_KEPT`], plus the newest older one so the state at the
//! start of the window is always known), its starts with their duration
//! against the learned estimate of the time (the last [`STARTS_KEPT`]), and
//! the memory it saved by UTC day (the last [`SAVED_DAYS_KEPT`] days).
//!
//! Every bound is applied on each change, so the file never grows with
//! time. Old files without it load with an empty timeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::service::StateName;

/// How long transitions are kept: the dashboard shows 24 h, the rest is
/// margin (an agent down for a while, a clock step).
pub const TRANSITIONS_KEPT_MS: i64 = 48 * 3_600_000;
/// At most this many transitions (a flapping service).
pub const TRANSITIONS_KEPT: usize = 2_000;
/// How many start records are kept.
pub const STARTS_KEPT: usize = 50;
/// How many UTC days of savings are kept (14 full days and today).
pub const SAVED_DAYS_KEPT: u64 = 15;

/// A state the service entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// The state entered.
    pub state: StateName,
    /// A start's trigger (`syn`, `api`, `schedule`…), a stop's reason
    /// (`idle`, `manual`…), a failure's cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// One start of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    /// When it began, in Unix milliseconds.
    pub at_ms: i64,
    /// Begin to ready (or to the failure), in milliseconds.
    pub took_ms: u64,
    /// The learned estimate when it began, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_ms: Option<u64>,
    /// What triggered it.
    pub trigger: String,
    /// It became ready (`false`: it failed).
    pub ok: bool,
}

/// A start under way, waiting for its outcome (not persisted: a start
/// that an agent restart interrupts has no outcome to record).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    at_ms: i64,
    trigger: String,
    estimate_ms: Option<u64>,
}

/// The history of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeline {
    /// State transitions, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// Starts, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub starts: Vec<StartRecord>,
    /// Saved byte·seconds by UTC day (Unix time / 86 400).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub saved_by_day: BTreeMap<u64, f64>,
    #[serde(skip)]
    pending: Option<Pending>,
}

impl Timeline {
    /// Nothing recorded (left out of the file).
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.starts.is_empty() && self.saved_by_day.is_empty()
    }

    /// Records `transition`; `took_ms` is a ready start's duration as the
    /// state machine measured it, `learned_ms` the learned estimate now.
    /// A start that becomes ready with a duration, or fails, is recorded
    /// as a start.
    pub fn note(&mut self, transition: Transition, took_ms: Option<u64>, learned_ms: Option<u64>) {
        let at_ms = transition.at_ms;
        match transition.state {
            StateName::Starting => {
                self.pending = Some(Pending {
                    at_ms,
                    trigger: transition.cause.clone().unwrap_or_default(),
                    estimate_ms: learned_ms,
                });
            }
            StateName::Ready => {
                if let (Some(p), Some(took_ms)) = (self.pending.take(), took_ms) {
                    self.push_start(p, took_ms, true);
                }
            }
            StateName::Failed => {
                if let Some(p) = self.pending.take() {
                    let took_ms = at_ms
                        .checked_sub(p.at_ms)
                        .and_then(|d| u64::try_from(d).ok())
                        .unwrap_or(0);
                    self.push_start(p, took_ms, false);
                }
            }
            _ => self.pending = None,
        }
        self.transitions.push(transition);
        self.transitions.sort_by_key(|t| t.at_ms);
        self.prune(at_ms);
    }

    fn push_start(&mut self, p: Pending, took_ms: u64, ok: bool) {
        self.starts.push(StartRecord {
            at_ms: p.at_ms,
            took_ms,
            estimate_ms: p.estimate_ms,
            trigger: p.trigger,
            ok,
        });
        let excess = self.starts.len().saturating_sub(STARTS_KEPT);
        self.starts.drain(..excess);
    }

    /// Forgets transitions older than [`TRANSITIONS_KEPT_MS`] before
    /// `now_ms` but the newest of them, then any beyond
    /// [`TRANSITIONS_KEPT`], oldest first.
    fn prune(&mut self, now_ms: i64) {
        let oldest = now_ms.saturating_sub(TRANSITIONS_KEPT_MS);
        let old = self.transitions.partition_point(|t| t.at_ms < oldest);
        self.transitions.drain(..old.saturating_sub(1));
        let excess = self.transitions.len().saturating_sub(TRANSITIONS_KEPT);
        self.transitions.drain(..excess);
    }

    /// Adds saved byte·seconds to UTC day `day`, forgetting old days.
    pub fn credit_day(&mut self, byte_seconds: f64, day: u64) {
        *self.saved_by_day.entry(day).or_default() += byte_seconds;
        let oldest = day.saturating_sub(SAVED_DAYS_KEPT.saturating_sub(1));
        self.saved_by_day.retain(|d, _| *d >= oldest);
    }

    /// The state at `from_ms` (the newest transition at or before it;
    /// `None` when none is known) and the transitions after it.
    pub fn window(&self, from_ms: i64) -> (Option<StateName>, &[Transition]) {
        let split = self.transitions.partition_point(|t| t.at_ms <= from_ms);
        let before = split
            .checked_sub(1)
            .and_then(|i| self.transitions.get(i))
            .map(|t| t.state);
        (before, self.transitions.get(split..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        reason = "tests: a panic is a failure"
    )]

    use super::*;

    fn at(ms: i64, state: StateName, cause: &str) -> Transition {
        Transition {
            at_ms: ms,
            state,
            cause: (!cause.is_empty()).then(|| cause.to_owned()),
        }
    }

    #[test]
    fn starts_pair_with_their_outcome_and_estimate() {
        let mut t = Timeline::default();
        t.note(at(1_000, StateName::Starting, "api"), None, Some(900));
        t.note(at(2_500, StateName::Ready, ""), Some(1_500), Some(1_000));
        t.note(at(9_000, StateName::Stopped, "idle"), None, Some(1_000));
        t.note(at(10_000, StateName::Starting, "syn"), None, Some(1_000));
        t.note(at(13_000, StateName::Failed, "exited"), None, Some(1_000));
        // A ready without a start of ours (adopted) records no start.
        t.note(at(20_000, StateName::Ready, ""), None, Some(1_000));
        assert_eq!(
            t.starts,
            vec![
                StartRecord {
                    at_ms: 1_000,
                    took_ms: 1_500,
                    estimate_ms: Some(900),
                    trigger: "api".into(),
                    ok: true,
                },
                StartRecord {
                    at_ms: 10_000,
                    took_ms: 3_000,
                    estimate_ms: Some(1_000),
                    trigger: "syn".into(),
                    ok: false,
                },
            ]
        );
        assert_eq!(t.transitions.len(), 6);
    }

    #[test]
    fn transitions_are_bounded_in_age_but_the_state_stays_known() {
        let mut t = Timeline::default();
        t.note(at(0, StateName::Ready, ""), None, None);
        t.note(at(1_000, StateName::Stopped, "idle"), None, None);
        let now = 1_000 + TRANSITIONS_KEPT_MS + 5_000;
        t.note(at(now, StateName::Starting, "api"), None, None);
        // The first is gone; the stop, older than the bound, stays as the
        // state at the window's start.
        assert_eq!(t.transitions.len(), 2);
        let (before, after) = t.window(now - 24 * 3_600_000);
        assert_eq!(before, Some(StateName::Stopped));
        assert_eq!(after.len(), 1);
        assert_eq!(t.window(-1).0, None, "nothing known that early");
    }

    #[test]
    fn transitions_and_starts_are_bounded_in_count() {
        let mut t = Timeline::default();
        for i in 0..(TRANSITIONS_KEPT as i64 + 100) {
            t.note(at(i * 10, StateName::Starting, "syn"), None, None);
            t.note(at(i * 10 + 5, StateName::Ready, ""), Some(5), None);
        }
        assert_eq!(t.transitions.len(), TRANSITIONS_KEPT);
        assert_eq!(t.starts.len(), STARTS_KEPT);
        let newest = t.transitions.last().map(|t| t.at_ms);
        assert_eq!(newest, Some((TRANSITIONS_KEPT as i64 + 99) * 10 + 5));
    }

    #[test]
    fn savings_by_day_keep_fifteen_days() {
        let mut t = Timeline::default();
        for day in 100..130 {
            t.credit_day(1.0, day);
            t.credit_day(2.0, day);
        }
        assert_eq!(t.saved_by_day.len(), SAVED_DAYS_KEPT as usize);
        assert_eq!(t.saved_by_day.keys().next(), Some(&115));
        assert_eq!(t.saved_by_day.get(&129), Some(&3.0));
    }
}
