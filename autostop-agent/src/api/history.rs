//! `GET /api/history`: what the dashboard draws besides the table. Per
//! service, its transitions in the last 24 hours with the state at the
//! window's start, its recent starts against the learned estimate of the
//! time, and the memory it saved on each of the last 14 UTC days; for the
//! host, its RAM in use and what the sleeping services would use awake.
//!
//! The views are built from what the state file remembers
//! ([`crate::state::Timeline`]) by [`service_history`], a pure function.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use super::{handlers, ApiState};
use crate::{
    service::StateName,
    state::{ServiceMemory, StartRecord, Transition},
};

/// The timeline's span.
pub const WINDOW_MS: i64 = 24 * 3_600_000;
/// How many days of savings are shown (today and the 13 before).
pub const DAYS: u64 = 14;

/// The dashboard's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    /// The agent's clock when answering (Unix milliseconds).
    pub now_ms: i64,
    /// Start of the timeline: `now_ms` − 24 h.
    pub window_start_ms: i64,
    /// The UTC days of `saved_gb_h_by_day`, oldest first (`YYYY-MM-DD`).
    pub days: Vec<String>,
    /// The host's RAM.
    pub host: HostMemoryView,
    /// One entry per managed service, in config order.
    pub services: Vec<ServiceHistoryView>,
}

/// The host's RAM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemoryView {
    /// `MemTotal` of `/proc/meminfo`.
    pub total_bytes: u64,
    /// `MemTotal` − `MemAvailable`.
    pub used_bytes: u64,
    /// What the stopped services used when last awake, plus what the
    /// hibernated ones no longer hold.
    pub saved_bytes: u64,
}

/// One service's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceHistoryView {
    /// Service name.
    pub name: String,
    /// Its state at `window_start_ms` (`unknown` when nothing recorded
    /// says).
    pub state_at_start: StateName,
    /// Its transitions after `window_start_ms`, oldest first.
    pub transitions: Vec<Transition>,
    /// Its recent starts, oldest first.
    pub starts: Vec<StartRecord>,
    /// The learned start estimate now, in milliseconds.
    pub estimate_ms: Option<u64>,
    /// Saved GB·h on each day of [`HistoryView::days`].
    pub saved_gb_h_by_day: Vec<f64>,
}

/// The view of `name` at `now_ms` from what is remembered of it; `current`
/// is its state now, the state at the window's start when nothing was
/// ever recorded (no step since the agent adopted it).
pub fn service_history(
    name: &str,
    memory: &ServiceMemory,
    current: StateName,
    now_ms: i64,
) -> ServiceHistoryView {
    let timeline = &memory.timeline;
    let (before, after) = timeline.window(now_ms.saturating_sub(WINDOW_MS));
    let state_at_start = match before {
        Some(state) => state,
        None if timeline.transitions.is_empty() => current,
        None => StateName::Unknown,
    };
    let saved_gb_h_by_day = day_numbers(now_ms)
        .map(|day| {
            let saved = u64::try_from(day)
                .ok()
                .and_then(|day| timeline.saved_by_day.get(&day));
            saved.copied().unwrap_or(0.0) / 1e9 / 3600.0 + 0.0
        })
        .collect();
    ServiceHistoryView {
        name: name.to_owned(),
        state_at_start,
        transitions: after.to_vec(),
        starts: timeline.starts.clone(),
        estimate_ms: memory.learned_start_ms,
        saved_gb_h_by_day,
    }
}

/// The Unix day numbers of the [`DAYS`] days ending with the one of
/// `now_ms`.
fn day_numbers(now_ms: i64) -> std::ops::RangeInclusive<i64> {
    let today = now_ms.div_euclid(86_400_000);
    today.saturating_add(1).saturating_sub(DAYS as i64)..=today
}

/// The UTC dates of the [`DAYS`] days ending with the one of `now_ms`.
pub fn days(now_ms: i64) -> Vec<String> {
    day_numbers(now_ms)
        .map(|day| {
            jiff::Timestamp::from_second(day.saturating_mul(86_400))
                .map(|t| t.strftime("%Y-%m-%d").to_string())
                .unwrap_or_default()
        })
        .collect()
}

pub(super) async fn history(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = handlers::refusal(&state, &headers) {
        return denied;
    }
    match state.control.history() {
        Some(view) => Json(view).into_response(),
        None => handlers::problem(StatusCode::NOT_FOUND, "this agent keeps no history"),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests {
    use super::*;

    fn step(at_ms: i64, state: StateName) -> Transition {
        Transition {
            at_ms,
            state,
            cause: None,
        }
    }

    const NOW: i64 = 20_000 * 86_400_000 + 3_600_000;

    #[test]
    fn the_window_starts_with_the_state_then() {
        let mut memory = ServiceMemory::default();
        memory.timeline.transitions = vec![
            step(NOW - WINDOW_MS - 10, StateName::Stopped),
            step(NOW - 5_000, StateName::Starting),
            step(NOW - 1_000, StateName::Ready),
        ];
        let view = service_history("web", &memory, StateName::Ready, NOW);
        assert_eq!(view.state_at_start, StateName::Stopped);
        assert_eq!(view.transitions, memory.timeline.transitions[1..].to_vec());
    }

    #[test]
    fn without_records_the_state_is_today_s_or_unknown() {
        let mut memory = ServiceMemory::default();
        let view = service_history("web", &memory, StateName::Stopped, NOW);
        assert_eq!(view.state_at_start, StateName::Stopped);
        assert!(view.transitions.is_empty());
        memory.timeline.transitions = vec![step(NOW - 5_000, StateName::Starting)];
        let view = service_history("web", &memory, StateName::Ready, NOW);
        assert_eq!(view.state_at_start, StateName::Unknown);
    }

    #[test]
    fn savings_by_day_line_up_with_the_days() {
        let mut memory = ServiceMemory::default();
        // 3.6e12 byte·s = 1 GB·h, today; 2 GB·h 13 days ago; older: out.
        memory.timeline.credit_day(3.6e12, 20_000);
        memory.timeline.credit_day(7.2e12, 20_000 - 13);
        memory.timeline.credit_day(7.2e12, 20_000 - 14);
        let view = service_history("web", &memory, StateName::Stopped, NOW);
        assert_eq!(view.saved_gb_h_by_day.len(), DAYS as usize);
        assert_eq!(view.saved_gb_h_by_day[13], 1.0);
        assert_eq!(view.saved_gb_h_by_day[0], 2.0);
        assert_eq!(view.saved_gb_h_by_day.iter().sum::<f64>(), 3.0);
        let days = days(NOW);
        assert_eq!(days.len(), DAYS as usize);
        assert_eq!(days[13], "2024-10-04");
        assert_eq!(days[0], "2024-09-21");
    }
}
