//! Privileged end to end, operations side of `autostop run`: failing open
//! after SIGKILL (no program, link or warm-up table left), failed starts
//! and the crash-loop guard, SIGHUP reloads (broken and valid), and a
//! two-container compose project.

use std::time::Duration;

use autostop_tests::{
    agent::{
        container, http_get, http_get_timeout, httpd_script, local, running, service_toml, setup,
        warming_elements, AgentConfig, RunningAgent,
    },
    docker::{free_port, inspect, inspect_time, ComposeProject},
    eventually, links_of_program,
    netlab::nft_table_exists,
    program_loaded,
};

fn get_ok(port: u16, body: &str) {
    let (status, got) = http_get(local(port), "/").expect("request");
    assert_eq!((status, got.trim()), (200, body));
}

#[test]
fn privileged_sigkill_fails_open_no_program_link_or_warmup_table_left() {
    let image = setup();
    let (warm_port, slow_port) = (free_port(), free_port());
    let warm = container(&image, warm_port, &httpd_script("warm-ok", 0));
    let slow = container(&image, slow_port, &httpd_script("slow-ok", 4));
    let config = AgentConfig::new(&format!(
        "{}{}",
        service_toml("warm", warm_port, &warm.name, "10m"),
        service_toml("slow", slow_port, &slow.name, "10m")
    ));
    let mut agent = RunningAgent::start(&config);
    get_ok(warm_port, "warm-ok");
    agent.wait_state("warm", "ready", Duration::from_secs(10));

    let objects = agent.kernel_objects();
    eprintln!("agent kernel objects: {objects:?}");
    assert!(
        !objects.programs.is_empty(),
        "the agent holds no BPF program"
    );
    assert!(
        objects.links.iter().any(|(_, kind)| kind == "netns"),
        "no sk_lookup (netns) link among {:?}",
        objects.links
    );

    // Wake the slow service and kill the agent inside its warm-up window:
    // container running (a kill during `docker start` may cancel the start),
    // app not listening yet, port in the warming set.
    let waker = std::thread::spawn(move || http_get(local(slow_port), "/"));
    assert!(
        eventually(Duration::from_secs(10), || running(&slow.name)
            && warming_elements(&config.nft_table) > 0),
        "the slow service never ran with its port in the warming set"
    );
    agent.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    let killed = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || !nft_table_exists(
            "inet",
            &config.nft_table
        )),
        "the agent's warm-up table outlived it by 1 s"
    );
    eprintln!("warm-up table gone {:?} after SIGKILL", killed.elapsed());

    assert!(
        eventually(Duration::from_secs(3), || objects
            .programs
            .iter()
            .all(|&id| !program_loaded(id) && links_of_program(id).is_empty())),
        "programs or links of the agent remain: {:?}",
        objects
            .programs
            .iter()
            .filter(|&&id| program_loaded(id))
            .collect::<Vec<_>>()
    );
    let link_ids: Vec<u32> = objects.links.iter().map(|(id, _)| *id).collect();
    let left: Vec<u32> = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .filter(|id| link_ids.contains(id))
        .collect();
    assert!(left.is_empty(), "links of the agent remain: {left:?}");
    assert_eq!(warming_elements(&config.nft_table), 0);
    get_ok(warm_port, "warm-ok");
    // The held client lost its holder; the slow app itself comes up anyway.
    let _ = waker.join();
    assert!(
        eventually(Duration::from_secs(10), || http_get(local(slow_port), "/")
            .is_ok_and(|(s, b)| s == 200 && b.trim() == "slow-ok")),
        "the slow service never answered after the agent died"
    );
    assert!(running(&warm.name) && running(&slow.name));
}

