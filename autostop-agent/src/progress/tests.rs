//! The progress model: phase transitions from inspect-like observations,
//! the runtime's book (begin, observe, fail, clear), and what a visitor
//! sees (labels, stale steps, failure, summary).

use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn keys(k: &str) -> Vec<String> {
    vec![format!("id-{k}"), k.to_string()]
}

fn phases(p: &Progress) -> Vec<Phase> {
    p.steps.iter().map(|s| s.phase).collect()
}

#[test]
fn observations_move_phases_forward() {
    use Seen::*;
    assert_eq!(next_phase(Phase::Starting, NotRunning), Phase::Starting);
    assert_eq!(next_phase(Phase::Waiting, NotRunning), Phase::Waiting);
    assert_eq!(
        next_phase(Phase::Starting, HealthStarting),
        Phase::HealthPending
    );
    assert_eq!(next_phase(Phase::HealthPending, Healthy), Phase::Healthy);
    assert_eq!(
        next_phase(Phase::HealthPending, Unhealthy),
        Phase::Unhealthy
    );
    assert_eq!(next_phase(Phase::Starting, Running), Phase::Running);
    assert_eq!(next_phase(Phase::Starting, Completed), Phase::Completed);
    assert_eq!(
        next_phase(Phase::Starting, Exited { ours: true }),
        Phase::Failed
    );
    // An exit from before this start is not this start's failure.
    assert_eq!(
        next_phase(Phase::Starting, Exited { ours: false }),
        Phase::Starting
    );
    // Re-inspections while its port is probed keep the port phase.
    assert_eq!(next_phase(Phase::PortWait, Running), Phase::PortWait);
    assert_eq!(
        next_phase(Phase::PortAnswering, Healthy),
        Phase::PortAnswering
    );
    assert_eq!(
        next_phase(Phase::PortWait, Exited { ours: true }),
        Phase::Failed
    );
}

#[test]
fn the_book_follows_a_two_container_start() {
    let book = Book::default();
    assert_eq!(book.get("web"), Progress::default());
    book.begin("web", vec![keys("db"), keys("app")]);
    assert_eq!(phases(&book.get("web")), [Phase::Waiting, Phase::Waiting]);
    book.set("web", "id-db", Phase::Starting);
    book.observe("web", "db", Seen::HealthStarting);
    assert_eq!(
        phases(&book.get("web")),
        [Phase::HealthPending, Phase::Waiting]
    );
    let entered = book.get("web").steps[0].since;
    // The same phase again keeps its entry time.
    book.observe("web", "db", Seen::HealthStarting);
    assert_eq!(book.get("web").steps[0].since, entered);
    book.observe("web", "id-db", Seen::Healthy);
    book.set("web", "app", Phase::Starting);
    book.observe("web", "app", Seen::Running);
    book.set("web", "app", Phase::PortWait);
    book.observe("web", "app", Seen::Running);
    assert_eq!(phases(&book.get("web")), [Phase::Healthy, Phase::PortWait]);
    book.set("web", "app", Phase::PortAnswering);
    assert_eq!(
        phases(&book.get("web")),
        [Phase::Healthy, Phase::PortAnswering]
    );
    // Unknown keys and services change nothing.
    book.set("web", "other", Phase::Failed);
    book.set("other", "app", Phase::Failed);
    assert_eq!(
        phases(&book.get("web")),
        [Phase::Healthy, Phase::PortAnswering]
    );
    book.clear("web");
    assert_eq!(book.get("web"), Progress::default());
}

#[test]
fn a_failed_start_marks_the_step_it_was_on() {
    let book = Book::default();
    book.begin("web", vec![keys("db"), keys("app")]);
    book.observe("web", "db", Seen::Healthy);
    book.fail("web");
    assert_eq!(phases(&book.get("web")), [Phase::Healthy, Phase::Failed]);
    // An exit already marked keeps the mark where it is.
    book.begin("web", vec![keys("db"), keys("app")]);
    book.observe("web", "db", Seen::Exited { ours: true });
    book.fail("web");
    assert_eq!(phases(&book.get("web")), [Phase::Failed, Phase::Waiting]);
    // Everything done: the last one failed (its readiness did not hold).
    book.begin("web", vec![keys("db")]);
    book.observe("web", "db", Seen::Running);
    book.fail("web");
    assert_eq!(phases(&book.get("web")), [Phase::Failed]);
}

