//! Actor tests for the normal lifecycle on tokio's paused clock: wake and
//! start, readiness and learning, idle stop, adoption, external container
//! events, manual commands, Docker outages and shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::fakes::{settings, Call, Harness, Ready};
use super::{
    Command, ContainerEvent, ManualCommand, Observed, ServiceState, StateName, SteerMode, Trigger,
};

const WAKE: Command = Command::Wake {
    trigger: Trigger::Syn,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn wake_storm_starts_exactly_once() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    for _ in 0..200 {
        h.send(WAKE).await;
    }
    h.wait_state(ServiceState::Starting).await;
    assert_eq!(
        h.log.steering().last(),
        Some(&SteerMode::Warming {
            already_started: false
        })
    );
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(h.log.count(Call::Start), 1);
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Start, Call::WaitReady]
    );
    use SteerMode::*;
    let warming = Warming {
        already_started: false,
    };
    assert_eq!(h.log.steering(), vec![Steered, warming, Direct]);
}

#[tokio::test(start_paused = true)]
async fn lifecycle_steps_reach_the_observer_in_order() {
    use super::LifecycleEvent as E;
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    h.wait_state(ServiceState::Ready).await;
    h.send(Command::Manual(ManualCommand::Stop)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(
        h.observer.events(),
        vec![
            E::Starting {
                trigger: Trigger::Syn
            },
            E::Ready {
                took: Some(secs(5)),
                estimate: Some(secs(5)),
            },
            E::Stopping { reason: "manual" },
            E::Stopped { reason: "manual" },
        ]
    );
    // Held connections wait on the status: it reads each new state before
    // that state's observers run (the `Ready` observer persists the learned
    // start time with an fsync).
    use ServiceState::*;
    assert_eq!(
        h.observer.states_seen(),
        [Starting, Ready, Stopping, Stopped].map(Some).to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn ready_learns_start_duration_as_ewma() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    let st = h.wait_state(ServiceState::Ready).await;
    assert_eq!(st.start_estimate, Some(secs(5)));
    h.send(Command::Manual(ManualCommand::Stop)).await;
    h.wait_state(ServiceState::Stopped).await;
    *h.rt.ready_default.lock().expect("lock") = Ready::After(secs(10));
    h.send(WAKE).await;
    h.wait_state(ServiceState::Ready).await;
    // 0.3 * 10 s + 0.7 * 5 s
    assert_eq!(h.handle.learned_start().map(|d| d.as_millis()), Some(6500));
}

#[tokio::test(start_paused = true)]
async fn idle_stop_steers_before_stopping() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    let stop_at = h.log.times(Call::Stop)[0];
    assert_eq!(stop_at - t0, secs(60));
    use SteerMode::*;
    assert_eq!(
        h.log.calls(),
        vec![
            Call::Observe,
            Call::Steer(Direct),
            Call::Steer(Steered),
            Call::Stop
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn traffic_postpones_idle_stop() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    sleep(secs(40)).await;
    h.probe.touch();
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop)[0] - t0, secs(100));
}

#[tokio::test(start_paused = true)]
async fn open_connections_keep_service_up() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.probe.open.store(2, Ordering::SeqCst);
    sleep(secs(200)).await;
    assert_eq!(h.handle.status().state, ServiceState::Ready);
    h.probe.open.store(0, Ordering::SeqCst);
    h.wait_state(ServiceState::Stopped).await;
    let stop = h.log.times(Call::Stop)[0] - t0;
    assert!(stop >= secs(200) && stop <= secs(201), "{stop:?}");
}

#[tokio::test(start_paused = true)]
async fn probe_is_reread_before_stopping() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.probe.touch_on_confirm.store(true, Ordering::SeqCst);
    h.wait_state(ServiceState::Stopped).await;
    // Traffic seen by the re-read at 60 s pushed the stop to 120 s.
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(120)]);
}

#[tokio::test(start_paused = true)]
async fn a_ready_service_reads_the_probe_only_at_its_deadline() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    sleep(secs(59)).await;
    assert_eq!(
        h.probe.reads.load(Ordering::SeqCst),
        0,
        "no tick before the deadline"
    );
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(60)]);
    // One read when the timer fired, one to confirm before stopping.
    assert_eq!(h.probe.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn traffic_rearms_the_deadline_timer_once() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    sleep(secs(10)).await;
    h.probe.touch();
    sleep(secs(20)).await;
    h.probe.touch();
    // The timer at 60 s finds traffic from 30 s and moves to 90 s.
    sleep(secs(35)).await;
    assert_eq!(h.handle.status().state, ServiceState::Ready);
    assert_eq!(h.probe.reads.load(Ordering::SeqCst), 1);
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(90)]);
    assert_eq!(h.probe.reads.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_service_never_reads_the_probe() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    sleep(secs(3600)).await;
    assert_eq!(h.probe.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn held_service_has_no_timer_until_released() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.send(Command::Manual(ManualCommand::Hold)).await;
    sleep(secs(600)).await;
    assert_eq!(h.probe.reads.load(Ordering::SeqCst), 0);
    h.send(Command::Manual(ManualCommand::Release)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(600)]);
}

