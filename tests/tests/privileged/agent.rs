//! Privileged end to end: `autostop run` as its own process against the real
//! Docker engine and the real kernel. Cold starts (raw TCP and a herd of
//! HTTP clients), idle stops, the warm-up window from loopback and from
//! another network namespace, and adoption of containers started by hand or
//! surviving an agent restart. Failure, reload, fail-open and compose
//! scenarios are in `agent_ops`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{
        container, echo_roundtrip, echo_script, http_get, httpd_script, local, running,
        service_toml, setup, steered_entries, warming_elements, AgentConfig, RunningAgent,
    },
    docker::{docker, free_port, inspect},
    eventually,
    netlab::{nft_table_exists, nft_table_listing},
    netns::VethNamespace,
};

#[test]
fn privileged_cold_start_raw_tcp_roundtrips_first_bytes_with_one_start() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, echo_script());
    let config = AgentConfig::new(&service_toml("echo", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("echo", "stopped", Duration::from_secs(10));
    assert!(!running(&c.name));

    let payload: Vec<u8> = (0..32 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let back = echo_roundtrip(local(port), &payload).expect("first connection");
    assert!(back == payload, "the echoed bytes differ from those sent");
    assert!(running(&c.name), "the container runs after the wake");
    agent.wait_state("echo", "ready", Duration::from_secs(10));
    assert_eq!(agent.starts("echo"), 1, "exactly one start");
}

#[test]
fn privileged_herd_of_200_during_one_cold_start_all_answered_one_start() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("herd-ok", 1));
    let config = AgentConfig::new(&service_toml("herd", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("herd", "stopped", Duration::from_secs(10));

    let barrier = Arc::new(Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                http_get(local(port), "/")
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let bad: Vec<_> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, body)) if body.trim() == "herd-ok"))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of 200 not answered by the app: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(agent.starts("herd"), 1, "exactly one start for the herd");
}

