//! Privileged, end to end through Debian's nginx, the real Docker engine and
//! the agent as its own process:
//!
//! - the warm path: once a service is ready, 10,000 requests through nginx
//!   (each a new upstream connection) succeed while the agent's cold-start
//!   listener accepts nothing, and the kernel still counts their traffic;
//! - a seed-style `config.json` converted by `autostop import-json` drives a
//!   cold start of a compose project through nginx;
//! - a monitor in `ignore_sources` never wakes a stopped service.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use autostop_tests::agent::{
    container, http_get, httpd_script, metric_sum, setup, AgentConfig, AppletImage, RunningAgent,
};
use autostop_tests::docker::{free_port, inspect, ComposeProject};
use autostop_tests::e2e::Nginx;
use autostop_tests::netns::VethNamespace;
use autostop_tests::{agent_binary, eventually};

/// Requests sent through the warm path.
const WARM_REQUESTS: u64 = 10_000;
/// Client threads sending them.
const WARM_CLIENTS: u64 = 4;

/// `autostop_listener_accepted_total`: connections the agent's cold-start
/// listener accepted, over all services.
fn listener_accepted(agent: &RunningAgent) -> u64 {
    let metrics = agent.metrics();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("autostop_listener_accepted_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no autostop_listener_accepted_total in\n{metrics}")) as u64
}

fn activity_packets(agent: &RunningAgent, service: &str) -> u64 {
    metric_sum(
        &agent.metrics(),
        "autostop_activity_packets_total",
        service,
        |_| true,
    )
}

fn get_through(nginx: SocketAddr, body: &str) {
    let (status, text) = http_get(nginx, "/").unwrap_or_else(|e| panic!("GET via nginx: {e}"));
    assert_eq!((status, text.trim()), (200, body), "answer through nginx");
}

#[test]
fn privileged_warm_path_through_nginx_never_reaches_the_agent() {
    let image = setup();
    let port = free_port();
    let app = container(&image, port, &httpd_script("warm-ok", 0));
    let config = AgentConfig::new(&format!(
        "[[service]]\nname = \"warm\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{}\"]\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n",
        app.name
    ));
    let agent = RunningAgent::start(&config);
    agent.wait_state("warm", "stopped", Duration::from_secs(10));
    let nginx = Nginx::start(port);

    // The cold start: this first request is held by the agent.
    get_through(nginx.addr, "warm-ok");
    agent.wait_state("warm", "ready", Duration::from_secs(30));
    assert!(
        listener_accepted(&agent) >= 1,
        "the cold request went through the agent's listener"
    );
    // Readiness first leaves the warm-up set, then un-steers the port; wait
    // until a request no longer moves the listener's counter.
    let unsteered = eventually(Duration::from_secs(20), || {
        let before = listener_accepted(&agent);
        get_through(nginx.addr, "warm-ok");
        listener_accepted(&agent) == before
    });
    assert!(unsteered, "requests still reach the agent after ready");

    let accepted_before = listener_accepted(&agent);
    let packets_before = activity_packets(&agent, "warm");
    let answered = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WARM_CLIENTS {
            scope.spawn(|| {
                for _ in 0..WARM_REQUESTS / WARM_CLIENTS {
                    get_through(nginx.addr, "warm-ok");
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(answered.load(Ordering::Relaxed), WARM_REQUESTS);
    assert_eq!(
        listener_accepted(&agent),
        accepted_before,
        "warm connections reached the agent's listener"
    );
    // Each request is a new upstream connection (SYN, ACK, request, ACK,
    // FIN...): the kernel saw at least one packet per request.
    let counted = eventually(Duration::from_secs(10), || {
        activity_packets(&agent, "warm") >= packets_before + WARM_REQUESTS
    });
    assert!(
        counted,
        "activity packets went from {packets_before} to only {}",
        activity_packets(&agent, "warm")
    );
    assert_eq!(agent.starts("warm"), 1, "one start for the whole run");
}

#[test]
fn privileged_imported_seed_config_drives_a_compose_cold_start_through_nginx() {
    let image = setup();
    let port = free_port();
    let project = compose_web(&image, port);
    let seed = tempfile::tempdir().expect("tempdir");
    let seed_file = seed.path().join("config.json");
    std::fs::write(
        &seed_file,
        format!(
            r#"{{"services": [{{"name": "seedweb", "port": {port}, "timeout": 600000,
                "mode": "blocking", "composeDir": "{}"}}]}}"#,
            project.path().display()
        ),
    )
    .expect("writing config.json");
    let imported = Command::new(agent_binary())
        .arg("import-json")
        .arg(&seed_file)
        .output()
        .expect("running autostop import-json");
    let services = String::from_utf8_lossy(&imported.stdout).into_owned();
    assert!(
        imported.status.success(),
        "import-json failed: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(services.contains("idle_timeout = \"10m\""), "{services}");

    let config = AgentConfig::new(&services);
    let agent = RunningAgent::start(&config);
    agent.wait_state("seedweb", "stopped", Duration::from_secs(10));
    let web = project.container("web");
    assert_eq!(inspect(&web, "{{.State.Running}}"), "false");

    let nginx = Nginx::start(port);
    get_through(nginx.addr, "seed-ok");
    assert_eq!(inspect(&web, "{{.State.Running}}"), "true");
    assert_eq!(agent.starts("seedweb"), 1);
    assert_eq!(agent.service("seedweb")["idle_timeout_s"], 600);
}

