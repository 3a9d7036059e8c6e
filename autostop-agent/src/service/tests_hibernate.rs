//! Actor tests for `sleep = "hibernate"` on tokio's paused clock: idle
//! hibernates (no stop, no steering), counted traffic thaws it to ready at
//! once, a paused service is adopted as hibernated, a failed hibernation
//! leaves it ready, a manual stop still stops it.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::fakes::{settings, Call, Harness};
use super::{
    Command, Hibernation, LifecycleEvent, ManualCommand, Observed, ServiceError, ServiceSettings,
    ServiceState, SteerMode,
};
use crate::config::Sleep;

fn hibernating() -> ServiceSettings {
    ServiceSettings {
        sleep: Sleep::Hibernate,
        ..settings()
    }
}

#[tokio::test(start_paused = true)]
async fn idle_hibernates_and_the_first_packet_thaws_without_steering() {
    let h = Harness::spawn(Observed::AllRunning, hibernating(), |_| {});
    h.wait_state(ServiceState::Ready).await;
    let status = h.wait_state(ServiceState::Hibernated).await;
    let got = status.hibernation.expect("hibernation recorded");
    assert_eq!((got.awake, got.resident), (300 << 20, 10 << 20));
    assert!(got.reclaimed);
    assert_eq!(
        h.log.count(Call::Stop),
        0,
        "a hibernated service is not stopped"
    );

    // Quiet: it stays hibernated.
    sleep(Duration::from_secs(30)).await;
    assert_eq!(h.handle.status().state, ServiceState::Hibernated);
    assert_eq!(h.log.count(Call::Thaw), 0);

    // The kernel counts a SYN: thawed within a poll period, ready at once.
    h.probe.touch();
    let touched = Instant::now();
    let ready = h.wait_state(ServiceState::Ready).await;
    assert!(
        ready.since - touched <= Duration::from_millis(200),
        "woke {:?} after the packet",
        ready.since - touched
    );
    assert_eq!(ready.hibernation, None);
    assert_eq!(h.log.count(Call::Thaw), 1);
    assert_eq!(h.log.count(Call::Start), 0, "a thaw is not a cold start");
    assert_eq!(
        h.log.steering(),
        vec![SteerMode::Direct],
        "only the adoption's hand-back: never steered while hibernated"
    );

    // Idle again: hibernates again.
    h.wait_state(ServiceState::Hibernated).await;
    assert_eq!(h.log.count(Call::Hibernate), 2);
    let stops: Vec<_> = h
        .observer
        .events()
        .into_iter()
        .filter(|e| matches!(e, LifecycleEvent::Stopped { .. }))
        .collect();
    assert_eq!(
        stops,
        vec![
            LifecycleEvent::Stopped {
                reason: "hibernate"
            };
            2
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_is_still_the_default() {
    let h = Harness::spawn(Observed::AllRunning, settings(), |_| {});
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.count(Call::Hibernate), 0);
    assert_eq!(h.log.count(Call::Stop), 1);
}

#[tokio::test(start_paused = true)]
async fn a_paused_service_is_adopted_hibernated_and_a_manual_start_thaws_it() {
    let h = Harness::spawn(Observed::Paused, settings(), |_| {});
    let status = h.wait_state(ServiceState::Hibernated).await;
    assert!(status.adopted);
    assert_eq!(h.log.steering(), vec![SteerMode::Direct]);
    h.send(Command::Manual(ManualCommand::Start)).await;
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe, Call::Thaw]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hibernation_leaves_it_ready_and_retries_after_the_idle_timeout() {
    let h = Harness::spawn(Observed::AllRunning, hibernating(), |rt| {
        rt.hibernate_script
            .lock()
            .expect("lock")
            .push_back(Err(ServiceError::Runtime("pause refused".into())));
    });
    h.wait_state(ServiceState::Hibernating).await;
    let back = h.wait_state(ServiceState::Ready).await;
    assert!(
        back.last_error
            .as_deref()
            .is_some_and(|e| e.contains("pause refused")),
        "{back:?}"
    );
    h.wait_state(ServiceState::Hibernated).await;
    assert_eq!(h.log.count(Call::Hibernate), 2);
}

#[tokio::test(start_paused = true)]
async fn paused_without_swap_says_so_and_a_manual_stop_stops_it() {
    let h = Harness::spawn(Observed::AllRunning, hibernating(), |rt| {
        rt.hibernate_script
            .lock()
            .expect("lock")
            .push_back(Ok(Hibernation {
                awake: 300 << 20,
                resident: 300 << 20,
                swap: 0,
                reclaimed: false,
                note: Some("no swap on the host: paused without reclaim".into()),
            }));
    });
    let status = h.wait_state(ServiceState::Hibernated).await;
    let got = status.hibernation.expect("recorded");
    assert!(!got.reclaimed);
    assert!(got.note.is_some_and(|n| n.contains("no swap")));
    h.send(Command::Manual(ManualCommand::Stop)).await;
    h.wait_state(ServiceState::Stopped).await;
    assert_eq!(h.log.count(Call::Stop), 1);
    assert_eq!(h.log.steering().last(), Some(&SteerMode::Steered));
}

#[tokio::test(start_paused = true)]
async fn a_wake_while_hibernating_thaws_once_it_is_paused() {
    let h = Harness::spawn(Observed::AllRunning, hibernating(), |_| {});
    h.wait_state(ServiceState::Hibernating).await;
    h.send(Command::Wake {
        trigger: super::Trigger::Api,
    })
    .await;
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Hibernate, Call::Thaw]
    );
}

