//! Learned pre-warming (`prewarm = true`): start a service shortly before
//! the requests that habitually wake it, when the pattern is strong.
//!
//! A *demand* is a request that found the service asleep (a wake-up) or
//! found it pre-warmed. The model, per weekday: gather the demands of the
//! same weekday in each of the last [`PrewarmSettings::weeks`] weeks (whole
//! days only) by time of day, and find the bands of
//! [`PrewarmSettings::spread`] minutes in which at least
//! [`PrewarmSettings::min_days`] of those days had a demand: each band is a
//! habit (the morning arrival, the return from lunch). The service is
//! started [`PrewarmSettings::lead`] plus its learned start time before
//! the earliest demand of the band.
//!
//! A pre-warm is a *hit* when a real request arrives while it keeps the
//! service warm (before the normal idle rules stop it), a *miss* otherwise.
//! When the last [`PrewarmSettings::max_misses`] pre-warmed days of a
//! weekday were all misses (say, two Wednesdays in a row, not one public
//! holiday), that weekday backs off for [`PrewarmSettings::backoff`].
//!
//! Pure: times in, a decision and its reason out; the agent persists the
//! demand and outcome history and arms a timer at the decision.

use std::time::Duration;

use jiff::{civil::Date, tz::TimeZone, Span, Timestamp};

/// The model's knobs (documented in the README).
#[derive(Debug, Clone, PartialEq)]
pub struct PrewarmSettings {
    /// How many past same weekdays are considered.
    pub weeks: u32,
    /// How many of them must agree.
    pub min_days: u32,
    /// Width of the band of first-demand times that counts as agreeing.
    pub spread: Duration,
    /// Warm this long (plus the learned start time) before the band.
    pub lead: Duration,
    /// Pre-warmed days of one weekday in a row without a hit before that
    /// weekday backs off.
    pub max_misses: u32,
    /// How long a back-off lasts.
    pub backoff: Duration,
}

impl Default for PrewarmSettings {
    fn default() -> Self {
        Self {
            weeks: 4,
            min_days: 3,
            spread: Duration::from_secs(30 * 60),
            lead: Duration::from_secs(10 * 60),
            max_misses: 2,
            backoff: Duration::from_secs(7 * 86_400),
        }
    }
}

/// How a pre-warm turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A request came while it kept the service warm.
    Hit,
    /// It idled out with no request.
    Miss,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The next pre-warm and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// When to start the service.
    pub at: Timestamp,
    /// The earliest habitual first request it prepares for.
    pub expected: Timestamp,
    /// Human reason, for logs and the API.
    pub reason: String,
}

/// The model in one time zone.
#[derive(Debug, Clone)]
pub struct Prewarm {
    settings: PrewarmSettings,
    tz: TimeZone,
}

impl Prewarm {
    /// The model with `settings`, reading clocks in `tz`.
    pub fn new(settings: PrewarmSettings, tz: TimeZone) -> Self {
        Self { settings, tz }
    }

