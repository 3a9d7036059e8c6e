//! Idle policy: when a ready service has been quiet long enough to stop.
//!
//! A service is idle once `idle_timeout` has passed since the latest of its
//! last traffic, becoming ready and the last manual start, unless it is on
//! manual hold, kept awake for a reason (a `keep_warm` window, a dependent,
//! CPU use) or (with `hold_while_connected`) still has open connections.
//! When the last keep-awake reason goes, the idle timer restarts.
//!
//! The actor does not poll: [`IdleTracker::deadline`] is the one instant at
//! which the service could next be due, computed from the latest activity
//! reference. When that timer fires, the kernel's stamp is read; traffic
//! since moves the deadline on (the timer is re-armed), otherwise the
//! service is stopped. Only a service kept up by its open connections is
//! looked at again every [`CONNECTED_RECHECK`].

use std::time::Duration;

use tokio::time::Instant;

use super::effects::Activity;
use super::types::ServiceSettings;

/// How often a service past its idle timeout but kept up by open
/// connections (`hold_while_connected`) is checked again.
pub const CONNECTED_RECHECK: Duration = Duration::from_secs(1);

/// Kernel stamps converted to `Instant`s jitter by microseconds from one
/// read to the next; a move smaller than this is not new traffic (else a
/// timer at the deadline could be re-armed over and over by the jitter).
const STAMP_JITTER: Duration = Duration::from_millis(10);

/// Idle bookkeeping of one service.
#[derive(Debug, Clone, Default)]
pub struct IdleTracker {
    /// Manual hold: never idle while set.
    pub hold: bool,
    /// When the service last became ready (a fresh idle timer).
    pub ready_at: Option<Instant>,
    /// Last manual start, which counts as activity.
    pub last_manual_start: Option<Instant>,
    /// Latest traffic reported by the probe.
    pub last_activity: Option<Instant>,
    /// Why it is kept awake (see [`super::ServiceStatus::keep_awake`]).
    pub keep_awake: Vec<String>,
    /// When the last keep-awake reason went (a fresh idle timer).
    pub kept_until: Option<Instant>,
    /// Set when the timeout had passed but open connections kept the
    /// service up: look again then.
    pub recheck_at: Option<Instant>,
}

