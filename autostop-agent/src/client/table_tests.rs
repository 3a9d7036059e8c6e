//! Golden tests of the `autostop status` table: exact output for the
//! default and `--wide` columns, durations, zero values and names too long
//! for 100 columns.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::time::Duration;

use unicode_width::UnicodeWidthStr;

use super::{compact_duration, compact_seconds, status_table, DEFAULT_WIDTH};
use crate::api::ServiceView;

/// A running, a sleeping, a crash-looping and a just-adopted service.
fn services() -> Vec<ServiceView> {
    vec![
        ServiceView {
            name: "ragflow".into(),
            state: "ready".into(),
            state_for_s: 7300,
            mode: "dynamic".into(),
            ports: vec!["80/tcp".into(), "443/tcp".into()],
            held: 0,
            memory_bytes: Some(4_200_000_000),
            memory_limit_bytes: Some(6_500_000_000),
            idle_timeout_s: 180,
            idle_for_s: Some(105),
            seconds_until_stop: Some(75),
            last_start_duration_s: Some(45.2),
            average_start_duration_s: Some(41.0),
            starts_24h: 3,
            ram_saved_gb_h: 141.04,
            ram_saved_gb_h_24h: 2.5,
            ..ServiceView::default()
        },
        ServiceView {
            name: "demo-api".into(),
            state: "stopped".into(),
            state_for_s: 3 * 3600 + 300,
            mode: "blocking".into(),
            ports: vec!["8080/tcp".into()],
            idle_timeout_s: 20,
            last_start_duration_s: Some(0.3),
            average_start_duration_s: Some(0.34),
            starts_24h: 12,
            ram_saved_gb_h: 0.0123,
            // What the demo printed as "-0.0 in 24 h".
            ram_saved_gb_h_24h: -0.0,
            ..ServiceView::default()
        },
        ServiceView {
            name: "xtts".into(),
            state: "failed".into(),
            state_for_s: 42,
            mode: "dynamic".into(),
            ports: vec!["8020/tcp".into()],
            idle_timeout_s: 3600,
            last_error: Some("start failed: container exited with code 1".into()),
            start_block: Some("crash_loop".into()),
            ..ServiceView::default()
        },
        ServiceView {
            name: "db".into(),
            state: "starting".into(),
            hold: true,
            idle_timeout_s: 3900,
            ..ServiceView::default()
        },
    ]
}

#[test]
fn the_default_table_sizes_columns_to_their_content() {
    let expected = "\
NAME      STATE        FOR    RAM            TIMEOUT  STOP IN  LAST START  SAVED 24H
ragflow   ✅ RUNNING   2h01m  4.2GB / 6.5GB  3m       1m15s    45s         2.5 GB·h
demo-api  💤 STOPPED   3h05m  -              20s      -        0.3s        0 GB·h
xtts      ❌ FAILED    42s    -              1h       -        -           0 GB·h
  last error: start failed: container exited with code 1
  start blocked: crash loop, visitors get an error until `autostop start xtts`
db        🟡 STARTING  0s     -              1h05m    hold     -           0 GB·h
";
    assert_eq!(status_table(&services(), false), expected);
}

#[test]
fn the_wide_table_shows_every_column() {
    let expected = "\
NAME      STATE        FOR    MODE      PORTS           HELD  RAM            TIMEOUT  IDLE FOR  STOP IN  LAST START  AVG START  STARTS 24H  SAVED 24H  SAVED       BLOCK
ragflow   ✅ RUNNING   2h01m  dynamic   80/tcp,443/tcp  0     4.2GB / 6.5GB  3m       1m45s     1m15s    45s         41s        3           2.5 GB·h   141.0 GB·h  -
demo-api  💤 STOPPED   3h05m  blocking  8080/tcp        0     -              20s      -         -        0.3s        0.3s       12          0 GB·h     12 MB·h     -
xtts      ❌ FAILED    42s    dynamic   8020/tcp        0     -              1h       -         -        -           -          0           0 GB·h     0 GB·h      crash loop
  last error: start failed: container exited with code 1
db        🟡 STARTING  0s     -         -               0     -              1h05m    -         hold     -           -          0           0 GB·h     0 GB·h      -
";
    assert_eq!(status_table(&services(), true), expected);
}

