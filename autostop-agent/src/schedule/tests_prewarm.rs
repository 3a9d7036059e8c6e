//! Unit tests of the pre-warm model, and its evaluation on synthetic
//! traffic: eight weeks of requests per trace (an office app used on
//! weekday mornings and afternoons, a weekend-only app, and one used at
//! random), replayed against a simulated service (idle timeout 1 h, start
//! 1 min) with and without pre-warming. The first four weeks only build
//! history; the last four are measured. `cargo test -p autostop-agent
//! prewarm_on_synthetic_traces -- --nocapture` prints the table kept in
//! BENCHMARKS.md.

use std::time::Duration;

use jiff::{civil::date, tz::TimeZone, Span, Timestamp};

use super::*;

fn paris() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("posix zone")
}

fn model() -> Prewarm {
    Prewarm::new(PrewarmSettings::default(), paris())
}

fn local(d: jiff::civil::Date, h: i8, m: i8) -> Timestamp {
    d.at(h, m, 0, 0)
        .to_zoned_datetime(paris())
        .expect("local time")
        .timestamp()
}

const START: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(3600);

#[test]
fn three_of_four_mondays_at_nine_predict_the_next_monday() {
    let mondays = [date(2026, 11, 2), date(2026, 11, 9), date(2026, 11, 16)];
    let demands: Vec<Timestamp> = mondays
        .iter()
        .zip([(9, 0), (9, 20), (8, 55)])
        .map(|(d, (h, m))| local(*d, h, m))
        .collect();
    // Sunday evening before the fourth Monday.
    let now = local(date(2026, 11, 22), 20, 0);
    let p = model()
        .next(&demands, &[], now, START)
        .expect("a prediction");
    assert_eq!(p.expected, local(date(2026, 11, 23), 8, 55));
    assert_eq!(p.at, local(date(2026, 11, 23), 8, 44));
    assert!(
        p.reason.contains("08:55") && p.reason.contains("3 of the last 4 Mondays"),
        "{}",
        p.reason
    );
    // Two Mondays are not a pattern.
    assert_eq!(model().next(&demands[..2], &[], now, START), None);
    // The habit already met today: nothing more for today.
    let monday_late = local(date(2026, 11, 23), 9, 30);
    let mut woken = demands.clone();
    woken.push(local(date(2026, 11, 23), 9, 10));
    let next = model().next(&woken, &[], monday_late, START);
    assert!(next.is_none_or(|p| p.at > local(date(2026, 11, 24), 0, 0)));
}

#[test]
fn scattered_first_requests_are_not_a_pattern() {
    let demands: Vec<Timestamp> = [
        (date(2026, 11, 2), 7, 0),
        (date(2026, 11, 9), 12, 0),
        (date(2026, 11, 16), 18, 30),
    ]
    .iter()
    .map(|(d, h, m)| local(*d, *h, *m))
    .collect();
    let now = local(date(2026, 11, 22), 20, 0);
    assert_eq!(model().next(&demands, &[], now, START), None);
}

#[test]
fn a_weekday_missed_twice_in_a_row_backs_off_but_one_holiday_does_not() {
    let mondays: Vec<jiff::civil::Date> = (0..4)
        .map(|k| date(2026, 11, 2) + Span::new().days(7 * k))
        .collect();
    let demands: Vec<Timestamp> = mondays.iter().map(|d| local(*d, 9, 0)).collect();
    let now = local(date(2026, 11, 29), 20, 0);
    assert!(model().next(&demands, &[], now, START).is_some());
    // One missed Monday (a holiday) after a hit: still pre-warmed.
    let holiday = [
        (local(mondays[2], 8, 50), Outcome::Hit),
        (local(mondays[3], 8, 50), Outcome::Miss),
    ];
    assert!(model().next(&demands, &holiday, now, START).is_some());
    // Two missed Mondays in a row: Mondays back off for a week...
    let twice = [
        (local(mondays[2], 8, 50), Outcome::Miss),
        (local(mondays[3], 8, 50), Outcome::Miss),
    ];
    let p = model().next(&demands, &twice, now, START);
    assert!(
        p.as_ref()
            .is_none_or(|p| p.at > local(date(2026, 11, 30), 23, 0)),
        "{p:?}"
    );
    // ...then resume.
    let later = local(date(2026, 11, 30), 20, 0);
    let p = model()
        .next(&demands, &twice, later, START)
        .expect("resumed");
    assert_eq!(p.expected, local(date(2026, 12, 7), 9, 0));
    // Two misses on one day are one missed day.
    let same_day = [
        (local(mondays[3], 8, 50), Outcome::Miss),
        (local(mondays[3], 12, 50), Outcome::Miss),
    ];
    assert!(model().next(&demands, &same_day, now, START).is_some());
}

