//! Privileged: the agent is never half-alive. A log reader that goes away
//! costs counted log lines, not liveness or a clean exit; a panic in a
//! service task or in the API ends the agent promptly with a failure status
//! after its clean-up; systemd's notify protocol (fake `NOTIFY_SOCKET`):
//! `READY=1` after adoption, `WATCHDOG=1` pings that stop while the runtime
//! is frozen, `STOPPING=1` at exit; a clean-up that hangs is cut short by
//! the hard deadline; `/healthz` is 200 from its first answer; and the
//! shipped unit verifies.
//!
//! The fault-injection tests run `autostop-test-hooks`, the agent built with
//! the `test-hooks` feature (`cargo xtask build --test-hooks`; `cargo xtask
//! test` builds it).

use std::{
    os::unix::process::ExitStatusExt as _,
    process::Command,
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{
        container, http_get, http_get_timeout, http_post, httpd_script, local, service_toml, setup,
        AgentConfig, Launch, RunningAgent, AGENT_START,
    },
    docker::free_port,
    eventually,
    notify::NotifySocket,
    test_hooks_binary,
};

/// `autostop_log_write_errors_total` from `/metrics`.
fn log_write_errors(agent: &RunningAgent) -> f64 {
    agent
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("autostop_log_write_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("autostop_log_write_errors_total in /metrics")
}

/// Waits until the API answers and `name` has been adopted.
fn wait_adopted(agent: &mut RunningAgent, name: &str) {
    let ok = eventually(AGENT_START, || {
        agent.exited().is_none()
            && http_get(agent.status, "/api/services").is_ok()
            && agent.state(name) != "unknown"
    });
    assert!(ok, "the agent never served its API with {name} adopted");
}

#[test]
fn privileged_lost_log_reader_costs_lines_not_liveness() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("pipe-ok", 0));
    let config = AgentConfig::new(&service_toml("piped", port, &c.name, "10m"));
    let mut agent = RunningAgent::spawn_with(
        &config,
        Launch {
            close_stderr_after: Some(2),
            ..Launch::default()
        },
    );
    wait_adopted(&mut agent, "piped");
    assert!(
        eventually(Duration::from_secs(5), || agent.logs().len() == 2),
        "the reader did not take its two lines"
    );
    let objects = agent.kernel_objects();
    objects.assert_attached();

    // A cold start logs several lines into the closed pipe.
    let (status, body) = http_get(local(port), "/").expect("cold start through the agent");
    assert_eq!((status, body.trim()), (200, "pipe-ok"));
    agent.wait_state("piped", "ready", Duration::from_secs(10));
    assert!(
        log_write_errors(&agent) > 0.0,
        "lines written into the closed pipe were not counted"
    );
    let (status, health) = http_get(agent.status, "/healthz").expect("healthz");
    assert_eq!(
        status, 200,
        "unhealthy after losing the log reader: {health}"
    );
    let health: serde_json::Value = serde_json::from_str(&health).expect("healthz JSON");
    for task in [
        "api",
        "coldstart",
        "docker-events",
        "steering",
        "service:piped",
    ] {
        assert_eq!(health["tasks"][task], "running", "{task} in {health}");
    }

    let began = Instant::now();
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM after EPIPE: {status} after {:?}",
        began.elapsed()
    );
    objects.assert_gone(Duration::from_secs(3));
    assert!(
        !autostop_tests::netlab::nft_table_exists("inet", &config.nft_table),
        "the warm-up table was not removed"
    );
    // Stock path: the running container answers directly.
    let (status, body) = http_get(local(port), "/").expect("direct request");
    assert_eq!((status, body.trim()), (200, "pipe-ok"));
}

