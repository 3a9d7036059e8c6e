//! Crash-loop guard and retry backoff for failed starts.
//!
//! After a failed start the next wake may retry only once the backoff
//! (1 s, 2 s, 4 s, … capped) has elapsed; three failures within ten minutes
//! latch the guard, after which wakes are ignored until an operator acts
//! (manual start or config change).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::types::StartBlock;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Upper bound of the retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Failures within [`CRASH_LOOP_WINDOW`] that latch the guard.
pub const CRASH_LOOP_FAILURES: usize = 3;
/// Sliding window in which failures are counted.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(600);

/// Exponential delay for the `n`-th consecutive failure (`n >= 1`), capped.
pub fn backoff_delay(n: u32, base: Duration, cap: Duration) -> Duration {
    let shift = n.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(cap)
}

/// Failure bookkeeping of one service.
#[derive(Debug, Clone, Default)]
pub struct CrashGuard {
    /// Times of recent failures, pruned to the window.
    failures: VecDeque<Instant>,
    /// Failures since the last successful start; drives the backoff.
    consecutive: u32,
    /// Earliest time a wake may retry the start.
    retry_at: Option<Instant>,
    /// Latched once the crash-loop threshold is reached.
    tripped: bool,
}

impl CrashGuard {
    /// Records a failed start at `now`; returns whether the guard is now
    /// tripped.
    pub fn record_failure(&mut self, now: Instant) -> bool {
        self.failures.push_back(now);
        while let Some(&first) = self.failures.front() {
            if now.saturating_duration_since(first) > CRASH_LOOP_WINDOW {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.retry_at = Some(now + backoff_delay(self.consecutive, BACKOFF_BASE, BACKOFF_CAP));
        if self.failures.len() >= CRASH_LOOP_FAILURES {
            self.tripped = true;
        }
        self.tripped
    }

    /// Records a successful start: the backoff starts over, the failure
    /// window keeps counting.
    pub fn record_success(&mut self) {
        self.consecutive = 0;
        self.retry_at = None;
    }

    /// Takes over a guard another agent kept (a hand-over): latched, or a
    /// retry pending until `retry_at`.
    pub fn restore(&mut self, tripped: bool, retry_at: Option<Instant>) {
        self.tripped = tripped;
        self.retry_at = retry_at;
        self.consecutive = u32::from(tripped || retry_at.is_some());
    }

    /// Forgets everything (manual start, config change).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// What the guard says to a wake: the latch first, else the pending
    /// backoff (a `retry_at` in the past blocks nothing; the reader compares
    /// it with its clock).
    pub fn block(&self) -> Option<StartBlock> {
        if self.tripped {
            return Some(StartBlock::CrashLoop);
        }
        self.retry_at
            .map(|retry_at| StartBlock::Backoff { retry_at })
    }

    /// Failures currently counted in the window (for logs).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        let c = Duration::from_secs(30);
        let got: Vec<u64> = (1..=7).map(|n| backoff_delay(n, b, c).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff_delay(u32::MAX, b, c), c);
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_in_window_trip_and_old_ones_expire() {
        let mut g = CrashGuard::default();
        let t0 = Instant::now();
        let backoff = |retry_at| Some(StartBlock::Backoff { retry_at });
        assert!(!g.record_failure(t0));
        assert_eq!(g.block(), backoff(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(700);
        assert!(!g.record_failure(t1));
        assert_eq!(g.block(), backoff(t1 + Duration::from_secs(2)));
        assert_eq!(g.recent_failures(), 1, "first failure left the window");
        assert!(!g.record_failure(t1 + Duration::from_secs(5)));
        assert_eq!(g.block(), backoff(t1 + Duration::from_secs(9)));
        assert!(g.record_failure(t1 + Duration::from_secs(9)));
        assert_eq!(g.block(), Some(StartBlock::CrashLoop));
        g.record_success();
        assert_eq!(
            g.block(),
            Some(StartBlock::CrashLoop),
            "success does not unlatch"
        );
        g.reset();
        assert_eq!(g.block(), None);
    }
}
