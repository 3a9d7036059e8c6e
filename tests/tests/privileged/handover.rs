//! Privileged, end to end: hand-over (`autostop upgrade`, `run
//! --takeover`). A new agent takes the running one's sockets and held
//! connections, so clients never see a refusal; the old agent detaches
//! and exits; systemd hears the new main PID; failures leave the old agent
//! serving or the kernel path stock.
//!
//! - Clients loop through nginx for 60 s against a blocking service, a
//!   dynamic one (JSON client) and a raw TCP one, with 2 s idle timeouts
//!   (so some connect during cold starts), while `autostop upgrade` runs 5
//!   times: nothing refused or reset, Docker started each container only
//!   when an agent did, every old agent's kernel objects are gone and the
//!   last agent holds as many links as the first; one warm-up table.
//! - A connection held for a cold start at the hand-over is served.
//! - A bad config, a new agent killed before or after the old one
//!   stopped, a new agent killed after the hand-over: the old agent goes
//!   on, or the kernel path is stock; nothing is left behind.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use autostop_fixtures::nginx::{Nginx, Route};
use autostop_fixtures::wait::alive;
use autostop_tests::{
    agent::{
        container, docker_starts, echo_script, httpd_script, kernel_objects_of, local,
        service_toml, setup, stop_agent, upgrade, warmup_tables, AgentConfig, KernelObjects,
        RunningAgent,
    },
    docker::free_port,
    e2e::http_get,
    eventually,
    notify::NotifySocket,
    test_hooks_binary,
};

/// Bound on one client exchange, a cold start included.
const EXCHANGE: Duration = Duration::from_secs(30);

/// What the clients saw.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
}

/// One client kind's exchange with nginx's port `port`.
fn exchange(kind: &str, port: u16) -> Result<(), String> {
    let addr = local(port);
    match kind {
        "blocking" | "dynamic" => {
            let headers: &[(&str, &str)] = &[("Accept", "application/json")];
            let r = http_get(addr, "/", headers, EXCHANGE).map_err(|e| format!("{e}"))?;
            if r.status == 200 && r.text().trim() == kind {
                Ok(())
            } else {
                Err(format!("status {} body {:?}", r.status, r.text()))
            }
        }
        _ => {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(EXCHANGE))
                .map_err(|e| e.to_string())?;
            s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
            let mut back = [0u8; 5];
            s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
            (&back == b"ping\n")
                .then_some(())
                .ok_or_else(|| format!("echo {back:?}"))
        }
    }
}

