//! The wall clock the schedules read: the system's, or (in tests) one that
//! follows tokio's paused clock from a fixed starting time, so a test can
//! run a week of windows and pre-warms in milliseconds.

use jiff::{tz::TimeZone, SignedDuration, Timestamp};

/// Where "now" comes from.
#[derive(Debug, Clone)]
pub enum WallClock {
    /// The system clock.
    System,
    /// `base` at tokio instant `at`, advancing with tokio's clock, in
    /// time zone `tz`.
    Following {
        /// The wall time at `at`.
        base: Timestamp,
        /// When (on tokio's clock) it was `base`.
        at: tokio::time::Instant,
        /// Its time zone.
        tz: TimeZone,
    },
}

impl WallClock {
    /// The system clock.
    pub fn system() -> Self {
        Self::System
    }

    /// A clock reading `base` now in `tz` and advancing with tokio's
    /// clock.
    pub fn following(base: Timestamp, tz: TimeZone) -> Self {
        Self::Following {
            base,
            at: tokio::time::Instant::now(),
            tz,
        }
    }

    /// The time zone its readings are shown in (the host's: `TZ`, else
    /// `/etc/localtime`, else UTC).
    pub fn time_zone(&self) -> TimeZone {
        match self {
            Self::System => TimeZone::system(),
            Self::Following { tz, .. } => tz.clone(),
        }
    }

    /// The wall time now.
    pub fn now(&self) -> Timestamp {
        match self {
            Self::System => Timestamp::now(),
            Self::Following { base, at, .. } => {
                let elapsed = SignedDuration::try_from(at.elapsed()).unwrap_or(SignedDuration::MAX);
                base.checked_add(elapsed).unwrap_or(*base)
            }
        }
    }
}
