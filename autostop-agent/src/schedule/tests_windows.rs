//! Unit tests of `keep_warm` windows: parsing errors, openings, closings,
//! windows across midnight and across DST changes (POSIX zone strings, so
//! no tz database is needed).

use jiff::{civil::date, tz::TimeZone, Timestamp};

use super::*;

/// Central Europe: +01:00, +02:00 from the last Sunday of March 02:00 to
/// the last Sunday of October 03:00.
fn paris() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("posix zone")
}

fn schedule(windows: &[&str]) -> Schedule {
    let windows = windows
        .iter()
        .map(|w| w.parse().expect("valid window"))
        .collect();
    Schedule::in_zone(windows, paris())
}

/// The instant of a Paris wall-clock time.
fn at(y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
    date(y, m, d)
        .at(h, min, 0, 0)
        .to_zoned_datetime(paris())
        .expect("valid local time")
        .timestamp()
}

#[test]
fn bad_windows_name_the_bad_token() {
    let err = |text: &str| text.parse::<Window>().expect_err(text).to_string();
    assert!(err("Mon-Fry 08:00-19:00").contains("\"Fry\""));
    assert!(err("Mon 8:00-19:00").contains("\"8:00\""));
    assert!(err("Mon 08:00-25:00").contains("\"25:00\""));
    assert!(err("Mon 08:00").contains("expected DAYS HH:MM-HH:MM"));
    assert!(err("Mon 08:00-08:00").contains("same time"));
    assert!(err("Mon 08:00-19:00 extra").contains("expected"));
    assert!("daily 00:00-24:00".parse::<Window>().is_ok());
    assert!("Sat,Sun 10:00-12:00".parse::<Window>().is_ok());
    assert!("fri-mon 22:00-02:00".parse::<Window>().is_ok());
}

#[test]
fn inside_and_next_opening_on_weekdays() {
    let s = schedule(&["Mon-Fri 08:00-19:00", "Sat 10:00-12:00"]);
    // Monday 2026-11-30.
    assert_eq!(s.open_until(at(2026, 11, 30, 7, 59)), None);
    assert_eq!(
        s.next_opening(at(2026, 11, 30, 7, 59)),
        Some(at(2026, 11, 30, 8, 0))
    );
    assert_eq!(
        s.open_until(at(2026, 11, 30, 8, 0)),
        Some(at(2026, 11, 30, 19, 0))
    );
    assert_eq!(s.open_until(at(2026, 11, 30, 19, 0)), None);
    // Friday evening: the next opening is Saturday's.
    assert_eq!(
        s.next_opening(at(2026, 12, 4, 20, 0)),
        Some(at(2026, 12, 5, 10, 0))
    );
    // Saturday noon: Monday next.
    assert_eq!(
        s.next_opening(at(2026, 12, 5, 12, 0)),
        Some(at(2026, 12, 7, 8, 0))
    );
}

#[test]
fn a_window_across_midnight_ends_the_next_day() {
    let s = schedule(&["Fri 22:00-02:00"]);
    assert_eq!(
        s.open_until(at(2026, 12, 4, 23, 0)),
        Some(at(2026, 12, 5, 2, 0))
    );
    // Early Saturday is still Friday's window.
    assert_eq!(
        s.open_until(at(2026, 12, 5, 1, 0)),
        Some(at(2026, 12, 5, 2, 0))
    );
    assert_eq!(s.open_until(at(2026, 12, 5, 2, 0)), None);
    assert_eq!(s.open_until(at(2026, 12, 3, 23, 0)), None, "Thursday");
}

#[test]
fn touching_windows_count_as_one() {
    let s = schedule(&["daily 22:00-24:00", "daily 00:00-06:00"]);
    assert_eq!(
        s.open_until(at(2026, 12, 1, 23, 0)),
        Some(at(2026, 12, 2, 6, 0))
    );
}

#[test]
fn windows_keep_their_wall_clock_hours_across_dst() {
    let s = schedule(&["daily 08:00-09:00", "Sun 02:30-03:30"]);
    // Before and after the spring change (Sunday 2026-03-29, 02:00 → 03:00):
    // 08:00 local both days, though UTC shifts by an hour.
    let sat = s.next_opening(at(2026, 3, 28, 7, 0)).expect("Saturday");
    let mon = s.next_opening(at(2026, 3, 30, 7, 0)).expect("Monday");
    assert_eq!(sat, at(2026, 3, 28, 8, 0));
    assert_eq!(mon, at(2026, 3, 30, 8, 0));
    assert_eq!(mon.as_second() - sat.as_second(), 2 * 86_400 - 3_600);
    // 02:30 does not exist that Sunday: the window opens at its earlier
    // reading (00:30 UTC, 01:30 CET) and closes at 03:30 CEST (01:30 UTC):
    // an hour, as written.
    let gap = s
        .next_opening(at(2026, 3, 29, 0, 0))
        .expect("before the gap");
    let utc = |h: i8, m: i8| {
        date(2026, 3, 29)
            .at(h, m, 0, 0)
            .to_zoned_datetime(TimeZone::UTC)
            .expect("utc")
            .timestamp()
    };
    assert_eq!(gap, utc(0, 30));
    assert_eq!(s.open_until(gap), Some(utc(1, 30)));
    // Autumn (Sunday 2026-10-25, 03:00 → 02:00): 02:30 happens twice; the
    // window opens at the first one and still closes at 03:30 local.
    let fold = s.next_opening(at(2026, 10, 25, 1, 0)).expect("in the fold");
    let close = s.open_until(fold).expect("open");
    assert_eq!(close.as_second() - fold.as_second(), 2 * 3_600);
}