#[test]
fn zero_values_never_read_negative_or_empty() {
    let zero = ServiceView {
        name: "z".into(),
        state: "unknown".into(),
        ram_saved_gb_h: -0.0,
        ram_saved_gb_h_24h: -1e-12,
        last_start_duration_s: Some(-0.0),
        average_start_duration_s: Some(0.0),
        memory_bytes: Some(0),
        ..ServiceView::default()
    };
    let table = status_table(std::slice::from_ref(&zero), true);
    assert!(!table.contains("-0"), "{table}");
    assert_eq!(
        table.lines().nth(1),
        Some("z     ❔ UNKNOWN  0s   -     -      0     0B   0s       -         -        0s          0s         0           0 GB·h     0 GB·h  -")
    );
}

#[test]
fn long_names_are_shortened_to_fit_100_columns_but_not_in_wide() {
    let mut many = services();
    many[0].name = "a-service-with-a-name-much-longer-than-any-terminal-column-wants".into();
    many[2].last_error = Some(format!("start failed: {}", "x".repeat(200)));
    let table = status_table(&many, false);
    for line in table.lines() {
        assert!(
            line.width() <= DEFAULT_WIDTH,
            "{} columns: {line}",
            line.width()
        );
    }
    // The other columns take 76: the name keeps 24, its last one `…`.
    assert!(
        table.contains("\na-service-with-a-name-m…  ✅ RUNNING"),
        "{table}"
    );
    assert_eq!(table.lines().next().map(UnicodeWidthStr::width), Some(100));
    assert!(table.contains("  last error: start failed: xxx"), "{table}");
    let wide = status_table(&many, true);
    assert!(wide.contains(&many[0].name), "{wide}");
    assert!(wide.contains(&"x".repeat(200)), "{wide}");
}

#[test]
fn durations_read_in_one_compact_style() {
    for (secs, text) in [
        (0, "0s"),
        (20, "20s"),
        (59, "59s"),
        (60, "1m"),
        (75, "1m15s"),
        (180, "3m"),
        (3599, "59m59s"),
        (3600, "1h"),
        (3900, "1h05m"),
        (7300, "2h01m"),
        (86_399, "23h59m"),
        (86_400, "1d"),
        (90_000, "1d01h"),
        (10 * 86_400 + 3 * 3600 + 59, "10d03h"),
    ] {
        assert_eq!(compact_seconds(secs), text, "{secs} s");
    }
    for (millis, text) in [
        (0, "0s"),
        (40, "<0.1s"),
        (300, "0.3s"),
        (4_460, "4.5s"),
        (9_940, "9.9s"),
        (9_960, "10s"),
        (45_200, "45s"),
        (59_600, "1m"),
        (75_400, "1m15s"),
    ] {
        assert_eq!(
            compact_duration(Duration::from_millis(millis)),
            text,
            "{millis} ms"
        );
    }
}

#[test]
fn a_pending_backoff_reads_as_a_retry_time() {
    let backing_off = ServiceView {
        name: "api".into(),
        state: "failed".into(),
        start_block: Some("backoff".into()),
        retry_in_s: Some(8),
        ..ServiceView::default()
    };
    let one = std::slice::from_ref(&backing_off);
    let table = status_table(one, false);
    assert_eq!(table.lines().nth(2), Some("  start blocked: retry in 8s"));
    let wide = status_table(one, true);
    assert!(wide
        .lines()
        .nth(1)
        .is_some_and(|l| l.ends_with("  retry in 8s")));
}

#[test]
fn a_hibernated_service_shows_its_resident_and_swapped_memory() {
    let heavy = ServiceView {
        name: "heavy".into(),
        state: "hibernated".into(),
        state_for_s: 60,
        idle_timeout_s: 180,
        hibernation: Some(crate::api::HibernationView {
            awake_bytes: 316_000_000,
            resident_bytes: 4_000_000,
            swap_bytes: 312_000_000,
            reclaimed: true,
            note: None,
        }),
        ..ServiceView::default()
    };
    let table = status_table(&[heavy], false);
    assert_eq!(
        table.lines().nth(1),
        Some("heavy  🧊 HIBERNATED  1m   4MB + 312MB swap  3m       -        -           0 GB·h"),
        "{table}"
    );
}