#[tokio::test(start_paused = true)]
async fn wake_while_stopping_restarts_once_after_stop() {
    let h = Harness::spawn(Observed::AllRunning, settings(), |rt| {
        *rt.stop_delay.lock().expect("lock") = secs(5);
    });
    h.wait_state(ServiceState::Stopping).await;
    for _ in 0..10 {
        h.send(WAKE).await;
    }
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Stop, Call::Start, Call::WaitReady]
    );
    assert_eq!(
        h.log.times(Call::Start)[0] - h.log.times(Call::Stop)[0],
        secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn adoption_running_stopped_partial() {
    let run = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    run.wait_state(ServiceState::Ready).await;
    assert_eq!(
        run.log.calls(),
        vec![Call::Observe, Call::Steer(SteerMode::Direct)]
    );

    let stop = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    stop.wait_state(ServiceState::Stopped).await;
    sleep(secs(5)).await;
    assert_eq!(
        stop.log.calls(),
        vec![Call::Observe, Call::Steer(SteerMode::Steered)]
    );

    let part = Harness::spawn(Observed::Partial, settings(), |_| {});
    part.wait_state(ServiceState::Stopped).await;
    sleep(secs(5)).await;
    assert_eq!(part.log.runtime_calls(), vec![Call::Observe]);
    part.send(WAKE).await;
    part.wait_state(ServiceState::Ready).await;
    assert_eq!(part.log.count(Call::Start), 1);
}

#[tokio::test(start_paused = true)]
async fn observe_error_retries_with_backoff() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        let mut s = rt.observe_script.lock().expect("lock");
        s.push_back(Err(super::ServiceError::Unreachable("down".into())));
        s.push_back(Err(super::ServiceError::Unreachable("down".into())));
    });
    h.settle().await;
    let st = h.handle.status();
    assert_eq!(st.state, ServiceState::Unknown);
    assert!(st.last_error.is_some());
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(
        h.log.times(Call::Observe),
        vec![t0, t0 + secs(1), t0 + secs(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn external_start_and_death() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    h.send(Command::ContainerEvent(ContainerEvent::Started))
        .await;
    let st = h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        st.start_estimate, None,
        "external start duration is unknown"
    );
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe, Call::WaitReady]);
    // Docker's DNAT may have taken SYNs before the agent heard of the
    // start: the warm-up must release them.
    assert!(h.log.steering().contains(&SteerMode::Warming {
        already_started: true
    }));
    let died = ContainerEvent::Died {
        exit_code: Some(137),
    };
    h.send(Command::ContainerEvent(died)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.count(Call::Stop), 0);
    assert_eq!(h.log.steering().last(), Some(&SteerMode::Steered));
}

/// Settings resumed from an old agent's snapshot.
fn resumed(r: super::Resumed) -> super::ServiceSettings {
    super::ServiceSettings {
        resume: Some(r),
        ..settings()
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_resumed_after_a_hand_over_waits_for_readiness_and_starts_nothing() {
    let starting = super::Resumed {
        starting: true,
        ..Default::default()
    };
    let h = Harness::spawn(Observed::AllRunning, resumed(starting.clone()), |_| {});
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::WaitReady],
        "readiness waited for, never a second docker start"
    );
    assert!(h.log.steering().contains(&SteerMode::Warming {
        already_started: true
    }));
    // The old agent had not started the containers yet: adopted stopped.
    let h = Harness::spawn(Observed::AllStopped, resumed(starting), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe]);
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_keeps_the_idle_timer_the_hold_and_the_crash_loop_guard() {
    // Idle for 45 s of its 60 in the old agent: stopped 15 s after.
    let t0 = Instant::now();
    let idle = super::Resumed {
        idle_for: Some(secs(45)),
        ..Default::default()
    };
    let h = Harness::spawn(Observed::AllRunning, resumed(idle), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(15)]);

    // On hold: never idle-stopped.
    let held = super::Resumed {
        hold: true,
        idle_for: Some(secs(45)),
        ..Default::default()
    };
    let h = Harness::spawn(Observed::AllRunning, resumed(held), |_| {});
    sleep(secs(300)).await;
    let st = h.handle.status();
    assert!(st.hold);
    assert_eq!(st.state, ServiceState::Ready);

    // Latched: adopted failed, and a wake starts nothing.
    let latched = super::Resumed {
        crash_loop: Some("exit code 1".to_owned()),
        ..Default::default()
    };
    let h = Harness::spawn(Observed::AllStopped, resumed(latched), |_| {});
    let st = h.wait(super::fakes::is_failed).await;
    assert_eq!(st.start_block, Some(super::StartBlock::CrashLoop));
    assert_eq!(st.last_error.as_deref(), Some("exit code 1"));
    h.send(WAKE).await;
    sleep(secs(5)).await;
    assert_eq!(h.log.count(Call::Start), 0, "the latch holds");
}