#[test]
fn privileged_upgrades_under_load_refuse_nothing_and_leave_one_agent() {
    let image = setup();
    let kinds = ["blocking", "dynamic", "raw"];
    let ports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    let containers = [
        container(&image, ports[0], &httpd_script("blocking", 1)),
        container(&image, ports[1], &httpd_script("dynamic", 0)),
        container(&image, ports[2], echo_script()),
    ];
    let mut toml = String::new();
    for (i, kind) in kinds.iter().enumerate() {
        let mut block = service_toml(kind, ports[i], &containers[i].name, "2s");
        if *kind == "dynamic" {
            block = block.replace("mode = \"blocking\"", "mode = \"dynamic\"");
        }
        toml.push_str(&block);
    }
    let config = AgentConfig::new(&toml);
    let notify = NotifySocket::bind();
    let notify_path = notify.path.display().to_string();
    let first = RunningAgent::start_with_env(&config, &[("NOTIFY_SOCKET", &notify_path)]);
    first.wait_adopted();
    let first_objects = first.kernel_objects();
    first_objects.assert_attached();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let dir = tempfile::tempdir().expect("nginx dir");
    let routes: Vec<Route> = kinds
        .iter()
        .zip(&ports)
        .map(|(kind, port)| {
            let listen = free_port();
            match *kind {
                "raw" => Route::Stream {
                    listen,
                    upstream: *port,
                },
                _ => Route::Http {
                    listen,
                    upstream: *port,
                },
            }
        })
        .collect();
    let nginx = Nginx::start_routes(dir.path(), &routes).expect("nginx");

    // Clients: each kind twice, pausing 0-3 s so services sleep and wake.
    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        for seed in 0..2u64 {
            let (running, tally) = (Arc::clone(&running), Arc::clone(&tally));
            let (kind, port) = (kind.to_string(), routes[i].listen());
            clients.push(thread::spawn(move || {
                let mut n = seed * 7 + i as u64;
                while running.load(Ordering::Relaxed) {
                    let result = exchange(&kind, port);
                    let mut t = tally.lock().expect("tally");
                    match result {
                        Ok(()) => t.ok += 1,
                        Err(e) => t.failures.push(format!("{kind}: {e}")),
                    }
                    drop(t);
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    thread::sleep(Duration::from_millis((n >> 33) % 3000));
                }
            }));
        }
    }

    let started = Instant::now();
    let mut pids = vec![first.pid()];
    let mut objects: Vec<KernelObjects> = vec![first_objects];
    for round in 0..5 {
        thread::sleep(Duration::from_secs(8));
        let pid = upgrade(&config, &[]).unwrap_or_else(|e| panic!("upgrade {round}: {e}"));
        let old = *pids.last().expect("an agent");
        assert!(
            eventually(Duration::from_secs(40), || !alive(old)),
            "round {round}: the old agent {old} did not exit"
        );
        let notice = notify.wait_for(&format!("MAINPID={pid}"), Duration::from_secs(5));
        assert!(
            notice.text.lines().any(|l| l == "READY=1"),
            "round {round}: {:?}",
            notice.text
        );
        objects.push(kernel_objects_of(pid));
        pids.push(pid);
    }
    assert!(
        !notify
            .received()
            .iter()
            .any(|n| n.text.lines().any(|l| l == "STOPPING=1")),
        "an agent that hands over does not tell systemd it stops"
    );
    while started.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(200));
    }
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let tally = tally.lock().expect("tally");
    eprintln!(
        "handover under load: {} exchanges ok, failures {:?}",
        tally.ok, tally.failures
    );
    assert!(
        tally.failures.is_empty(),
        "clients saw failures: {:?}",
        tally.failures
    );
    assert!(
        tally.ok > 30,
        "too few exchanges to mean anything: {}",
        tally.ok
    );

    // One agent's kernel objects, one warm-up table.
    let last = *pids.last().expect("an agent");
    for (pid, objs) in pids.iter().zip(&objects).take(pids.len() - 1) {
        assert!(!alive(*pid));
        objs.assert_gone(Duration::from_secs(5));
    }
    let now = kernel_objects_of(last);
    now.assert_attached();
    assert_eq!(
        now.links.len(),
        objects[0].links.len(),
        "as many links as one agent"
    );
    assert_eq!(
        warmup_tables(&config).len(),
        1,
        "{:?}",
        warmup_tables(&config)
    );

    // Docker started a container only when an agent asked.
    let logs = first.logs().join("\n");
    for c in &containers {
        let asked = logs
            .lines()
            .filter(|l| l.contains("event=\"container_start\"") && l.contains(&c.name))
            .count();
        assert_eq!(docker_starts(&c.name, since), asked, "{}: starts", c.name);
    }
    drop(nginx);

    // Once the services slept, one more upgrade: the API (the new agent's,
    // on the inherited socket) reports the states the old agent had.
    for kind in kinds {
        first.wait_state(kind, "stopped", Duration::from_secs(30));
    }
    assert_eq!(first.act("raw", "hold"), 202);
    assert!(eventually(Duration::from_secs(5), || first.service("raw")
        ["hold"]
        == true));
    let pid = upgrade(&config, &[]).expect("a last upgrade");
    assert!(eventually(Duration::from_secs(40), || !alive(last)));
    for kind in kinds {
        assert_eq!(first.state(kind), "stopped", "{kind} after the hand-over");
    }
    assert_eq!(first.service("raw")["hold"], true, "the operator's hold");
    stop_agent(pid);
}