/// xorshift64*: deterministic traces without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Requests from `h` o'clock plus `m` minutes every 5-25 minutes until
/// `(until_h, 0)`.
fn session(
    rng: &mut Rng,
    d: jiff::civil::Date,
    (h, m): (i8, i64),
    until_h: i8,
    out: &mut Vec<Timestamp>,
) {
    let mut at = local(d, h, 0)
        .checked_add(Span::new().minutes(m))
        .expect("time");
    let end = local(d, until_h, 0);
    while at < end {
        out.push(at);
        let step = 5 + rng.below(21) as i64;
        at = at.checked_add(Span::new().minutes(step)).expect("time");
    }
}

const DAYS: i64 = 56;

fn first_day() -> jiff::civil::Date {
    date(2026, 9, 7) // a Monday; the eight weeks cross the October DST change
}

fn office() -> Vec<Timestamp> {
    let mut rng = Rng(0x0ff1ce);
    let mut out = Vec::new();
    for k in 0..DAYS {
        let d = first_day() + Span::new().days(k);
        // Weekdays, but one public holiday in the measured weeks.
        if d.weekday().to_monday_zero_offset() >= 5 || k == 37 {
            continue;
        }
        let first = 40 + rng.below(21) as i64;
        session(&mut rng, d, (8, first), 12, &mut out);
        let back = 10 + rng.below(21) as i64;
        session(&mut rng, d, (13, back), 18, &mut out);
    }
    out
}

fn weekend() -> Vec<Timestamp> {
    let mut rng = Rng(0x5a7);
    let mut out = Vec::new();
    for k in 0..DAYS {
        let d = first_day() + Span::new().days(k);
        if d.weekday().to_monday_zero_offset() < 5 {
            continue;
        }
        // 09:50 to 10:15.
        let minute = 50 + rng.below(26) as i64;
        let until = 12 + rng.below(2) as i8;
        session(&mut rng, d, (9, minute), until, &mut out);
    }
    out
}

/// Sessions at random times on `percent` % of days, up to `most` a day.
fn random(seed: u64, percent: u64, most: u64) -> Vec<Timestamp> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for k in 0..DAYS {
        let d = first_day() + Span::new().days(k);
        if rng.below(100) >= percent {
            continue;
        }
        for _ in 0..=rng.below(most) {
            let h = 7 + rng.below(16) as i8;
            let m = rng.below(60) as i64;
            session(&mut rng, d, (h, m), (h + 1).min(23), &mut out);
        }
    }
    out.sort();
    out
}

#[derive(Debug, Default)]
struct Stats {
    cold_starts: u32,
    warm: Duration,
    prewarms: u32,
    hits: u32,
}

