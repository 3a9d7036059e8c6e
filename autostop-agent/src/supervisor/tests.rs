//! Unit tests of the supervisor: what ends the agent and what does not.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{deadline::block_on, Supervisor, TaskBoard, TaskState};

fn supervisor() -> (Supervisor, CancellationToken) {
    let token = CancellationToken::new();
    (Supervisor::new(token.clone(), TaskBoard::default()), token)
}

async fn cancelled_soon(token: &CancellationToken) -> bool {
    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_task_panic_cancels_the_token_and_is_recorded() {
    let (sup, token) = supervisor();
    let quiet = sup.spawn("quiet", {
        let token = token.clone();
        async move { token.cancelled().await }
    });
    let boom = sup.spawn("boom", async { panic!("injected") });
    assert!(cancelled_soon(&token).await, "the panic did not cancel");
    boom.join().await;
    quiet.join().await;
    assert_eq!(sup.failure().as_deref(), Some("task boom panicked"));
    let board = sup.board().snapshot();
    assert_eq!(board["boom"], TaskState::Panicked);
    assert_eq!(board["quiet"], TaskState::Stopped);
}

#[tokio::test]
async fn an_early_end_is_fatal() {
    let (sup, token) = supervisor();
    sup.spawn("short", async {}).join().await;
    assert!(token.is_cancelled());
    assert_eq!(sup.board().snapshot()["short"], TaskState::Ended);
    assert!(!TaskState::Ended.healthy());
    assert_eq!(
        sup.failure().as_deref(),
        Some("task short ended unexpectedly")
    );
}

#[tokio::test]
async fn ends_after_shutdown_or_retirement_are_normal() {
    let (sup, token) = supervisor();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let retired = sup.spawn("service:web", async move {
        let _ = stop_rx.await;
    });
    retired.retire();
    let _ = stop_tx.send(());
    retired.join().await;
    assert!(!token.is_cancelled(), "a retired task's end is expected");
    assert!(!sup.board().snapshot().contains_key("service:web"));

    let worker = sup.spawn("worker", {
        let token = token.clone();
        async move { token.cancelled().await }
    });
    assert_eq!(sup.board().snapshot()["worker"], TaskState::Running);
    token.cancel();
    worker.join().await;
    assert_eq!(sup.board().snapshot()["worker"], TaskState::Stopped);
    assert_eq!(sup.failure(), None);
}

#[tokio::test]
async fn adopted_handles_are_judged_the_same_way() {
    let (sup, token) = supervisor();
    let handle = tokio::spawn(async { panic!("in someone else's task") });
    sup.adopt("steering", handle).join().await;
    assert!(token.is_cancelled());
    assert_eq!(sup.board().snapshot()["steering"], TaskState::Panicked);
}

#[tokio::test]
async fn join_all_aborts_a_task_that_ignores_shutdown() {
    let (sup, token) = supervisor();
    let stuck = sup.spawn("stuck", std::future::pending::<()>());
    let polite = sup.spawn("polite", {
        let token = token.clone();
        async move { token.cancelled().await }
    });
    token.cancel();
    let began = std::time::Instant::now();
    Supervisor::join_all(vec![stuck, polite], Duration::from_millis(300)).await;
    assert!(began.elapsed() < Duration::from_secs(3));
    let board = sup.board().snapshot();
    assert_eq!(board["stuck"], TaskState::Stopped);
    assert_eq!(board["polite"], TaskState::Stopped);
    assert_eq!(sup.failure(), None);
}

#[test]
fn block_on_waits_for_a_cancellation_from_another_thread() {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
    });
    block_on(token.cancelled());
    assert!(token.is_cancelled());
    t.join().expect("thread");
}