#[test]
fn privileged_a_connection_held_at_the_hand_over_is_served_by_the_app() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("held", 4));
    let config = AgentConfig::new(&service_toml("held", port, &c.name, "10m"));
    let first = RunningAgent::start(&config);
    first.wait_adopted();
    let client = thread::spawn(move || http_get(local(port), "/", &[], Duration::from_secs(60)));
    first.wait_log("event=\"container_start\"", Duration::from_secs(10));
    let pid = upgrade(&config, &[]).expect("upgrade");
    let r = client.join().expect("client").expect("answered");
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "held"),
        "served by the app"
    );
    assert!(
        first
            .logs()
            .iter()
            .any(|l| l.contains("event=\"handover_passed\"") && l.contains("held=1")),
        "the connection was passed, not answered by the old agent"
    );
    stop_agent(pid);
}

#[test]
fn privileged_failed_hand_overs_leave_the_old_agent_serving_or_the_path_stock() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("alive", 0));
    let services = service_toml("alive", port, &c.name, "2s");
    let config = AgentConfig::new(&services);
    let hooks = test_hooks_binary().display().to_string();
    let serves = |what: &str| {
        let r = http_get(local(port), "/", &[], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 200, "{what}");
    };

    // A bad config: the new agent exits before anything changed.
    let mut first = RunningAgent::start(&config);
    first.wait_adopted();
    // (The new binary is a script that gives the agent a broken file.)
    let bad = config.dir().join("bad.toml");
    std::fs::write(&bad, "[agent\nbroken").expect("bad config");
    let script = config.dir().join("new-agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} run --takeover --config {}\n",
            autostop_tests::agent_binary().display(),
            bad.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let err = upgrade(&config, &["--binary", &script.display().to_string()])
        .expect_err("a bad config cannot take over");
    assert!(err.contains("exited"), "{err}");
    assert!(first.exited().is_none(), "the old agent goes on");
    serves("after a refused config");

    // Killed once offered the sockets: the old agent goes on.
    let mut new = spawn_takeover(&config, &hooks, "offered");
    first.wait_log("event=\"handover_offered\"", Duration::from_secs(30));
    thread::sleep(Duration::from_millis(300));
    kill9(&mut new);
    thread::sleep(Duration::from_millis(500));
    assert!(first.exited().is_none(), "the old agent goes on");
    first.wait_state("alive", "stopped", Duration::from_secs(20));
    serves("after a new agent died before the stop");

    // Killed after the old agent stopped: it detaches and exits non-zero.
    let old_objects = first.kernel_objects();
    first.wait_state("alive", "stopped", Duration::from_secs(20));
    let mut new = spawn_takeover(&config, &hooks, "stopped");
    first.wait_log("event=\"handover_passed\"", Duration::from_secs(30));
    thread::sleep(Duration::from_millis(300));
    let new_objects = kernel_objects_of(i32::try_from(new.id()).expect("pid"));
    kill9(&mut new);
    let status = first.wait_exit(Duration::from_secs(90));
    assert!(
        !status.success(),
        "a failed hand-over after the stop is a failure"
    );
    old_objects.assert_gone(Duration::from_secs(5));
    new_objects.assert_gone(Duration::from_secs(5));
    assert!(
        warmup_tables(&config).is_empty(),
        "{:?}",
        warmup_tables(&config)
    );
    let refused = TcpStream::connect_timeout(&local(port), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "stock path: nothing listens on the sleeping port"
    );

    // A new agent killed after the hand-over: stock within a second.
    let second = RunningAgent::start(&config);
    second.wait_adopted();
    let pid = upgrade(&config, &[]).expect("upgrade");
    let objects = kernel_objects_of(pid);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    objects.assert_gone(Duration::from_secs(1));
    assert!(eventually(Duration::from_secs(1), || warmup_tables(
        &config
    )
    .is_empty()));
}

/// Starts `hooks run --takeover` paused at `point`, as `upgrade` would.
fn spawn_takeover(config: &AgentConfig, hooks: &str, point: &str) -> std::process::Child {
    std::process::Command::new(hooks)
        .args(["run", "--takeover", "--config"])
        .arg(&config.path)
        .env("AUTOSTOP_NFT_TABLE", &config.nft_table)
        .env("AUTOSTOP_TEST_TAKEOVER_PAUSE", point)
        .spawn()
        .expect("spawning the new agent")
}

fn kill9(child: &mut std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}