/// Replays `requests` against a service that sleeps after [`IDLE`], with
/// the model when `prewarm`; counts only what happens from `measure_from`.
fn simulate(requests: &[Timestamp], prewarm: bool, measure_from: Timestamp) -> Stats {
    let model = model();
    let (mut demands, mut outcomes) = (Vec::new(), Vec::new());
    let mut stats = Stats::default();
    // Warm interval [since, until) and whether a pre-warm opened it.
    let mut warm: Option<(Timestamp, Timestamp, bool)> = None;
    let measured = |t: Timestamp| t >= measure_from;
    let close = |warm: &mut Option<(Timestamp, Timestamp, bool)>,
                 outcomes: &mut Vec<(Timestamp, Outcome)>,
                 stats: &mut Stats,
                 now: Timestamp| {
        if let Some((since, until, pending)) = *warm {
            if until <= now {
                if measured(since) {
                    stats.warm +=
                        Duration::from_secs(until.as_second().abs_diff(since.as_second()));
                }
                if pending {
                    outcomes.push((until, Outcome::Miss));
                }
                *warm = None;
            }
        }
    };
    let mut requests = requests.to_vec();
    requests.sort();
    let mut pending_requests = requests.into_iter().peekable();
    let mut cursor = local(first_day(), 0, 0);
    let end = local(first_day() + Span::new().days(DAYS), 0, 0);
    loop {
        // The next event: a request, or the model's next pre-warm.
        let prewarm_at = prewarm
            .then(|| model.next(&demands, &outcomes, cursor, START))
            .flatten()
            .map(|p| p.at)
            .filter(|at| *at < end);
        let request_at = pending_requests.peek().copied();
        let (at, is_prewarm) = match (request_at, prewarm_at) {
            (Some(r), Some(p)) if p < r => (p, true),
            (Some(r), _) => (r, false),
            (None, Some(p)) => (p, true),
            (None, None) => break,
        };
        if !is_prewarm {
            pending_requests.next();
        }
        cursor = at;
        close(&mut warm, &mut outcomes, &mut stats, at);
        match (&mut warm, is_prewarm) {
            // Awake but due to idle out before the habit: kept warm.
            (Some((_, until, pending)), true) => {
                if *until < at + IDLE {
                    *until = at + IDLE;
                    *pending = true;
                    stats.prewarms += u32::from(measured(at));
                }
            }
            (None, true) => {
                stats.prewarms += u32::from(measured(at));
                warm = Some((at, at + IDLE, true));
            }
            (Some((_, until, pending)), false) => {
                if *pending {
                    *pending = false;
                    stats.hits += u32::from(measured(at));
                    outcomes.push((at, Outcome::Hit));
                    demands.push(at);
                }
                *until = (*until).max(at + IDLE);
            }
            (None, false) => {
                stats.cold_starts += u32::from(measured(at));
                demands.push(at);
                warm = Some((at, at + IDLE, false));
            }
        }
    }
    close(&mut warm, &mut outcomes, &mut stats, Timestamp::MAX);
    stats
}

#[test]
fn prewarm_on_synthetic_traces() {
    let measure_from = local(first_day() + Span::new().days(28), 0, 0);
    println!("| trace | pre-warms | hit rate | cold starts (without → with) | avoided | warm hours (without → with) | extra warm |");
    println!("|---|---|---|---|---|---|---|");
    for (name, requests, regular) in [
        ("office (weekdays 08:40-18:00, one holiday)", office(), true),
        ("weekend (Sat/Sun from about 10:00)", weekend(), true),
        (
            "random (35 % of days, 1-3 sessions)",
            random(0xdecaf, 35, 3),
            false,
        ),
        (
            "random, busy (80 % of days, 1-5 sessions)",
            random(0xbee, 80, 5),
            false,
        ),
    ] {
        let base = simulate(&requests, false, measure_from);
        let with = simulate(&requests, true, measure_from);
        let avoided = f64::from(base.cold_starts - with.cold_starts) / f64::from(base.cold_starts);
        let hours = |d: Duration| d.as_secs_f64() / 3600.0;
        let extra = hours(with.warm) / hours(base.warm) - 1.0;
        let hit_rate = match with.prewarms {
            0 => "-".to_owned(),
            n => format!("{:.0} %", 100.0 * f64::from(with.hits) / f64::from(n)),
        };
        println!(
            "| {name} | {} | {hit_rate} | {} → {} | {:.0} % | {:.1} → {:.1} | {:+.1} % |",
            with.prewarms,
            base.cold_starts,
            with.cold_starts,
            100.0 * avoided,
            hours(base.warm),
            hours(with.warm),
            100.0 * extra
        );
        if regular {
            assert!(
                avoided >= 0.8,
                "{name}: only {avoided:.2} of cold starts avoided"
            );
        } else {
            assert!(extra <= 0.10, "{name}: {extra:.3} extra warm time");
        }
    }
}