    /// The first pre-warm after `now` within a week, from `demands` (any
    /// order) and `outcomes` of past pre-warms (oldest first). `start` is
    /// the learned start duration.
    pub fn next(
        &self,
        demands: &[Timestamp],
        outcomes: &[(Timestamp, Outcome)],
        now: Timestamp,
        start: Duration,
    ) -> Option<Prediction> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        let local = self.local_demands(demands);
        let spread = i32::try_from(self.settings.spread.as_secs() / 60).ok()?;
        for offset in 0..=7 {
            let day = today.checked_add(Span::new().days(offset)).ok()?;
            if self.backed_off(day, outcomes) {
                continue;
            }
            for (from, days) in self.habits(day, today, &local) {
                // A habit already met today needs no pre-warm.
                let met = local
                    .iter()
                    .any(|(d, m)| *d == day && (from..=from + spread).contains(m));
                if met {
                    continue;
                }
                let Some(prediction) = self.prediction(day, from, days, start) else {
                    continue;
                };
                if prediction.at > now {
                    return Some(prediction);
                }
            }
        }
        None
    }

    /// Whether `day`'s weekday is backing off: its last `max_misses`
    /// pre-warmed days (before `day`) had no hit, the last of them less
    /// than `backoff` before `day`.
    fn backed_off(&self, day: Date, outcomes: &[(Timestamp, Outcome)]) -> bool {
        let Ok(n) = usize::try_from(self.settings.max_misses) else {
            return false;
        };
        // (date, any hit) of each pre-warmed day of that weekday, in order.
        let mut days: Vec<(Date, bool)> = Vec::new();
        for (at, outcome) in outcomes {
            let date = at.to_zoned_datetime(self.tz.clone()).date();
            if date.weekday() != day.weekday() || date >= day {
                continue;
            }
            let hit = *outcome == Outcome::Hit;
            match days.iter_mut().find(|(d, _)| *d == date) {
                Some(seen) => seen.1 |= hit,
                None => days.push((date, hit)),
            }
        }
        days.sort_unstable();
        if n == 0 || days.len() < n || days[days.len() - n..].iter().any(|(_, hit)| *hit) {
            return false;
        }
        let Some((last, _)) = days.last() else {
            return false;
        };
        let backoff_days =
            i64::try_from(self.settings.backoff.as_secs() / 86_400).unwrap_or(i64::MAX);
        last.checked_add(Span::new().days(backoff_days))
            .is_ok_and(|until| day <= until)
    }

    /// (local date, minutes after midnight) of each demand.
    fn local_demands(&self, demands: &[Timestamp]) -> Vec<(Date, i32)> {
        demands
            .iter()
            .map(|at| {
                let local = at.to_zoned_datetime(self.tz.clone());
                let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
                (local.date(), minute)
            })
            .collect()
    }

    /// The habits of `day`'s weekday: (earliest minute of the band, how
    /// many of the past same weekdays had a demand in it), from whole days
    /// before `today`, in time order.
    fn habits(&self, day: Date, today: Date, local: &[(Date, i32)]) -> Vec<(i32, u32)> {
        let past: Vec<Date> = (1..=i64::from(self.settings.weeks))
            .filter_map(|k| day.checked_sub(Span::new().days(7 * k)).ok())
            .filter(|d| *d < today)
            .collect();
        let mut points: Vec<(i32, Date)> = local
            .iter()
            .filter(|(d, _)| past.contains(d))
            .map(|(d, m)| (*m, *d))
            .collect();
        points.sort_unstable();
        let Ok(spread) = i32::try_from(self.settings.spread.as_secs() / 60) else {
            return Vec::new();
        };
        let mut habits = Vec::new();
        let mut i = 0;
        while i < points.len() {
            let from = points[i].0;
            let band: Vec<&(i32, Date)> = points[i..]
                .iter()
                .take_while(|(m, _)| *m - from <= spread)
                .collect();
            let mut days: Vec<Date> = band.iter().map(|(_, d)| *d).collect();
            days.sort_unstable();
            days.dedup();
            let count = u32::try_from(days.len()).unwrap_or(u32::MAX);
            if count >= self.settings.min_days {
                habits.push((from, count));
                i += band.len();
            } else {
                i += 1;
            }
        }
        habits
    }

    /// The pre-warm for a habit of `day` whose band starts at `from`.
    fn prediction(&self, day: Date, from: i32, days: u32, start: Duration) -> Option<Prediction> {
        let expected = day
            .at(
                i8::try_from(from / 60).ok()?,
                i8::try_from(from % 60).ok()?,
                0,
                0,
            )
            .to_zoned_datetime(self.tz.clone())
            .ok()?
            .timestamp();
        let at = expected.checked_sub(self.settings.lead + start).ok()?;
        let reason = format!(
            "requests from {:02}:{:02} on {days} of the last {} {}s",
            from / 60,
            from % 60,
            self.settings.weeks,
            day.weekday_name()
        );
        Some(Prediction {
            at,
            expected,
            reason,
        })
    }
}

/// `Monday`… for messages.
trait WeekdayName {
    fn weekday_name(&self) -> &'static str;
}

impl WeekdayName for Date {
    fn weekday_name(&self) -> &'static str {
        use jiff::civil::Weekday::*;
        match self.weekday() {
            Monday => "Monday",
            Tuesday => "Tuesday",
            Wednesday => "Wednesday",
            Thursday => "Thursday",
            Friday => "Friday",
            Saturday => "Saturday",
            Sunday => "Sunday",
        }
    }
}

#[cfg(test)]
#[path = "tests_prewarm.rs"]
mod tests;
