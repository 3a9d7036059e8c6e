//! Machine tests of the hand-back: a service is reported ready only once
//! its ports are back on the stock path, while held connections may go to
//! the containers as soon as they answer.

use std::time::Duration;

use tokio::time::Instant;

use super::effects::{Effect, Input, Op, OpOutcome};
use super::fakes::settings;
use super::machine::Machine;
use super::{Command, LifecycleEvent, ManualCommand, Observed, ServiceState, SteerMode, Trigger};

fn adopted(observed: Observed, now: Instant) -> (Machine, Vec<Effect>) {
    let (mut m, fx) = Machine::new("web".into(), settings(), now);
    assert_eq!(fx, vec![Effect::Run(Op::Observe)]);
    let fx = m.handle(Input::OpDone(OpOutcome::Observed(Ok(observed))), now);
    (m, fx)
}

fn notified_ready(fx: &[Effect]) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::Notify(LifecycleEvent::Ready { .. })))
}

#[tokio::test(start_paused = true)]
async fn ready_comes_after_the_hand_back_and_held_connections_go_before() {
    let t0 = Instant::now();
    let (mut m, _) = adopted(Observed::AllStopped, t0);
    m.handle(
        Input::Command(Command::Wake {
            trigger: Trigger::Syn,
        }),
        t0,
    );
    assert_eq!(m.state(), &ServiceState::Starting);
    assert!(!m.status().upstream_ready);

    let t1 = t0 + Duration::from_secs(5);
    let fx = m.handle(Input::OpDone(OpOutcome::Ready(Ok(()))), t1);
    assert_eq!(fx, vec![Effect::Run(Op::HandBack)]);
    assert_eq!(
        m.state(),
        &ServiceState::Starting,
        "not ready before the hand-back"
    );
    assert!(m.status().upstream_ready, "held connections may go now");

    let fx = m.handle(
        Input::OpDone(OpOutcome::HandedBack),
        t1 + Duration::from_millis(3),
    );
    assert_eq!(m.state(), &ServiceState::Ready);
    assert!(notified_ready(&fx), "{fx:?}");
    assert!(
        fx.iter().all(|e| !matches!(e, Effect::Steer(_))),
        "the hand-back op did the steering: {fx:?}"
    );
    assert_eq!(m.learned_start(), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn adopting_a_running_service_hands_back_before_ready() {
    let t0 = Instant::now();
    let (mut m, fx) = adopted(Observed::AllRunning, t0);
    assert_eq!(fx, vec![Effect::Run(Op::HandBack)]);
    assert_eq!(m.state(), &ServiceState::Unknown);
    assert!(m.status().upstream_ready);
    let fx = m.handle(Input::OpDone(OpOutcome::HandedBack), t0);
    assert_eq!(m.state(), &ServiceState::Ready);
    assert!(!notified_ready(&fx), "adoption is not a start: {fx:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_hand_back_wins_and_a_late_outcome_is_ignored() {
    let t0 = Instant::now();
    let (mut m, _) = adopted(Observed::AllStopped, t0);
    m.handle(Input::Command(Command::Manual(ManualCommand::Start)), t0);
    m.handle(Input::OpDone(OpOutcome::Ready(Ok(()))), t0);
    let fx = m.handle(Input::Command(Command::Manual(ManualCommand::Stop)), t0);
    assert!(fx.contains(&Effect::CancelOp), "{fx:?}");
    assert!(fx.contains(&Effect::Steer(SteerMode::Steered)), "{fx:?}");
    assert!(!m.status().upstream_ready);
    let fx = m.handle(Input::OpDone(OpOutcome::HandedBack), t0);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(m.state(), &ServiceState::Stopping);
}
