//! Why a service must stay awake now, one piece at a time, pure: the
//! `keep_warm` window it is in, the dependents that run, its CPU use over
//! the last minute. The planner ([`super`]) gathers them and sends them to
//! the service's state machine.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{tz::TimeZone, Timestamp};
use tokio::time::Instant;

use crate::service::{ServiceState, ServiceStatus, StartBlock};

/// How far back the CPU rate is read.
pub const CPU_WINDOW: Duration = Duration::from_secs(60);

/// A local time as operators read it, e.g. `Mon 19:00`.
pub fn local_time(at: Timestamp, tz: &TimeZone) -> String {
    at.to_zoned_datetime(tz.clone())
        .strftime("%a %H:%M")
        .to_string()
}

/// The reason a `keep_warm` window closing at `until` gives.
pub fn window_reason(until: Timestamp, tz: &TimeZone) -> String {
    format!("keep_warm until {}", local_time(until, tz))
}

/// The reason running dependents give, if any runs.
pub fn needed_reason(running_dependents: &[String]) -> Option<String> {
    (!running_dependents.is_empty()).then(|| format!("needed by {}", running_dependents.join(", ")))
}

/// Whether a dependent in this state needs its requirements awake.
pub fn needs_requirements(state: &ServiceState) -> bool {
    matches!(state, ServiceState::Starting | ServiceState::Ready)
}

/// Whether a wake would start (or thaw) the service now (it is down or
/// hibernated and not held back by its crash-loop guard).
pub fn startable(status: &ServiceStatus) -> bool {
    match status.state {
        ServiceState::Stopped | ServiceState::Hibernated => true,
        ServiceState::Failed { .. } => status.start_block != Some(StartBlock::CrashLoop),
        _ => false,
    }
}

/// CPU time samples of one running service, for its rate over the last
/// minute.
#[derive(Debug, Default, Clone)]
pub struct CpuWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl CpuWindow {
    /// Adds a new cumulative CPU time reading taken at `at` (a counter
    /// that went back, a restarted container, starts over).
    pub fn push(&mut self, at: Instant, cpu_ns: u64) {
        if self.samples.back().is_some_and(|&(_, last)| cpu_ns < last) {
            self.samples.clear();
        }
        self.samples.push_back((at, cpu_ns));
        // Keep one sample older than the window, as its start.
        while self.samples.len() > 2 && self.samples[1].0 + CPU_WINDOW <= at {
            self.samples.pop_front();
        }
    }

    /// Forgets every sample (the service stopped).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Percent of one core used between the oldest and newest sample
    /// (about the last minute); `None` before two samples.
    pub fn percent(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.saturating_duration_since(t0).as_nanos();
        (span > 0).then(|| (c1.saturating_sub(c0)) as f64 * 100.0 / span as f64)
    }

    /// The busy reason, if the rate is at or above `limit` percent.
    pub fn busy_reason(&self, limit: u32) -> Option<String> {
        let percent = self.percent()?;
        (percent >= f64::from(limit)).then(|| format!("busy, {percent:.0} % CPU"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cpu_rate_over_the_last_minute() {
        let t0 = Instant::now();
        let mut cpu = CpuWindow::default();
        cpu.push(t0, 1_000_000_000);
        assert_eq!(cpu.percent(), None);
        // 3 s of CPU in 15 s: 20 % of a core.
        cpu.push(t0 + Duration::from_secs(15), 4_000_000_000);
        assert_eq!(cpu.busy_reason(20).as_deref(), Some("busy, 20 % CPU"));
        assert_eq!(cpu.busy_reason(21), None);
        // Quiet for a minute and a half: the burst leaves the window.
        cpu.push(t0 + Duration::from_secs(90), 4_000_000_000);
        cpu.push(t0 + Duration::from_secs(105), 4_000_000_000);
        assert_eq!(cpu.percent(), Some(0.0));
        // A restarted container starts over.
        cpu.push(t0 + Duration::from_secs(120), 10);
        assert_eq!(cpu.percent(), None);
    }

    #[test]
    fn reasons_read_as_operators_expect() {
        let until: Timestamp = "2026-11-30T18:00:00Z".parse().expect("time");
        assert_eq!(
            window_reason(until, &TimeZone::UTC),
            "keep_warm until Mon 18:00"
        );
        assert_eq!(needed_reason(&[]), None);
        assert_eq!(
            needed_reason(&["app".into(), "api".into()]).as_deref(),
            Some("needed by app, api")
        );
        assert!(needs_requirements(&ServiceState::Starting));
        assert!(!needs_requirements(&ServiceState::Stopping));
    }
}
