//! Privileged end to end: the agent never exposes more than Docker
//! publishes. A service published on 127.0.0.1 only is steered on
//! 127.0.0.1 only while it sleeps (a client from another network
//! namespace reaching the host's own address is refused and wakes
//! nothing), one published on every address is served to that client, and
//! one published on a single non-loopback address (a veth end) is steered
//! on that address only.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use autostop_tests::{
    agent::{http_get, httpd_script, local, running, service_toml, setup, AgentConfig},
    agent::{AppletImage, RunningAgent},
    docker::{free_port, unique, TestContainer},
    netns::VethNamespace,
};

/// A stopped container publishing `publish` (`[ADDR:]PORT:80`), serving
/// `body` over HTTP once started.
fn published(image: &AppletImage, publish: &str, body: &str) -> TestContainer {
    TestContainer::create(
        &unique("as-expose"),
        &["-p", publish],
        &image.tag,
        &["sh", "-c", &httpd_script(body, 0)],
    )
}

/// Connects to `addr` and expects the stock path's refusal.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("expected ECONNREFUSED from {addr}, got {other:?}"),
    }
}

#[test]
fn privileged_a_loopback_published_service_is_not_reachable_from_outside_while_it_sleeps() {
    let image = setup();
    let port = free_port();
    let c = published(&image, &format!("127.0.0.1:{port}:80"), "lo-only");
    let config = AgentConfig::new(&service_toml("lo", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("lo", "stopped", Duration::from_secs(10));

    let ns = VethNamespace::new("expose");
    let remote = SocketAddr::from((ns.host_addr, port));
    let outside = ns
        .spawn(move || TcpStream::connect_timeout(&remote, Duration::from_secs(5)))
        .join()
        .expect("namespace client");
    match outside {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("a client outside reached a loopback-only service: {other:?}"),
    }
    // Another local address of the host, from the host itself.
    assert_refused(SocketAddr::from((ns.host_addr, port)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.starts("lo"), 0, "a refused client woke the service");
    assert!(!running(&c.name));
    assert_eq!(agent.state("lo"), "stopped");

    let (status, body) = http_get(local(port), "/").expect("loopback client");
    assert_eq!((status, body.trim()), (200, "lo-only"));
    assert_eq!(agent.starts("lo"), 1);
}

#[test]
fn privileged_an_every_address_service_is_served_cold_to_a_client_outside() {
    let image = setup();
    let port = free_port();
    let c = published(&image, &format!("{port}:80"), "everywhere");
    let config = AgentConfig::new(&service_toml("all", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("all", "stopped", Duration::from_secs(10));

    let ns = VethNamespace::new("expose-all");
    let remote = SocketAddr::from((ns.host_addr, port));
    let answer = ns
        .spawn(move || http_get(remote, "/"))
        .join()
        .expect("namespace client")
        .expect("the cold request from outside is answered");
    assert_eq!((answer.0, answer.1.trim()), (200, "everywhere"));
    assert_eq!(agent.starts("all"), 1);
}

#[test]
fn privileged_a_service_published_on_one_address_is_steered_on_that_address_only() {
    let image = setup();
    // The host end of a veth pair: a non-loopback address of this host (the
    // kernel here has no dummy interfaces), reached from the namespace.
    let ns = VethNamespace::new("expose-one");
    let port = free_port();
    let c = published(
        &image,
        &format!("{}:{port}:80", ns.host_addr),
        "one-address",
    );
    let config = AgentConfig::new(&service_toml("one", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("one", "stopped", Duration::from_secs(10));

    assert_refused(local(port));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.starts("one"),
        0,
        "loopback woke a service it may not reach"
    );

    let published_addr = SocketAddr::from((ns.host_addr, port));
    let (status, body) = ns
        .spawn(move || http_get(published_addr, "/"))
        .join()
        .expect("namespace client")
        .expect("the client of the published address is served cold");
    assert_eq!((status, body.trim()), (200, "one-address"));
    assert_eq!(agent.starts("one"), 1);
}