#[test]
fn privileged_failed_start_502_then_crash_loop_guard_holds() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, "exit 1");
    let config = AgentConfig::new(&service_toml("bad", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("bad", "stopped", Duration::from_secs(10));

    let (status, _) = http_get(local(port), "/").expect("held request");
    assert_eq!(status, 502, "held HTTP client of a failed start");
    agent.wait_state("bad", "failed", Duration::from_secs(5));
    let reason = agent.service("bad")["last_error"].clone();
    assert!(
        reason.as_str().is_some_and(|r| !r.is_empty()),
        "failed without a reason: {}",
        agent.service("bad")
    );

    // Two more failures (each after its backoff) trip the guard.
    for n in 2..=3u64 {
        let reply = http_get_timeout(local(port), "/", Duration::from_secs(20));
        assert!(
            !matches!(reply, Ok((200, _))),
            "failure {n}: a request succeeded"
        );
        assert!(
            eventually(Duration::from_secs(20), || agent.start_failures("bad") >= n),
            "failure {n} never recorded: {}",
            agent.metrics()
        );
    }
    let starts = agent.starts("bad");
    assert_eq!(starts, 3, "three starts before the guard trips");
    for _ in 0..3 {
        let reply = http_get_timeout(local(port), "/", Duration::from_secs(5));
        assert!(
            !matches!(reply, Ok((200, _))),
            "crash-looping service answered"
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert_eq!(
        agent.starts("bad"),
        starts,
        "the crash-loop guard let a start through"
    );
    assert_eq!(agent.state("bad"), "failed");
}

#[test]
fn privileged_sighup_keeps_old_config_on_error_and_applies_valid_change() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("reload-ok", 0));
    let config = AgentConfig::new(&service_toml("rel", port, &c.name, "10m"));
    let agent = RunningAgent::start(&config);
    get_ok(port, "reload-ok");
    agent.wait_state("rel", "ready", Duration::from_secs(10));
    let started_at = inspect(&c.name, "{{.State.StartedAt}}");

    // Broken: an invalid duration on a known line.
    let broken = service_toml("rel", port, &c.name, "3 mins x");
    let text = format!("{}{broken}", config.agent_table());
    let line = text
        .lines()
        .position(|l| l.starts_with("idle_timeout"))
        .expect("idle_timeout line")
        + 1;
    config.write_raw(&text);
    agent.signal(libc::SIGHUP);
    let needle = format!("autostop.toml:{line}:");
    agent.wait_log(&needle, Duration::from_secs(10));
    assert_eq!(agent.state("rel"), "ready", "service no longer managed");
    assert_eq!(agent.service("rel")["idle_timeout_s"], 600);
    get_ok(port, "reload-ok");

    // Valid: a new idle timeout applies without restarting the container.
    config.write(&service_toml("rel", port, &c.name, "2s"));
    agent.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || agent.service("rel")
            ["idle_timeout_s"]
            == 2),
        "new idle timeout not applied: {}",
        agent.service("rel")
    );
    assert_eq!(inspect(&c.name, "{{.State.StartedAt}}"), started_at);
    assert_eq!(agent.starts("rel"), 1);
    // And it is the timeout in force: silence now stops the container.
    assert!(
        eventually(Duration::from_secs(20), || !running(&c.name)),
        "the new 2 s idle timeout never stopped the container"
    );
}

#[test]
fn privileged_compose_project_starts_in_depends_on_order_and_idle_stops_both() {
    let image = setup();
    let port = free_port();
    let yaml = format!(
        "version: '2.4'\nservices:\n  db:\n    image: {tag}\n    stop_grace_period: 1s\n    \
         command: [\"sh\", \"-c\", {db:?}]\n  web:\n    image: {tag}\n    stop_grace_period: 1s\n    \
         depends_on: [db]\n    ports: [\"{port}:80\"]\n    command: [\"sh\", \"-c\", {web:?}]\n",
        tag = image.tag,
        db = httpd_script("db", 0),
        web = httpd_script("web-ok", 0),
    );
    let project = ComposeProject::create(&yaml);
    let (db, web) = (project.container("db"), project.container("web"));
    let config = AgentConfig::new(&format!(
        "[[service]]\nname = \"stack\"\nport = {port}\nmode = \"blocking\"\n\
         compose_dir = \"{}\"\nidle_timeout = \"3s\"\nstart_timeout = \"60s\"\n",
        project.path().display()
    ));
    let agent = RunningAgent::start(&config);
    agent.wait_state("stack", "stopped", Duration::from_secs(10));

    get_ok(port, "web-ok");
    assert!(running(&db) && running(&web), "both containers run");
    let (db_at, web_at) = (
        inspect_time(&db, ".State.StartedAt"),
        inspect_time(&web, ".State.StartedAt"),
    );
    assert!(db_at <= web_at, "web started before its dependency db");
    assert_eq!(agent.starts("stack"), 1);

    assert!(
        eventually(Duration::from_secs(30), || !running(&db) && !running(&web)),
        "the project was not idle-stopped (db {}, web {})",
        running(&db),
        running(&web)
    );
    agent.wait_state("stack", "stopped", Duration::from_secs(10));
}
