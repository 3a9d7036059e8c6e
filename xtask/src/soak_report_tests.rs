//! The report's placement of failures, crash periods, footprint and log
//! stamps, on made-up runs.

use std::{path::PathBuf, time::Duration};

use super::*;
use crate::soak_record::{FailKind, Failure};

fn outcome(start: u64, end: u64, failed: bool) -> Outcome {
    Outcome {
        client: "blk-a",
        service: "blk",
        op: "GET /",
        start,
        end,
        failure: failed.then(|| Failure::new(FailKind::BadStatus, "502")),
    }
}

fn fault(kind: &'static str, injected: u64, window: Option<(u64, u64)>) -> FaultRecord {
    FaultRecord {
        kind,
        target: "blk".to_owned(),
        injected,
        recovered: window.map(|(_, b)| b),
        window,
        notes: Vec::new(),
    }
}

fn life(pid: u32, started: u64, ended: Option<(u64, &str)>) -> Life {
    Life {
        pid,
        log: PathBuf::from("agent.log"),
        started,
        running: started + 1_000,
        ended: ended.map(|(at, how)| (at, how.to_owned())),
    }
}

fn report(outcomes: Vec<Outcome>, faults: Vec<FaultRecord>, lives: Vec<Life>) -> Report {
    Report {
        seed: 1,
        minutes: 1.0,
        dockerd_restarts: false,
        ended: 60_000,
        quiet_from: 30_000,
        outcomes,
        faults,
        anomalies: Vec::new(),
        samples: Vec::new(),
        lives,
        leftovers: Vec::new(),
        paused_at_exit: Vec::new(),
        log: Vec::new(),
        nginx_log: Vec::new(),
    }
}

#[test]
fn a_failure_overlapping_a_window_is_explained_and_one_outside_fails_the_run() {
    let faults = vec![
        fault("docker-kill", 10_000, Some((10_000, 14_000))),
        fault("reload-valid", 20_000, None),
    ];
    let inside = outcome(9_500, 10_200, true);
    let at_reload = outcome(20_000, 20_010, true);
    let ok = outcome(30_000, 30_010, false);
    let run = report(vec![inside, at_reload, ok], faults, vec![life(7, 0, None)]);
    let placed = run.failures();
    assert_eq!(placed.len(), 2);
    assert_eq!(placed[0].fault.map(|f| f.kind), Some("docker-kill"));
    assert!(
        placed[1].fault.is_none(),
        "a fault without a window explains nothing"
    );
    assert_eq!(
        run.verdict(),
        vec!["1 failed requests outside every fault window"]
    );
    let json = run.to_json();
    assert_eq!(json["failures_outside_windows"]["count"], 1);
    assert_eq!(
        json["failures_inside_windows"]["by_fault"]["docker-kill"],
        1
    );
    assert_eq!(json["requests"]["total"], 3);
}

#[test]
fn failures_while_a_crashed_agent_is_down_are_marked() {
    let lives = vec![
        life(7, 0, Some((10_000, "exited on its own: exit status: 1"))),
        life(8, 11_000, Some((40_000, "SIGKILL (fault)"))),
        life(9, 41_000, None),
    ];
    // The second life runs from 12 s; + SETTLE.
    let run = report(Vec::new(), Vec::new(), lives);
    let down = run.during_crash(&outcome(11_500, 11_600, true));
    assert_eq!(
        down.as_deref(),
        Some("exited on its own: exit status: 1 at 10.0s")
    );
    assert!(run.during_crash(&outcome(16_000, 16_100, true)).is_none());
    assert!(
        run.during_crash(&outcome(40_500, 40_600, true)).is_none(),
        "a SIGKILL is a fault"
    );
}

#[test]
fn the_footprint_is_the_last_life_after_its_warm_up_and_the_quiet_phase() {
    let sample = |at, pid, rss, fds| Sample { at, pid, rss, fds };
    let mut run = report(
        Vec::new(),
        Vec::new(),
        vec![life(7, 0, Some((5_000, "x"))), life(8, 6_000, None)],
    );
    run.samples = vec![
        sample(1_000, 7, 10, 40),
        sample(35_000, 8, 20, 41),
        sample(40_000, 8, 25, 45),
        sample(50_000, 8, 22, 44),
    ];
    let (pid, first, last, max) = run.footprint().expect("a footprint");
    assert_eq!((pid, first.at, last.at, max), (8, 40_000, 50_000, 25));
    assert!(
        run.run_span().is_none(),
        "the first life has no sample after its warm-up"
    );
}

#[test]
fn log_lines_are_placed_on_the_run_clock() {
    let clock = Clock::start();
    let at = std::time::UNIX_EPOCH + Duration::from_millis(clock.unix_ms + 2_500);
    let stamp = humantime::format_rfc3339_micros(at).to_string();
    let lines = vec![
        format!("{stamp}  INFO x: y"),
        "   backtrace line".to_owned(),
    ];
    let stamped = stamp_agent_log(&clock, lines);
    assert_eq!(stamped[0].0, 2_500);
    assert_eq!(
        stamped[1].0, 2_500,
        "an unstamped line keeps the previous time"
    );
    let nginx_at = std::time::UNIX_EPOCH + Duration::from_millis(clock.unix_ms + 10_000);
    let text = humantime::format_rfc3339_seconds(nginx_at).to_string();
    let local = format!(
        "{} [error] 1#1: connect() failed",
        text[..19].replace('-', "/").replace('T', " ")
    );
    let stamped = stamp_nginx_log(&clock, &local, 0);
    let ms = stamped[0].0;
    assert!((9_000..=10_000).contains(&ms), "{ms}");
    // An hour east of UTC: the same wall time is an hour before the run.
    let east = stamp_nginx_log(&clock, &local, 3_600);
    assert_eq!(east[0].0, 0);
}