impl IdleTracker {
    /// Folds a probe reading in (the kernel timestamp only moves forward).
    pub fn note(&mut self, a: Activity) {
        let moved = match (a.last_activity, self.last_activity) {
            (Some(new), Some(old)) => new > old + STAMP_JITTER,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if moved {
            self.last_activity = a.last_activity;
        }
    }

    /// Replaces the keep-awake reasons; when the last one goes the idle
    /// timer restarts at `now`.
    pub fn keep_awake(&mut self, reasons: Vec<String>, now: Instant) {
        if reasons.is_empty() && !self.keep_awake.is_empty() {
            self.kept_until = Some(now);
        }
        self.keep_awake = reasons;
    }

    /// When the service would next be due (given it is ready): the latest
    /// reference plus `idle_timeout`, or the connection recheck if later.
    /// `None` on manual hold, while kept awake, or without any reference.
    pub fn deadline(&self, settings: &ServiceSettings) -> Option<Instant> {
        if self.hold || !self.keep_awake.is_empty() {
            return None;
        }
        // Checked: the timeout is bounded at every entry (30 days), this
        // keeps a value that slipped past from becoming a panic.
        let due = self.reference()?.checked_add(settings.idle_timeout)?;
        Some(self.recheck_at.map_or(due, |again| again.max(due)))
    }

    /// Time since the latest activity reference; zero if there is none, so
    /// a service is never stopped without a reference point.
    pub fn idle_for(&self, now: Instant) -> Duration {
        self.reference()
            .map_or(Duration::ZERO, |r| now.saturating_duration_since(r))
    }

    /// The latest of the last traffic, becoming ready, the last manual
    /// start and the end of the last keep-awake reason.
    fn reference(&self) -> Option<Instant> {
        [
            self.last_activity,
            self.ready_at,
            self.last_manual_start,
            self.kept_until,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// Whether the service should be stopped now (given it is ready).
    pub fn due(&self, a: Activity, settings: &ServiceSettings, now: Instant) -> bool {
        !self.hold
            && self.keep_awake.is_empty()
            && self.quiet_long_enough(settings, now)
            && !self.held_by_connections(a, settings)
    }

    /// The timeout has passed since the latest reference.
    pub fn quiet_long_enough(&self, settings: &ServiceSettings, now: Instant) -> bool {
        self.idle_for(now) >= settings.idle_timeout
    }

    /// Open connections keep the service up.
    pub fn held_by_connections(&self, a: Activity, settings: &ServiceSettings) -> bool {
        settings.hold_while_connected && a.open_connections > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn latest_reference_counts_and_guards_apply() {
        let t0 = Instant::now();
        let s = ServiceSettings {
            idle_timeout: Duration::from_secs(60),
            ..ServiceSettings::default()
        };
        let mut idle = IdleTracker {
            ready_at: Some(t0),
            ..IdleTracker::default()
        };
        let quiet = Activity::default();
        assert!(!idle.due(quiet, &s, t0 + Duration::from_secs(59)));
        assert!(idle.due(quiet, &s, t0 + Duration::from_secs(60)));
        idle.last_manual_start = Some(t0 + Duration::from_secs(30));
        assert!(!idle.due(quiet, &s, t0 + Duration::from_secs(60)));
        idle.note(Activity {
            last_activity: Some(t0 + Duration::from_secs(50)),
            open_connections: 0,
        });
        assert_eq!(
            idle.idle_for(t0 + Duration::from_secs(110)),
            Duration::from_secs(60)
        );
        let busy = Activity {
            open_connections: 1,
            ..quiet
        };
        assert!(!idle.due(busy, &s, t0 + Duration::from_secs(500)));
        idle.hold = true;
        assert!(!idle.due(quiet, &s, t0 + Duration::from_secs(500)));
        idle.hold = false;
        idle.keep_awake(vec!["needed by app".into()], t0);
        assert!(!idle.due(quiet, &s, t0 + Duration::from_secs(500)));
        idle.keep_awake(Vec::new(), t0 + Duration::from_secs(500));
        assert!(!idle.due(quiet, &s, t0 + Duration::from_secs(559)));
        assert!(idle.due(quiet, &s, t0 + Duration::from_secs(560)));
        assert_eq!(IdleTracker::default().idle_for(t0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_follows_the_latest_reference() {
        let t0 = Instant::now();
        let s = ServiceSettings {
            idle_timeout: Duration::from_secs(60),
            ..ServiceSettings::default()
        };
        let mut idle = IdleTracker::default();
        assert_eq!(idle.deadline(&s), None, "no reference, no timer");
        idle.ready_at = Some(t0);
        assert_eq!(idle.deadline(&s), Some(t0 + Duration::from_secs(60)));
        idle.note(Activity {
            last_activity: Some(t0 + Duration::from_secs(45)),
            open_connections: 0,
        });
        assert_eq!(idle.deadline(&s), Some(t0 + Duration::from_secs(105)));
        // An older stamp (or the same one read again) does not move it.
        idle.note(Activity {
            last_activity: Some(t0 + Duration::from_secs(10)),
            open_connections: 0,
        });
        assert_eq!(idle.deadline(&s), Some(t0 + Duration::from_secs(105)));
        idle.recheck_at = Some(t0 + Duration::from_secs(200));
        assert_eq!(idle.deadline(&s), Some(t0 + Duration::from_secs(200)));
        idle.hold = true;
        assert_eq!(idle.deadline(&s), None, "a manual hold needs no timer");
    }

    #[tokio::test(start_paused = true)]
    async fn stamp_jitter_is_not_traffic() {
        let t0 = Instant::now();
        let mut idle = IdleTracker::default();
        let at = |ms: u64| Activity {
            last_activity: Some(t0 + Duration::from_millis(ms)),
            open_connections: 0,
        };
        idle.note(at(1_000));
        idle.note(at(1_003));
        assert_eq!(idle.last_activity, Some(t0 + Duration::from_millis(1_000)));
        idle.note(at(1_500));
        assert_eq!(idle.last_activity, Some(t0 + Duration::from_millis(1_500)));
    }
}