#[test]
fn privileged_an_ignored_monitor_never_wakes_a_stopped_service() {
    let image = setup();
    let port = free_port();
    let app = container(&image, port, &httpd_script("monitored", 0));
    let monitor = VethNamespace::new("mon");
    let config = AgentConfig::new("");
    config.write_raw(&format!(
        "{}ignore_sources = [\"{}/32\"]\n\n[[service]]\nname = \"quiet\"\nport = {port}\n\
         mode = \"blocking\"\ncontainers = [\"{}\"]\nidle_timeout = \"10m\"\n",
        config.agent_table(),
        monitor.ns_addr,
        app.name
    ));
    let agent = RunningAgent::start(&config);
    agent.wait_state("quiet", "stopped", Duration::from_secs(10));

    // The monitor probes the published port through the host's address.
    let target = SocketAddr::new(monitor.host_addr.into(), port);
    for _ in 0..3 {
        let probe = monitor
            .spawn(move || http_get(target, "/"))
            .join()
            .expect("monitor thread");
        assert!(probe.is_err(), "a probe of a stopped service got {probe:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.starts("quiet"), 0, "the monitor woke the service");
    assert_eq!(agent.state("quiet"), "stopped");
    assert_eq!(inspect(&app.name, "{{.State.Running}}"), "false");

    // Anyone else still wakes it, and then the monitor sees it up.
    let (status, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
        .unwrap_or_else(|e| panic!("first request: {e}"));
    assert_eq!((status, body.trim()), (200, "monitored"));
    assert_eq!(agent.starts("quiet"), 1);
    let probe = monitor
        .spawn(move || http_get(target, "/"))
        .join()
        .expect("monitor thread");
    assert!(
        matches!(&probe, Ok((200, body)) if body.trim() == "monitored"),
        "the monitor's probe of the running service: {probe:?}"
    );
}

/// A one-service compose project (`web`, busybox httpd answering
/// `seed-ok`) published on `port`, created but not started.
fn compose_web(image: &AppletImage, port: u16) -> ComposeProject {
    let yaml = format!(
        "version: '2.4'\nservices:\n  web:\n    image: {tag}\n    stop_grace_period: 1s\n    \
         ports: [\"{port}:80\"]\n    command: [\"sh\", \"-c\", {web:?}]\n",
        tag = image.tag,
        web = httpd_script("seed-ok", 0),
    );
    ComposeProject::create(&yaml)
}
