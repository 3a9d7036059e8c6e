//! Actor tests for failed starts on tokio's paused clock: timeout, runtime
//! errors, a container dying while starting, retry backoff and the
//! crash-loop guard.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::fakes::{is_failed, settings, Call, Harness, Ready};
use super::{Command, ContainerEvent, ManualCommand, Observed, ServiceError, ServiceState};
use super::{StartBlock, SteerMode, Trigger};

const WAKE: Command = Command::Wake {
    trigger: Trigger::HeldConnection,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn start_timeout_fails_and_keeps_steering() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        *rt.ready_default.lock().expect("lock") = Ready::Hang;
    });
    h.wait_state(ServiceState::Stopped).await;
    let t = Instant::now();
    h.send(WAKE).await;
    let st = h.wait(is_failed).await;
    assert_eq!(st.since - t, secs(30));
    assert!(st
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("start timeout")));
    use SteerMode::*;
    let warming = Warming {
        already_started: false,
    };
    assert_eq!(h.log.steering(), vec![Steered, warming, Steered]);
}

#[tokio::test(start_paused = true)]
async fn start_error_fails_without_wait_ready() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        let err = Err(ServiceError::Runtime("boom".into()));
        rt.start_results.lock().expect("lock").push_back(err);
    });
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    let st = h.wait(is_failed).await;
    assert!(matches!(st.state, ServiceState::Failed { ref reason } if reason.contains("boom")));
    assert_eq!(h.log.count(Call::WaitReady), 0);
    assert_eq!(h.log.steering().last(), Some(&SteerMode::Steered));
}

#[tokio::test(start_paused = true)]
async fn container_death_while_starting_fails() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        *rt.ready_default.lock().expect("lock") = Ready::Hang;
    });
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    h.wait_state(ServiceState::Starting).await;
    let died = ContainerEvent::Died { exit_code: Some(1) };
    h.send(Command::ContainerEvent(died)).await;
    h.wait(is_failed).await;
    assert_eq!(h.log.steering().last(), Some(&SteerMode::Steered));
    assert_eq!(h.log.count(Call::Stop), 0);
}

#[tokio::test(start_paused = true)]
async fn wake_inside_backoff_is_deferred_not_dropped() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        let mut s = rt.ready_script.lock().expect("lock");
        s.push_back(Ready::Fail("unhealthy".into()));
        s.push_back(Ready::Fail("unhealthy".into()));
    });
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    let failed = h.wait(is_failed).await;
    let t_fail = failed.since;
    assert_eq!(
        failed.start_block,
        Some(StartBlock::Backoff {
            retry_at: t_fail + secs(1)
        }),
        "the pending backoff is published for the listener"
    );
    h.send(WAKE).await;
    h.settle().await;
    assert_eq!(h.log.count(Call::Start), 1, "deferred by the 1 s backoff");
    // The deferred wake retries at +1 s and fails again; the next wake
    // waits 2 s.
    sleep(Duration::from_millis(1500)).await;
    h.send(WAKE).await;
    let ready = h.wait_state(ServiceState::Ready).await;
    assert_eq!(ready.start_block, None, "nothing blocks a ready service");
    let starts = h.log.times(Call::Start);
    assert_eq!(starts[1..], [t_fail + secs(1), t_fail + secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn crash_loop_guard_ignores_wakes_until_operator_acts() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        *rt.ready_default.lock().expect("lock") = Ready::Fail("crash".into());
    });
    h.wait_state(ServiceState::Stopped).await;
    for _ in 0..3 {
        h.send(WAKE).await;
        sleep(secs(10)).await;
    }
    assert_eq!(h.log.count(Call::Start), 3);
    for _ in 0..5 {
        h.send(WAKE).await;
        sleep(secs(600)).await;
    }
    assert_eq!(h.log.count(Call::Start), 3, "guard latched");
    let latched = h.handle.status();
    assert!(is_failed(&latched.state));
    assert_eq!(latched.start_block, Some(StartBlock::CrashLoop));

    h.send(Command::Manual(ManualCommand::Start)).await;
    h.settle().await;
    assert_eq!(h.log.count(Call::Start), 4, "manual start resets the guard");
    let again = h.wait(is_failed).await;
    assert!(
        matches!(again.start_block, Some(StartBlock::Backoff { .. })),
        "after the reset one failure is a backoff, not a crash loop: {:?}",
        again.start_block
    );

    // Failed once more (backoff pending); a config change resets it all.
    h.send(Command::ConfigChanged(settings())).await;
    h.send(WAKE).await;
    h.settle().await;
    assert_eq!(h.log.count(Call::Start), 5);
}

#[tokio::test(start_paused = true)]
async fn adoption_is_an_answer_from_docker_or_a_failure_to_get_one() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    assert!(!h.handle.status().adopted, "nothing observed yet");
    h.wait_state(ServiceState::Stopped).await;
    assert!(h.handle.status().adopted);

    // Docker down: the failed look counts (the agent is ready to serve what
    // it can); the state stays unknown until Docker answers.
    let down = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        let err = Err(ServiceError::Unreachable("down".into()));
        rt.observe_script.lock().expect("lock").push_back(err);
    });
    let mut status = down.handle.subscribe();
    status.wait_for(|s| s.adopted).await.expect("actor alive");
    assert_eq!(down.handle.status().state, ServiceState::Unknown);
}

/// Seen in the 30-minute soak: a dockerd restart made three starts of a
/// busy service fail with "docker unreachable" within a second, the
/// crash-loop guard latched, and its visitors got 503s for minutes after
/// Docker was back. Docker not answering is not the service failing.
#[tokio::test(start_paused = true)]
async fn docker_unreachable_starts_do_not_latch_the_crash_loop_guard() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        let mut results = rt.start_results.lock().expect("lock");
        for _ in 0..5 {
            results.push_back(Err(ServiceError::Unreachable("connect refused".into())));
        }
    });
    h.wait_state(ServiceState::Stopped).await;
    for tried in 1..=5 {
        h.send(WAKE).await;
        h.settle().await;
        let failed = h.handle.status();
        assert!(is_failed(&failed.state), "{:?}", failed.state);
        assert_eq!(
            failed.start_block, None,
            "a Docker outage blocked the next wake"
        );
        assert_eq!(h.log.count(Call::Start), tried, "the wake tried again");
    }
    // Docker is back: the next visitor's wake starts it.
    h.send(WAKE).await;
    let ready = h.wait_state(ServiceState::Ready).await;
    assert_eq!(ready.start_block, None);
    assert_eq!(h.log.count(Call::Start), 6);
}
