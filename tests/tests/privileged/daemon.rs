//! Privileged, end to end, with the machine's Docker daemon restarted and
//! reconfigured (issue #7 scenarios 6 and 7): the agent survives a dockerd
//! stop and start and cold-starts its service afterwards; with Docker's
//! userland proxy off, cold starts from 127.0.0.1 and from an external
//! client are answered, the warm path and the idle stop work and activity
//! counts stay exact on the DNAT'd loopback path.
//!
//! Every test that restarts dockerd lives in this one module: `cargo xtask
//! test` runs it alone (`daemon::`, with `AUTOSTOP_TEST_RESTART_DOCKERD=1`),
//! with one thread, after every other module, so nothing else uses Docker
//! while it restarts. The [`DockerDaemon`] guard restores daemon.json and a
//! running daemon even when a test fails.

use std::{net::SocketAddr, time::Duration};

use autostop_tests::activity::{
    assert_packets, send_datagrams, udp_container, udp_service_toml, wait_counting, UdpSink,
};
use autostop_tests::agent::{
    container, http_get, httpd_script, local, running, service_toml, setup, AgentConfig,
    RunningAgent,
};
use autostop_tests::daemon::{
    answers, docker_proxy_running, require_restart_allowed, DockerDaemon, DAEMON_JSON,
};
use autostop_tests::docker::{docker, free_port, unique, TestNetwork};
use autostop_tests::e2e::Nginx;
use autostop_tests::eventually;
use autostop_tests::netns::VethNamespace;

/// Whether the agent's `/healthz` says Docker answers.
fn docker_reachable(agent: &RunningAgent) -> bool {
    let (_, body) = http_get(agent.status, "/healthz").expect("GET /healthz");
    let health: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz JSON {body:?}: {e}"));
    health["docker_reachable"] == true
}

/// 127.0.0.1, any port: where loopback senders bind.
fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// `GET /` from the client namespace to the host's address.
fn get_from(client: &VethNamespace, port: u16) -> Result<(u16, String), String> {
    let addr = SocketAddr::new(client.host_addr.into(), port);
    client
        .spawn(move || http_get(addr, "/"))
        .join()
        .expect("namespace client")
}

/// `GET /` from 127.0.0.1 and from the client namespace at the same time:
/// both must be answered by the app with `body`.
fn first_connections_both_ways(client: &VethNamespace, port: u16, body: &str) {
    let from_loopback = std::thread::spawn(move || http_get(local(port), "/"));
    let from_outside = get_from(client, port);
    let from_loopback = from_loopback.join().expect("loopback client");
    for (path, answer) in [("127.0.0.1", from_loopback), ("external", from_outside)] {
        let (status, text) = answer.unwrap_or_else(|e| panic!("{path} first connection: {e}"));
        assert_eq!(
            (status, text.trim()),
            (200, body),
            "{path} first connection"
        );
    }
}

#[test]
fn privileged_scenario6_agent_recovers_from_a_dockerd_restart_and_cold_starts_after_it() {
    let image = setup();
    let daemon = DockerDaemon::take();
    let (cold_port, warm_port) = (free_port(), free_port());
    let cold = container(&image, cold_port, &httpd_script("cold", 1));
    let warm = container(&image, warm_port, &httpd_script("warm", 1));
    // A counted service on a bridge of its own, which dockerd brings back
    // after its restart: the classifier must still see traffic into it.
    let network = TestNetwork::create(&unique("as-restart"));
    let udp_port = free_port();
    let udp = udp_container(&image, udp_port, Some(&network.name));
    docker(&["start", &udp.name]);
    let sink = UdpSink::bind(&udp.name, false);
    let config = AgentConfig::new(&format!(
        "{}{}{}",
        service_toml("cold", cold_port, &cold.name, "1h"),
        service_toml("warm", warm_port, &warm.name, "1h"),
        udp_service_toml("udp", udp_port, &udp.name)
    ));
    let agent = RunningAgent::start(&config);
    let send_one = || send_datagrams(loopback(), local(udp_port), 1);
    let before = wait_counting(&agent, "udp", 0, send_one);
    agent.wait_state("cold", "stopped", Duration::from_secs(30));
    let (status, _) = http_get(local(warm_port), "/").expect("first start of warm");
    assert_eq!(status, 200);
    agent.wait_state("warm", "ready", Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(30), || docker_reachable(&agent)),
        "the agent never reported Docker reachable"
    );

    daemon.stop();
    assert!(
        eventually(Duration::from_secs(30), || !docker_reachable(&agent)),
        "the agent never noticed that dockerd stopped"
    );
    daemon.start();
    assert!(
        eventually(Duration::from_secs(60), || docker_reachable(&agent)),
        "the agent did not see Docker again within 60 s of dockerd answering"
    );
    // dockerd stopped the warm service's container with itself (no
    // live-restore here): the agent must see it stopped and steer again.
    assert!(!running(&warm.name), "{} survived the restart", warm.name);
    agent.wait_state("cold", "stopped", Duration::from_secs(30));
    agent.wait_state("warm", "stopped", Duration::from_secs(30));

    // Counting goes on across the restart, on the same bridge.
    drop(sink);
    docker(&["start", &udp.name]);
    let _sink = UdpSink::bind(&udp.name, false);
    let total = wait_counting(&agent, "udp", before, send_one);
    send_datagrams(loopback(), local(udp_port), 71);
    assert_packets(&agent, "udp", total + 71, "after the dockerd restart");

    // The next cold starts, by a first connection: through nginx, and
    // straight from 127.0.0.1 for the service that was warm before.
    let nginx = Nginx::start(cold_port);
    let (status, body) = http_get(nginx.addr, "/")
        .unwrap_or_else(|e| panic!("cold start through nginx: {e}\n{}", nginx.error_log()));
    assert_eq!((status, body.trim()), (200, "cold"));
    let (status, body) = http_get(local(warm_port), "/").expect("second start of warm");
    assert_eq!((status, body.trim()), (200, "warm"));
    assert_eq!(agent.starts("cold"), 1, "exactly one start of cold");
    assert_eq!(
        agent.starts("warm"),
        2,
        "one start before the restart, one after"
    );
    agent.wait_state("cold", "ready", Duration::from_secs(30));
    agent.wait_state("warm", "ready", Duration::from_secs(30));
    assert!(running(&cold.name) && running(&warm.name));
}