/// Runs the test-hooks agent with `AUTOSTOP_TEST_PANIC=site`, triggers the
/// panic with a start request and checks the agent is gone within 2 s,
/// with a failure status, after its clean-up.
fn panic_ends_the_agent(site: &str) {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("never", 0));
    let config = AgentConfig::new(&service_toml("victim", port, &c.name, "10m"));
    let mut agent = RunningAgent::spawn_with(
        &config,
        Launch {
            binary: Some(test_hooks_binary()),
            env: vec![("AUTOSTOP_TEST_PANIC".to_owned(), site.to_owned())],
            ..Launch::default()
        },
    );
    wait_adopted(&mut agent, "victim");
    agent.wait_log("test hooks compiled in", Duration::from_secs(5));
    let objects = agent.kernel_objects();
    objects.assert_attached();

    let began = Instant::now();
    // The API answers 202 (service panic) or drops the connection (API
    // panic); either way the agent must go.
    let _ = http_post(agent.status, "/api/services/victim/start");
    let status = agent.wait_exit(Duration::from_secs(2));
    let took = began.elapsed();
    eprintln!("agent exited with {status} {took:?} after the panic");
    assert_eq!(
        (status.code(), status.signal()),
        (Some(1), None),
        "want exit status 1 after a clean shutdown (70: the clean-up hung)"
    );
    let logs = agent.logs().join("\n");
    assert!(logs.contains("injected panic"), "panic not logged");
    assert!(
        logs.contains("autostop stopped"),
        "the clean-up did not finish"
    );
    objects.assert_gone(Duration::from_secs(3));
    assert!(
        !autostop_tests::netlab::nft_table_exists("inet", &config.nft_table),
        "the warm-up table was not removed"
    );
}

#[test]
fn privileged_panic_in_a_service_task_ends_the_agent_cleanly() {
    panic_ends_the_agent("service");
}

#[test]
fn privileged_panic_in_the_api_handler_ends_the_agent_cleanly() {
    panic_ends_the_agent("api");
}

#[test]
fn privileged_hung_cleanup_is_cut_short_by_the_deadline() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("never", 0));
    let config = AgentConfig::new(&service_toml("stuck", port, &c.name, "10m"));
    let mut agent = RunningAgent::spawn_with(
        &config,
        Launch {
            binary: Some(test_hooks_binary()),
            env: vec![("AUTOSTOP_TEST_HANG".to_owned(), "cleanup".to_owned())],
            ..Launch::default()
        },
    );
    wait_adopted(&mut agent, "stuck");
    agent.wait_log("test hooks compiled in", Duration::from_secs(5));
    let objects = agent.kernel_objects();
    objects.assert_attached();
    // The deadline is 10 s from the start of the shutdown.
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(70),
        "want the deadline's exit status 70, got {status}"
    );
    assert!(agent
        .logs()
        .iter()
        .any(|l| l.contains("clean-up did not finish")));
    objects.assert_gone(Duration::from_secs(3));
}

/// Watchdog pings (`WATCHDOG=1` datagrams) received after `from`.
fn pings_after(socket: &NotifySocket, from: Instant) -> Vec<Instant> {
    socket
        .received()
        .into_iter()
        .filter(|n| n.at > from && n.text == "WATCHDOG=1\n")
        .map(|n| n.at)
        .collect()
}

