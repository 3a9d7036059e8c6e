//! Idle policy: when a ready service has been quiet long enough to stop.
//!
//! A service is idle once `idle_timeout` has passed since the latest of its
//! last traffic, becoming ready and the last manual start, unless it is on
//! manual hold, kept awake for a reason (a `keep_warm` window, a dependent,
//! CPU use) or (with `hold_while_connected`) still has open connections.
//! When the last keep-awake reason goes, the idle timer restarts.

use std::time::Duration;

use tokio::time::Instant;

use super::effects::Activity;
use super::types::ServiceSettings;

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
}

impl IdleTracker {
    /// Folds a probe reading in (the kernel timestamp only moves forward).
    pub fn note(&mut self, a: Activity) {
        if a.last_activity > self.last_activity {
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

    /// Time since the latest activity reference; zero if there is none, so
    /// a service is never stopped without a reference point.
    pub fn idle_for(&self, now: Instant) -> Duration {
        [
            self.last_activity,
            self.ready_at,
            self.last_manual_start,
            self.kept_until,
        ]
        .into_iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |r| now.saturating_duration_since(r))
    }

    /// Whether the service should be stopped now (given it is ready).
    pub fn due(&self, a: Activity, settings: &ServiceSettings, now: Instant) -> bool {
        !self.hold
            && self.keep_awake.is_empty()
            && self.idle_for(now) >= settings.idle_timeout
            && !(settings.hold_while_connected && a.open_connections > 0)
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
}