#[test]
fn privileged_scenario7_userland_proxy_off_cold_warm_idle_and_exact_counts() {
    let image = setup();
    let mut daemon = DockerDaemon::take();
    daemon.set_userland_proxy(false);
    let client = VethNamespace::new("npx");

    let web_port = free_port();
    let web = container(&image, web_port, &httpd_script("proxy-off", 2));
    let udp_port = free_port();
    let udp = udp_container(&image, udp_port, None);
    docker(&["start", &udp.name]);
    let _sink = UdpSink::bind(&udp.name, false);
    assert!(
        !docker_proxy_running(udp_port),
        "dockerd still runs a docker-proxy for {udp_port} with the userland proxy off"
    );
    let config = AgentConfig::new(&format!(
        "{}{}",
        service_toml("web", web_port, &web.name, "8s"),
        udp_service_toml("udp", udp_port, &udp.name)
    ));
    let agent = RunningAgent::start(&config);
    agent.wait_state("web", "stopped", Duration::from_secs(30));

    // Counts on the DNAT'd paths: 127.0.0.1 (OUTPUT DNAT, route_localnet)
    // and an external client (PREROUTING DNAT).
    let mut total = wait_counting(&agent, "udp", 0, || {
        send_datagrams(loopback(), local(udp_port), 1);
    });
    send_datagrams(loopback(), local(udp_port), 97);
    total = assert_packets(&agent, "udp", total + 97, "127.0.0.1, proxy off (DNAT)");
    let (bind, to) = (
        SocketAddr::new(client.ns_addr.into(), 0),
        SocketAddr::new(client.host_addr.into(), udp_port),
    );
    client
        .spawn(move || send_datagrams(bind, to, 53))
        .join()
        .expect("namespace sender");
    assert_packets(&agent, "udp", total + 53, "external client, proxy off");

    // Cold start: first connections from 127.0.0.1 and from outside at once.
    first_connections_both_ways(&client, web_port, "proxy-off");
    assert_eq!(
        agent.starts("web"),
        1,
        "one start for both first connections"
    );
    assert!(
        !docker_proxy_running(web_port),
        "a docker-proxy serves {web_port}"
    );

    // Warm path, both ways in.
    agent.wait_state("web", "ready", Duration::from_secs(30));
    for i in 0..20 {
        let local_answer = http_get(local(web_port), "/");
        let outside_answer = get_from(&client, web_port);
        for answer in [local_answer, outside_answer] {
            let (status, body) = answer.unwrap_or_else(|e| panic!("warm request {i}: {e}"));
            assert_eq!(
                (status, body.trim()),
                (200, "proxy-off"),
                "warm request {i}"
            );
        }
    }

    // Idle stop, and the port is steered again: the next first connection
    // (from both sides at once) cold-starts it once more.
    agent.wait_state("web", "stopped", Duration::from_secs(60));
    assert!(
        !running(&web.name),
        "{} still runs after the idle stop",
        web.name
    );
    first_connections_both_ways(&client, web_port, "proxy-off");
    assert_eq!(agent.starts("web"), 2);
}

#[test]
fn privileged_a_failing_test_leaves_dockerd_configured_as_found_and_running() {
    // Outside the caught panic below: a run that may not restart dockerd
    // fails here instead of passing with nothing done.
    require_restart_allowed();
    let image = setup();
    let original = std::fs::read(DAEMON_JSON).ok();
    const FAILURE: &str = "a test failing with the proxy off and dockerd stopped";
    let failed = std::panic::catch_unwind(|| {
        let mut daemon = DockerDaemon::take();
        daemon.set_userland_proxy(false);
        daemon.stop();
        panic!("{FAILURE}");
    });
    let payload = failed.expect_err("the inner test failed");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    assert_eq!(message, Some(FAILURE), "it failed where it was meant to");
    assert_eq!(
        std::fs::read(DAEMON_JSON).ok(),
        original,
        "{DAEMON_JSON} was not restored byte for byte"
    );
    assert!(answers(), "dockerd was left stopped");
    // Back on the original setting: a published port gets a docker-proxy
    // again exactly when the original daemon.json does not turn it off.
    let proxy_was_on = original
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["userland-proxy"].as_bool())
        .unwrap_or(true);
    let port = free_port();
    let probe = udp_container(&image, port, None);
    docker(&["start", &probe.name]);
    assert_eq!(
        docker_proxy_running(port),
        proxy_was_on,
        "the userland proxy is not back to its original setting"
    );
}