#[test]
fn privileged_idle_stop_after_silence_then_steered_again() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("idle-ok", 0));
    let config = AgentConfig::new(&service_toml("idle", port, &c.name, "3s"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("idle", "stopped", Duration::from_secs(10));

    // Traffic for twice the idle timeout keeps it up.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let (status, body) = http_get(local(port), "/").expect("request while warm");
        assert_eq!((status, body.trim()), (200, "idle-ok"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(running(&c.name), "stopped despite traffic");
    assert_eq!(agent.state("idle"), "ready");

    // Silence stops it.
    assert!(
        eventually(Duration::from_secs(20), || !running(&c.name)),
        "still running after 20 s of silence"
    );
    agent.wait_state("idle", "stopped", Duration::from_secs(10));

    // Steered again: the next connection wakes it and is answered.
    let (status, body) = http_get(local(port), "/").expect("request after the idle stop");
    assert_eq!((status, body.trim()), (200, "idle-ok"));
    assert!(running(&c.name));
    assert_eq!(agent.starts("idle"), 2);
}

/// Fires one request every 10 ms at `addr` until `stop` is set, each on its
/// own thread; returns the number of shots and every failure (anything but
/// 200 with `body`), with the time it was fired.
fn fire_every_10ms(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    body: &'static str,
) -> (usize, Vec<String>) {
    let mut shots = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        shots.push(std::thread::spawn(move || {
            let fired = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            match http_get(addr, "/") {
                Ok((200, b)) if b.trim() == body => None,
                other => Some(format!("fired at {fired}: {other:?}")),
            }
        }));
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = shots.len();
    let failures = shots
        .into_iter()
        .filter_map(|s| s.join().expect("shot"))
        .collect();
    (total, failures)
}

#[test]
fn privileged_warmup_zero_refused_zero_reset_from_loopback_and_netns() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("warm-ok", 3));
    let config = AgentConfig::new(&service_toml("warm", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("warm", "stopped", Duration::from_secs(10));
    let ns = VethNamespace::new("warm");
    let remote = SocketAddr::from((ns.host_addr, port));

    // The app listens 3 s after the container starts. Shots run from before
    // the wake until 500 ms after the agent reports ready: the steered
    // phase, the warm-up window and the hand-over to the container. (Not
    // longer: busybox httpd's listen backlog of 9 then becomes the test.)
    let stop = Arc::new(AtomicBool::new(false));
    let (ns_stop, lo_stop) = (Arc::clone(&stop), Arc::clone(&stop));
    let from_ns = ns.spawn(move || fire_every_10ms(remote, ns_stop, "warm-ok"));
    let from_lo = std::thread::spawn(move || fire_every_10ms(local(port), lo_stop, "warm-ok"));
    let ready = eventually(Duration::from_secs(60), || agent.state("warm") == "ready");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (total, failures) = from_lo.join().expect("loopback client");
    let (ns_total, ns_failures) = from_ns.join().expect("netns client");
    assert!(ready, "not ready within 60 s: {}", agent.service("warm"));
    eprintln!("warm-up: {total} shots from loopback, {ns_total} from the namespace");
    assert!(
        failures.is_empty(),
        "loopback: {} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ns_failures.is_empty(),
        "namespace: {} of {ns_total} failed: {:?}",
        ns_failures.len(),
        &ns_failures[..ns_failures.len().min(5)]
    );
    assert_eq!(
        agent.state("warm"),
        "ready",
        "ready by the end of the shots"
    );
    assert_eq!(agent.starts("warm"), 1);
}

#[test]
fn privileged_adopts_hand_started_container_and_survives_agent_restart() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("adopt-ok", 0));
    let config = AgentConfig::new(&service_toml("adopt", port, &c.name, "10m"));
    let mut agent = RunningAgent::start(&config);
    agent.wait_state("adopt", "stopped", Duration::from_secs(10));

    docker(&["start", &c.name]);
    let noticed = Instant::now();
    agent.wait_state("adopt", "ready", Duration::from_secs(1));
    eprintln!("hand start noticed as ready after {:?}", noticed.elapsed());
    assert_eq!(agent.starts("adopt"), 0, "the agent issued a start");
    let started_at = inspect(&c.name, "{{.State.StartedAt}}");

    let get = || {
        let (status, body) = http_get(local(port), "/").expect("request");
        assert_eq!((status, body.trim()), (200, "adopt-ok"));
    };
    get();
    let status = agent.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert!(!status.success());
    for _ in 0..10 {
        get();
        std::thread::sleep(Duration::from_millis(100));
    }

    let agent = RunningAgent::start(&config);
    agent.wait_state("adopt", "ready", Duration::from_secs(10));
    get();
    assert_eq!(
        agent.starts("adopt"),
        0,
        "the restarted agent issued a start"
    );
    assert_eq!(
        inspect(&c.name, "{{.State.StartedAt}}"),
        started_at,
        "the container was restarted"
    );
    assert!(running(&c.name));
}

#[test]
fn privileged_runs_without_nft_or_conntrack_on_path_cold_start_and_idle_stop() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("nopath-ok", 1));
    let config = AgentConfig::new(&service_toml("nopath", port, &c.name, "3s"));
    // An empty directory as the agent's whole PATH: no nft, no conntrack,
    // nothing else to run either.
    let empty = tempfile::tempdir().expect("tempdir");
    let path = empty.path().to_str().expect("utf-8 path");
    let mut agent = RunningAgent::start_with_env(&config, &[("PATH", path)]);
    agent.wait_state("nopath", "stopped", Duration::from_secs(10));
    let listing = nft_table_listing("inet", &config.nft_table);
    assert!(
        listing.contains("flags owner") && listing.contains("set warming"),
        "the agent's warm-up table is missing or not owned:\n{listing}"
    );

    // Cold start through the warm-up window (the app listens 1 s after
    // the start): warm, cool and the conntrack clean-up all ran.
    let (status, body) = http_get(local(port), "/").expect("cold start");
    assert_eq!((status, body.trim()), (200, "nopath-ok"));
    agent.wait_state("nopath", "ready", Duration::from_secs(10));
    assert_eq!(agent.starts("nopath"), 1);

    // Silence stops it; the next connection wakes it again.
    assert!(
        eventually(Duration::from_secs(20), || !running(&c.name)),
        "still running after 20 s of silence"
    );
    agent.wait_state("nopath", "stopped", Duration::from_secs(10));
    let (status, body) = http_get(local(port), "/").expect("second cold start");
    assert_eq!((status, body.trim()), (200, "nopath-ok"));
    assert_eq!(agent.starts("nopath"), 2);

    let netfilter_errors: Vec<String> = agent
        .logs()
        .into_iter()
        .filter(|l| l.contains("warm-up redirect") || l.contains("conntrack"))
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(
        netfilter_errors.is_empty(),
        "netfilter operations failed: {netfilter_errors:?}"
    );
    agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        !nft_table_exists("inet", &config.nft_table),
        "the table outlived the agent"
    );
}

#[test]
fn privileged_ready_is_reported_only_once_the_port_is_back_on_the_stock_path() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("handback-ok", 0));
    let config = AgentConfig::new(&service_toml("handback", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    for round in 0..3 {
        agent.wait_state("handback", "stopped", Duration::from_secs(30));
        assert_eq!(
            steered_entries(agent.pid()),
            1,
            "round {round}: not steered while stopped"
        );
        let client = std::thread::spawn(move || http_get(local(port), "/"));
        // Read the kernel's view the moment the API first says ready: poll
        // without pause (an API answer takes about a millisecond).
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.state("handback") != "ready" {
            assert!(Instant::now() < deadline, "round {round}: never ready");
        }
        assert_eq!(
            steered_entries(agent.pid()),
            0,
            "round {round}: reported ready while the port was still steered"
        );
        assert_eq!(
            warming_elements(&config.nft_table),
            0,
            "round {round}: reported ready while the port was still in warm-up"
        );
        let (code, body) = client
            .join()
            .expect("client")
            .expect("held request answered");
        assert_eq!((code, body.trim()), (200, "handback-ok"));
        let (code, _) = http_get(local(port), "/").expect("stock path");
        assert_eq!(code, 200);
        assert_eq!(
            agent.act("handback", "stop"),
            202,
            "round {round}: manual stop"
        );
    }
}