#[tokio::test(start_paused = true)]
async fn traffic_while_it_was_being_paused_thaws_it_once_hibernated() {
    let h = Harness::spawn(Observed::AllRunning, hibernating(), |_| {});
    h.wait_state(ServiceState::Hibernating).await;
    // A SYN and its request come during the reclaim; nothing after them.
    sleep(Duration::from_millis(500)).await;
    h.probe.touch();
    // Thawed as soon as the hibernation is done (too soon to watch
    // `Hibernated` itself: the first counter read comes at once).
    h.wait_state(ServiceState::Ready).await;
    assert_eq!(
        h.log.runtime_calls(),
        vec![Call::Observe, Call::Hibernate, Call::Thaw]
    );
    let events = h.observer.events();
    let hibernated = events.iter().position(|e| {
        *e == LifecycleEvent::Stopped {
            reason: "hibernate",
        }
    });
    let waking = events
        .iter()
        .position(|e| matches!(e, LifecycleEvent::Starting { .. }));
    assert!(hibernated < waking && hibernated.is_some(), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn a_queued_client_the_counters_missed_wakes_an_adopted_service() {
    let h = Harness::spawn(Observed::Paused, settings(), |_| {});
    h.wait_state(ServiceState::Hibernated).await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(h.handle.status().state, ServiceState::Hibernated);
    // The kernel completed a handshake and queued it; no counted packet.
    h.probe.open.store(1, std::sync::atomic::Ordering::SeqCst);
    let queued = Instant::now();
    let ready = h.wait_state(ServiceState::Ready).await;
    assert!(ready.since - queued <= Duration::from_millis(1100));
    assert_eq!(h.log.runtime_calls(), vec![Call::Observe, Call::Thaw]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_open_when_it_hibernated_does_not_wake_it() {
    let settings = ServiceSettings {
        hold_while_connected: false,
        ..hibernating()
    };
    let h = Harness::spawn(Observed::AllRunning, settings, |_| {});
    h.wait_state(ServiceState::Ready).await;
    // An idle persistent connection (hold_while_connected is off here).
    h.probe.open.store(1, std::sync::atomic::Ordering::SeqCst);
    h.wait_state(ServiceState::Hibernated).await;
    sleep(Duration::from_secs(10)).await;
    assert_eq!(h.handle.status().state, ServiceState::Hibernated);
    assert_eq!(h.log.count(Call::Thaw), 0);
}
