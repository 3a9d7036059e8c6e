//! Demands (the pre-warm model's input) stay bounded by minutes, not by
//! how often a service is woken.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use super::{ServiceMemory, HABIT_DAYS_KEPT};

#[test]
fn demands_in_one_minute_are_kept_once() {
    let mut memory = ServiceMemory::default();
    let minute = 1_796_029_200;
    for second in 0..60 {
        memory.note_demand(minute + second);
    }
    assert_eq!(memory.demands, vec![minute]);
    memory.note_demand(minute + 60);
    memory.note_demand(minute - 1);
    assert_eq!(memory.demands, vec![minute - 1, minute, minute + 60]);
}

#[test]
fn a_service_woken_every_ten_seconds_keeps_one_demand_a_minute() {
    let mut memory = ServiceMemory::default();
    let start = 1_796_029_200;
    let two_days = 2 * 86_400;
    for at in (start..start + two_days).step_by(10) {
        memory.note_demand(at);
    }
    assert_eq!(memory.demands.len(), 2 * 1_440);
    assert!(memory.demands.windows(2).all(|w| w[1] - w[0] == 60));
    // Old ones still go.
    memory.note_demand(start + two_days + HABIT_DAYS_KEPT * 86_400);
    assert_eq!(memory.demands.len(), 1);
}
