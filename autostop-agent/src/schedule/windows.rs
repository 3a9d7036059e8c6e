//! `keep_warm` windows: weekly wall-clock periods, in the host's time zone,
//! during which a service is started at the opening and never idle-stopped,
//! e.g. `"Mon-Fri 08:00-19:00"`, `"Sat 10:00-12:00"`, `"daily 07:30-09:00"`,
//! `"Fri 22:00-02:00"` (crosses midnight: until Saturday 02:00).
//!
//! Times are local wall-clock times: a window keeps its hours across DST
//! changes. Where the clock skips or repeats a time (spring forward, fall
//! back), a window opens at the earlier reading of its opening time and
//! closes at the later reading of its closing time: it is never shorter
//! than written (a little longer at worst, which only keeps a service
//! warm a little longer).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use jiff::{
    civil::{Date, DateTime, Time, Weekday},
    tz::TimeZone,
    Timestamp,
};

/// Why a window could not be parsed; the message names the bad token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `DAYS HH:MM-HH:MM`.
    #[error("{0:?}: expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 08:00-19:00\"")]
    Shape(String),
    /// A day name or range that is not one.
    #[error("bad day {0:?} (Mon Tue Wed Thu Fri Sat Sun, a range like Mon-Fri, a list like Sat,Sun, or daily)")]
    Day(String),
    /// A time that is not `HH:MM` (00:00 to 24:00).
    #[error("bad time {0:?} (HH:MM, 00:00 to 24:00)")]
    Time(String),
    /// Opening and closing at the same time.
    #[error("{0:?}: the window opens and closes at the same time")]
    Empty(String),
}

/// One weekly window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// As written (trimmed), for messages and the config's round trip.
    text: String,
    /// Days it opens on, Monday first.
    days: [bool; 7],
    /// Opening, minutes after midnight.
    open: u16,
    /// Closing, minutes after midnight (1440 for midnight at the end of
    /// the day); at or before `open` means the next day.
    close: u16,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;

impl std::str::FromStr for Window {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split_whitespace();
        let (Some(days), Some(hours), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(WindowError::Shape(text.to_owned()));
        };
        let (open, close) = hours
            .split_once('-')
            .ok_or_else(|| WindowError::Shape(text.to_owned()))?;
        let (open, close) = (minutes(open)?, minutes(close)?);
        if open == close {
            return Err(WindowError::Empty(text.to_owned()));
        }
        if open == MINUTES_PER_DAY {
            return Err(WindowError::Time("24:00".to_owned()));
        }
        Ok(Self {
            text: text.trim().to_owned(),
            days: day_set(days)?,
            open,
            close,
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `HH:MM` as minutes after midnight; `24:00` is the end of the day.
fn minutes(text: &str) -> Result<u16, WindowError> {
    let bad = || WindowError::Time(text.to_owned());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(h.saturating_mul(60).saturating_add(m)),
        _ => Err(bad()),
    }
}

/// `Mon`, `Mon-Fri`, `Fri-Mon` (wrapping), `Sat,Sun`, `daily`.
fn day_set(text: &str) -> Result<[bool; 7], WindowError> {
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    for item in text.split(',') {
        let day = |name: &str| {
            DAY_NAMES
                .iter()
                .position(|d| d.eq_ignore_ascii_case(name))
                .ok_or_else(|| WindowError::Day(name.to_owned()))
        };
        let (from, to) = match item.split_once('-') {
            None => (day(item)?, day(item)?),
            Some((from, to)) => (day(from)?, day(to)?),
        };
        // From `from` to `to` inclusive, wrapping past Sunday.
        for d in (from..DAY_NAMES.len()).chain(0..from) {
            if let Some(slot) = days.get_mut(d) {
                *slot = true;
            }
            if d == to {
                break;
            }
        }
    }
    Ok(days)
}

/// A service's windows, evaluated in one time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    windows: Vec<Window>,
    tz: TimeZone,
}

/// One occurrence of a window: [open, close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Occurrence {
    open: Timestamp,
    close: Timestamp,
}

impl Schedule {
    /// `windows` in the host's time zone (`TZ`, else `/etc/localtime`, else
    /// UTC).
    pub fn local(windows: Vec<Window>) -> Self {
        Self::in_zone(windows, TimeZone::system())
    }

    /// `windows` in `tz`.
    pub fn in_zone(windows: Vec<Window>, tz: TimeZone) -> Self {
        Self { windows, tz }
    }

    /// Whether there is any window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// When the window `now` is in closes (overlapping or touching
    /// windows count as one); `None` outside every window.
    pub fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        let occurrences = self.occurrences(now);
        let mut end = occurrences
            .iter()
            .find(|o| o.open <= now && now < o.close)?
            .close;
        // Occurrences are sorted by opening: extend through any that start
        // before the current end.
        for o in &occurrences {
            if o.open <= end && o.close > end {
                end = o.close;
            }
        }
        Some(end)
    }

    /// The next opening strictly after `now` (within the coming week).
    pub fn next_opening(&self, now: Timestamp) -> Option<Timestamp> {
        self.occurrences(now)
            .into_iter()
            .map(|o| o.open)
            .filter(|open| *open > now)
            .min()
    }

    /// Every occurrence that may contain `now` or open within the next
    /// eight days, sorted by opening.
    fn occurrences(&self, now: Timestamp) -> Vec<Occurrence> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -1..=8 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            for window in &self.windows {
                if let Some(o) = self.occurrence(window, date) {
                    out.push(o);
                }
            }
        }
        out.sort();
        out
    }

    /// `window`'s occurrence opening on `date`, if it opens that day.
    fn occurrence(&self, window: &Window, date: Date) -> Option<Occurrence> {
        if !window
            .days
            .get(weekday_index(date.weekday()))
            .copied()
            .unwrap_or(false)
        {
            return None;
        }
        let open = self.instant(date, window.open, Reading::Earlier)?;
        let close_date = if window.close <= window.open {
            date.tomorrow().ok()?
        } else {
            date
        };
        let close = self.instant(close_date, window.close, Reading::Later)?;
        (close > open).then_some(Occurrence { open, close })
    }

    /// The instant of wall-clock `minutes` after midnight on `date` here,
    /// read as `reading` says where the clock skips or repeats it.
    fn instant(&self, date: Date, minutes: u16, reading: Reading) -> Option<Timestamp> {
        let (date, minutes) = if minutes == MINUTES_PER_DAY {
            (date.tomorrow().ok()?, 0)
        } else {
            (date, minutes)
        };
        let time = Time::new(
            i8::try_from(minutes / 60).ok()?,
            i8::try_from(minutes % 60).ok()?,
            0,
            0,
        )
        .ok()?;
        let ambiguous = self
            .tz
            .to_ambiguous_timestamp(DateTime::from_parts(date, time));
        match reading {
            Reading::Earlier => ambiguous.earlier(),
            Reading::Later => ambiguous.later(),
        }
        .ok()
    }
}

/// Which reading of a wall-clock time the clock skips or repeats.
#[derive(Debug, Clone, Copy)]
enum Reading {
    Earlier,
    Later,
}

fn weekday_index(day: Weekday) -> usize {
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)
}

#[cfg(test)]
#[path = "tests_windows.rs"]
mod tests;
