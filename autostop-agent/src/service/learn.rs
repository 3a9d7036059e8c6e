//! Start-duration learning: an exponentially weighted moving average of how
//! long a service takes from "start requested" to "ready".
//!
//! The estimate is published in the service status (the connection holder
//! and the status API use it to tell clients how long to wait); persisting
//! it across agent restarts is the caller's job (seed it through
//! `ServiceSettings::initial_start_estimate`, read it back from the status).

use std::time::Duration;

/// Weight of the newest sample in the moving average.
pub const START_EWMA_ALPHA: f64 = 0.3;

/// Moving average of observed start durations for one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartLearner {
    /// Current estimate; `None` until a start has been observed or seeded.
    estimate: Option<Duration>,
}

impl StartLearner {
    /// Creates a learner, optionally seeded with a persisted estimate.
    pub fn new(seed: Option<Duration>) -> Self {
        Self { estimate: seed }
    }

    /// Seeds the estimate only if nothing has been learned yet, so a config
    /// reload does not overwrite fresher knowledge.
    pub fn seed_if_empty(&mut self, seed: Option<Duration>) {
        if self.estimate.is_none() {
            self.estimate = seed;
        }
    }

    /// Folds one observed start duration into the estimate.
    pub fn record(&mut self, sample: Duration) {
        self.estimate = Some(match self.estimate {
            None => sample,
            Some(prev) => Duration::from_secs_f64(
                START_EWMA_ALPHA * sample.as_secs_f64()
                    + (1.0 - START_EWMA_ALPHA) * prev.as_secs_f64(),
            ),
        });
    }

    /// Current estimate of the start duration.
    pub fn estimate(&self) -> Option<Duration> {
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_estimate_then_ewma() {
        let mut l = StartLearner::new(None);
        assert_eq!(l.estimate(), None);
        l.record(Duration::from_secs(10));
        assert_eq!(l.estimate(), Some(Duration::from_secs(10)));
        l.record(Duration::from_secs(20));
        // 0.3 * 20 + 0.7 * 10 = 13
        let est = l.estimate().map(|d| d.as_millis());
        assert_eq!(est, Some(13_000));
    }

    #[test]
    fn seed_does_not_overwrite_learned_value() {
        let mut l = StartLearner::new(Some(Duration::from_secs(4)));
        l.seed_if_empty(Some(Duration::from_secs(9)));
        assert_eq!(l.estimate(), Some(Duration::from_secs(4)));
        let mut empty = StartLearner::default();
        empty.seed_if_empty(Some(Duration::from_secs(9)));
        assert_eq!(empty.estimate(), Some(Duration::from_secs(9)));
    }
}