#[tokio::test(start_paused = true)]
async fn hold_blocks_idle_stop_until_release() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.send(Command::Manual(ManualCommand::Hold)).await;
    sleep(secs(300)).await;
    let st = h.handle.status();
    assert!(st.hold);
    assert_eq!(st.state, ServiceState::Ready);
    h.send(Command::Manual(ManualCommand::Release)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.times(Call::Stop), vec![t0 + secs(300)]);
}

#[tokio::test(start_paused = true)]
async fn keep_awake_blocks_idle_stop_and_its_end_restarts_the_timer() {
    let t0 = Instant::now();
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    h.send(Command::KeepAwake(vec!["needed by app".into()]))
        .await;
    sleep(secs(300)).await;
    let st = h.handle.status();
    assert_eq!(st.state, ServiceState::Ready);
    assert_eq!(st.keep_awake, ["needed by app"]);
    h.send(Command::KeepAwake(Vec::new())).await;
    h.wait_state(ServiceState::Stopped).await;
    // A full idle timeout (60 s) after the last reason went, not at once.
    let stopped = h.log.times(Call::Stop)[0];
    assert_eq!(stopped, t0 + secs(360), "{:?}", stopped - t0);
    assert!(h.handle.status().keep_awake.is_empty());
}

#[tokio::test(start_paused = true)]
async fn set_idle_timeout_applies_immediately() {
    let t0 = Instant::now();
    let mut s = settings();
    s.idle_timeout = secs(600);
    let h = Harness::spawn(Observed::AllRunning, s, |_| {});
    sleep(Duration::from_millis(30_500)).await;
    h.send(Command::Manual(ManualCommand::SetIdleTimeout(secs(10))))
        .await;
    let st = h.wait_state(ServiceState::Stopped).await;
    assert_eq!(st.idle_timeout, secs(10));
    assert_eq!(
        h.log.times(Call::Stop),
        vec![t0 + Duration::from_millis(30_500)]
    );
}

#[tokio::test(start_paused = true)]
async fn manual_stop_and_start() {
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    h.send(Command::Manual(ManualCommand::Stop)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe, Call::Stop]);
    h.send(Command::Manual(ManualCommand::Start)).await;
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(h.log.count(Call::Start), 1);
}

#[tokio::test(start_paused = true)]
async fn docker_outage_goes_unknown_then_readopts() {
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    h.send(Command::DockerUnreachable).await;
    h.wait_state(ServiceState::Unknown).await;
    h.send(WAKE).await;
    sleep(secs(600)).await;
    assert_eq!(
        h.log.calls(),
        vec![Call::Observe, Call::Steer(SteerMode::Direct)]
    );
    *h.rt.observe_default.lock().expect("lock") = Observed::AllStopped;
    h.send(Command::DockerBack).await;
    // Adopted as stopped, then the wake remembered during the outage starts it.
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Observe, Call::Start, Call::WaitReady]
    );
    // No lifecycle step says Docker was lost (the adoption and the
    // remembered wake's start are one step: `starting` is announced).
    assert_eq!(h.observer.unannounced(), [StateName::Unknown]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_actor_without_touching_containers() {
    let h = Harness::spawn(Observed::AllStopped, settings(), |rt| {
        *rt.ready_default.lock().expect("lock") = Ready::Hang;
    });
    h.wait_state(ServiceState::Stopped).await;
    h.send(WAKE).await;
    h.wait_state(ServiceState::Starting).await;
    h.send(Command::Shutdown).await;
    let joined = tokio::time::timeout(secs(1), h.join).await;
    assert!(matches!(joined, Ok(Ok(()))));
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Start, Call::WaitReady]
    );
    assert_eq!(
        h.handle.wake(Trigger::Api).await,
        Err(super::ServiceError::ActorGone)
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_token_ends_actor() {
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    h.cancel.cancel();
    let joined = tokio::time::timeout(secs(1), h.join).await;
    assert!(matches!(joined, Ok(Ok(()))));
    sleep(secs(600)).await;
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe]);
}