#[test]
fn privileged_systemd_notify_ready_watchdog_freeze_and_stopping() {
    let image = setup();
    let (warm_port, cold_port) = (free_port(), free_port());
    let warm = container(&image, warm_port, &httpd_script("warm", 0));
    let cold = container(&image, cold_port, &httpd_script("cold", 0));
    let _ = Command::new("docker").args(["start", &warm.name]).output();
    let config = AgentConfig::new(&format!(
        "{}{}",
        service_toml("warm", warm_port, &warm.name, "10m"),
        service_toml("cold", cold_port, &cold.name, "10m")
    ));
    let socket = NotifySocket::bind();
    // Watchdog every 1 s: pings every 0.5 s. Three seconds after READY=1,
    // the runtime's workers are all kept busy for four seconds.
    let (freeze_after, freeze_for) = (Duration::from_secs(3), Duration::from_secs(4));
    let mut agent = RunningAgent::spawn_with(
        &config,
        Launch {
            binary: Some(test_hooks_binary()),
            env: vec![
                (
                    "NOTIFY_SOCKET".to_owned(),
                    socket.path.display().to_string(),
                ),
                ("WATCHDOG_USEC".to_owned(), "1000000".to_owned()),
                (
                    "AUTOSTOP_TEST_FREEZE".to_owned(),
                    format!("{}:{}", freeze_after.as_millis(), freeze_for.as_millis()),
                ),
            ],
            ..Launch::default()
        },
    );

    let ready = socket.wait_for("READY=1", AGENT_START);
    assert!(
        ready.text.contains("STATUS=2 services adopted"),
        "READY=1 status: {:?}",
        ready.text
    );
    // Adoption came first: no service is still unknown.
    for name in ["warm", "cold"] {
        let state = agent.state(name);
        assert_ne!(state, "unknown", "{name} not adopted at READY=1");
    }
    assert_eq!(agent.state("warm"), "ready");
    assert_eq!(agent.state("cold"), "stopped");

    // Regular pings before the freeze.
    std::thread::sleep(freeze_after - Duration::from_millis(500));
    let before = pings_after(&socket, ready.at);
    assert!(
        before.len() >= 3,
        "only {} pings in the {:?} after READY=1",
        before.len(),
        freeze_after - Duration::from_millis(500)
    );

    // The frozen runtime sends none; they resume afterwards.
    std::thread::sleep(freeze_for + Duration::from_secs(2));
    let pings = pings_after(&socket, ready.at);
    let (gap_start, gap) = pings
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .expect("pings");
    assert!(
        gap >= freeze_for - Duration::from_secs(1),
        "the longest silence between pings was {gap:?}: a frozen runtime kept pinging"
    );
    assert!(
        gap_start - ready.at >= freeze_after - Duration::from_secs(1),
        "the silence began {:?} after READY=1, before the freeze",
        gap_start - ready.at
    );
    let after = pings.iter().filter(|at| **at > gap_start + gap).count();
    eprintln!(
        "watchdog: {} pings before the freeze, longest silence {gap:?} from {:?} after READY=1, {after} after",
        before.len(),
        gap_start - ready.at
    );
    assert!(
        after >= 2,
        "pings did not resume after the freeze ({after})"
    );
    assert!(agent.exited().is_none(), "the agent died while frozen");

    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status}");
    let stopping = socket.wait_for("STOPPING=1", Duration::from_secs(1));
    assert!(stopping.at > gap_start + gap);
    let last = socket.received().last().cloned().expect("a notice");
    assert!(last.text.starts_with("STOPPING=1"), "last notice {last:?}");
}

/// Issue #29: `/healthz` answered 503 for a while after the agent said it
/// was running (Docker not asked yet), and a bench or a load balancer
/// asking then saw an unhealthy agent. Polled from its very first answer,
/// every answer is 200, and so is the first one after the "running" line.
#[test]
fn privileged_healthz_is_200_from_the_first_answer() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("health-ok", 0));
    let config = AgentConfig::new(&service_toml("early", port, &c.name, "10m"));
    let mut agent = RunningAgent::spawn_with(&config, Launch::default());
    let mut answers = Vec::new();
    let began = Instant::now();
    while answers.is_empty() || began.elapsed() < Duration::from_secs(4) {
        assert!(agent.exited().is_none(), "the agent exited");
        assert!(began.elapsed() < AGENT_START, "no answer from /healthz");
        if let Ok((status, body)) =
            http_get_timeout(agent.status, "/healthz", Duration::from_secs(5))
        {
            let running = agent
                .logs()
                .iter()
                .any(|l| l.contains("autostop is running"));
            answers.push((status, body, running));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (i, (status, body, _)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "answer {i} of {}: {body}", answers.len());
    }
    assert!(
        answers.iter().any(|(_, _, running)| *running),
        "never answered after the running line"
    );
}

#[test]
fn privileged_shipped_unit_verifies() {
    // systemd-analyze verify works offline (no systemd as PID 1 needed),
    // but wants ExecStart= to exist: point it at the built agent.
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/autostop.service"),
    )
    .expect("reading packaging/autostop.service");
    for line in ["Type=notify", "NotifyAccess=all", "Restart=on-failure"] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    assert!(
        unit.lines().any(|l| l.starts_with("WatchdogSec=")),
        "the unit lacks WatchdogSec="
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("autostop.service");
    let agent = autostop_tests::agent_binary();
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/autostop", &agent.display().to_string()),
    )
    .expect("writing the unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (package systemd; `cargo xtask setup`)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
