//! A non-agent listener always wins its port (the port guard), through the
//! whole agent: another program listening on a stopped service's published
//! port gets it back (un-steered, a problem entry, no start for a wake),
//! until it stops listening; then the port is steered again and wakes the
//! service.

use super::{service, Harness};
use crate::{agent::PORT_RECHECK_EVERY, published::HostPort};

use super::fakes::wake;

#[tokio::test(start_paused = true)]
async fn a_program_listening_on_a_sleeping_services_port_wins_it_until_it_leaves() {
    let h = Harness::start(&service("web", 18100, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    h.until("the port steered", async |h| {
        h.steered() == [(HostPort::any(18100), 0)]
    })
    .await;

    // A program starts listening on the port after the agent steered it;
    // the next SYN's wake event finds it.
    h.sockets.listen("127.0.0.1:18100", "python3");
    h.wake.send(wake(0, 18100)).expect("wake");
    h.until("the port un-steered", async |h| h.steered().is_empty())
        .await;
    let problems = h.get("/api/problems").await;
    assert!(
        problems.contains("python3 (pid 4242) listens on 127.0.0.1:18100"),
        "{problems}"
    );
    let view = h.get("/api/services/web").await;
    assert!(view.contains("python3 (pid 4242)"), "{view}");
    // Nothing was started for it, and further wakes start nothing.
    h.wake.send(wake(0, 18100)).expect("wake");
    tokio::time::sleep(PORT_RECHECK_EVERY / 2).await;
    assert!(h.docker.calls.lock().expect("fake").is_empty());
    assert_eq!(h.state("web").await.as_deref(), Some("stopped"));

    // The program leaves: within a recheck the port is steered again, the
    // problem is gone, and a wake starts the service.
    h.sockets.close_all();
    h.until("the port steered again", async |h| {
        h.steered() == [(HostPort::any(18100), 0)]
    })
    .await;
    let problems = h.get("/api/problems").await;
    assert!(!problems.contains("python3"), "{problems}");
    h.wake.send(wake(0, 18100)).expect("wake");
    h.until_state("web", "ready").await;
    assert_eq!(*h.docker.calls.lock().expect("fake"), ["+web"]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_port_taken_while_the_service_sleeps_is_given_back_at_the_next_wake() {
    // A listener on every address takes a binding on every address.
    let h = Harness::start(&service("api", 18101, "30s"), &[], 8).await;
    h.until_state("api", "stopped").await;
    h.sockets.listen("0.0.0.0:18101", "nginx");
    h.wake.send(wake(0, 18101)).expect("wake");
    h.until("the port un-steered", async |h| h.steered().is_empty())
        .await;
    assert!(h.docker.calls.lock().expect("fake").is_empty());
    let problems = h.get("/api/problems").await;
    assert!(problems.contains("nginx (pid 4242)"), "{problems}");
    h.stop().await;
}