#[test]
fn ensure_keeps_matching_steps_and_replaces_others() {
    let book = Book::default();
    book.begin("web", vec![keys("a")]);
    book.observe("web", "a", Seen::Healthy);
    let began = book.get("web").began;
    book.ensure("web", vec![vec!["a".into()]]);
    assert_eq!(phases(&book.get("web")), [Phase::Healthy]);
    book.ensure("web", vec![keys("b"), keys("c")]);
    assert_eq!(phases(&book.get("web")), [Phase::Waiting, Phase::Waiting]);
    assert_eq!(book.get("web").began, began);
    book.retain(|s| s != "web");
    assert_eq!(book.get("web"), Progress::default());
}

fn step(kind: StepKind, phase: Phase, since: Instant) -> Step {
    Step { kind, phase, since }
}

#[test]
fn visitors_see_generic_labels_and_seconds_in_phase() {
    let t0 = Instant::now();
    let progress = Progress {
        began: Some(t0),
        steps: vec![
            step(StepKind::Requirement, Phase::Ready, t0),
            step(StepKind::Container, Phase::Healthy, t0),
            step(
                StepKind::Container,
                Phase::HealthPending,
                t0 + Duration::from_secs(2),
            ),
        ],
    };
    let now = t0 + Duration::from_secs(5);
    let seen = public_steps(&progress, PageStage::Starting(t0), now);
    let labels: Vec<(&str, Phase, u64)> = seen
        .iter()
        .map(|s| (s.label.as_str(), s.phase, s.for_s))
        .collect();
    assert_eq!(
        labels,
        [
            ("required service 1 of 1", Phase::Ready, 5),
            ("container 1 of 2", Phase::Healthy, 5),
            ("container 2 of 2", Phase::HealthPending, 3),
        ]
    );
    assert_eq!(
        summary(&seen),
        "required service 1 of 1: ready \u{b7} container 1 of 2: healthy \u{b7} container 2 of 2: health check pending"
    );
    assert_eq!(done_count(&seen), 2);
    assert!(public_steps(&progress, PageStage::Idle, now).is_empty());
    assert_eq!(summary(&[]), "");
}

#[test]
fn container_steps_of_an_earlier_start_are_left_out() {
    let t0 = Instant::now();
    let progress = Progress {
        began: Some(t0),
        steps: vec![
            step(StepKind::Requirement, Phase::Starting, t0),
            step(StepKind::Container, Phase::Failed, t0),
        ],
    };
    let later = t0 + Duration::from_secs(1);
    let seen = public_steps(&progress, PageStage::Starting(later), later);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].label, "required service 1 of 1");
    // The failure itself is shown once the state says failed.
    let seen = public_steps(&progress, PageStage::Failed, later);
    assert_eq!(seen[1].phase, Phase::Failed);
}

#[test]
fn a_failure_without_a_failed_step_marks_the_unfinished_one() {
    let t0 = Instant::now();
    let progress = Progress {
        began: Some(t0),
        steps: vec![
            step(StepKind::Container, Phase::Healthy, t0),
            step(StepKind::Container, Phase::PortWait, t0),
        ],
    };
    let seen = public_steps(&progress, PageStage::Failed, t0);
    assert_eq!(
        seen.iter().map(|s| s.phase).collect::<Vec<_>>(),
        [Phase::Healthy, Phase::Failed]
    );
    assert_eq!(seen[1].phase.text(), "failed");
}

#[test]
fn a_list_begun_by_name_learns_ids_and_port_phases_move_once() {
    let book = Book::default();
    book.begin("web", vec![vec!["app".into()]]);
    book.ensure("web", vec![keys("app")]);
    book.set("web", "id-app", Phase::PortWait);
    book.set_if("web", "id-app", Phase::Starting, Phase::Failed);
    assert_eq!(phases(&book.get("web")), [Phase::PortWait]);
    book.set_if("web", "app", Phase::PortWait, Phase::PortAnswering);
    assert_eq!(phases(&book.get("web")), [Phase::PortAnswering]);
}
