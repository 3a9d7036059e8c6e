//! Privileged, real Docker (issue #18): what keeps a service awake or
//! wakes it besides its own traffic, through the agent binary.
//!
//! - `requires`: a cold request to an app starts its database first (a
//!   different container, a different service), then the app, and is
//!   answered once both are ready; the app idles out, the database only a
//!   full idle timeout after it.
//! - `keep_warm`: a window opening at the next minute starts the stopped
//!   service on time (trigger `schedule`) and keeps it up, with no traffic,
//!   until the window closes.
//! - `busy_cpu_percent`: a container burning a core with no traffic is not
//!   stopped until it goes quiet.

use std::process::Command;
use std::time::{Duration, Instant};

use autostop_tests::{
    agent::{
        container, httpd_script, metric_sum, running, service_toml, setup, AgentConfig,
        RunningAgent,
    },
    docker::{docker, free_port, inspect},
    e2e::http_get,
    eventually,
};

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// When `name` last started, as Docker says (RFC 3339 with nanoseconds,
/// which sort as text).
fn started_at(name: &str) -> String {
    inspect(name, "{{.State.StartedAt}}")
}

#[test]
fn privileged_a_request_starts_the_required_database_first_and_it_outlives_the_app() {
    let image = setup();
    let (db_port, app_port) = (free_port(), free_port());
    let db = container(&image, db_port, &httpd_script("db-ok", 0));
    let app = container(&image, app_port, &httpd_script("app-ok", 1));
    let services = format!(
        "{}{}requires = [\"sched-db\"]\n\n",
        service_toml("sched-db", db_port, &db.name, "8s"),
        service_toml("sched-app", app_port, &app.name, "4s"),
    );
    let config = AgentConfig::new(&services);
    let agent = RunningAgent::start(&config);
    agent.wait_state("sched-db", "stopped", Duration::from_secs(10));
    agent.wait_state("sched-app", "stopped", Duration::from_secs(10));
    assert_eq!(
        agent.service("sched-db")["needed_by"],
        serde_json::json!(["sched-app"])
    );

    let r = http_get(local(app_port), "/", &[], Duration::from_secs(60)).expect("cold request");
    assert_eq!((r.status, r.text().as_str()), (200, "app-ok\n"));
    assert!(running(&db.name) && running(&app.name));
    assert!(
        started_at(&db.name) < started_at(&app.name),
        "db {} app {}",
        started_at(&db.name),
        started_at(&app.name)
    );
    assert_eq!(
        agent.service("sched-db")["keep_awake"],
        serde_json::json!(["needed by sched-app"])
    );

    // The app idles out first; the database is still up then, and stops
    // a full idle timeout (8 s) later.
    agent.wait_state("sched-app", "stopped", Duration::from_secs(30));
    let app_stopped = Instant::now();
    assert_eq!(
        agent.state("sched-db"),
        "ready",
        "the database outlives the app"
    );
    agent.wait_state("sched-db", "stopped", Duration::from_secs(30));
    let gap = app_stopped.elapsed();
    assert!(
        gap >= Duration::from_secs(7),
        "db stopped {gap:?} after the app"
    );
    assert!(!running(&db.name) && !running(&app.name));
}

/// `date` in the host's time zone (what the agent reads) `offset` from now.
fn date(offset: &str, format: &str) -> String {
    let out = Command::new("date")
        .args(["-d", offset, format])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn privileged_a_keep_warm_window_starts_the_service_on_time_and_keeps_it_until_it_closes() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("warm-ok", 0));
    // From the next minute to the one after: one to two minutes ahead.
    let window = format!(
        "{} {}-{}",
        date("+1 min", "+%a"),
        date("+1 min", "+%H:%M"),
        date("+2 min", "+%H:%M")
    );
    let services = format!(
        "{}keep_warm = [\"{window}\"]\n\n",
        service_toml("sched-warm", port, &c.name, "5s")
    );
    let config = AgentConfig::new(&services);
    let agent = RunningAgent::start(&config);
    agent.wait_state("sched-warm", "stopped", Duration::from_secs(10));
    assert!(
        agent.service("sched-warm")["next_keep_warm"].is_string(),
        "{}",
        agent.service("sched-warm")
    );

    agent.wait_state("sched-warm", "ready", Duration::from_secs(130));
    let opened = Instant::now();
    let starts = metric_sum(
        &agent.metrics(),
        "autostop_starts_total",
        "sched-warm",
        |l| l.contains("trigger=\"schedule\""),
    );
    assert_eq!(starts, 1);
    let view = agent.service("sched-warm");
    assert!(
        view["keep_awake"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("keep_warm until"),
        "{view}"
    );
    // No traffic, idle timeout 5 s: still up 20 s later, inside the window.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(agent.state("sched-warm"), "ready");
    // Closed (at most a minute after opening), then idle 5 s: stopped.
    agent.wait_state("sched-warm", "stopped", Duration::from_secs(75));
    assert!(opened.elapsed() >= Duration::from_secs(25));
    assert!(!running(&c.name));
}

#[test]
fn privileged_a_container_burning_cpu_is_not_stopped_until_it_goes_quiet() {
    let image = setup();
    let port = free_port();
    // Burns a core while /tmp/burn exists.
    let script = format!(
        "mkdir -p /tmp; touch /tmp/burn; (while [ -e /tmp/burn ]; do :; done) & {}",
        httpd_script("busy-ok", 0)
    );
    let c = container(&image, port, &script);
    docker(&["start", &c.name]);
    let services = format!(
        "{}busy_cpu_percent = 20\n\n",
        service_toml("sched-busy", port, &c.name, "45s")
    );
    let config = AgentConfig::new(&services);
    let agent = RunningAgent::start(&config);
    agent.wait_state("sched-busy", "ready", Duration::from_secs(10));
    // Past the idle timeout: up, and saying why.
    std::thread::sleep(Duration::from_secs(60));
    let view = agent.service("sched-busy");
    if view["state"] != "ready" {
        for line in agent.logs() {
            eprintln!("{line}");
        }
    }
    assert_eq!(view["state"], "ready", "{view}");
    let reason = view["keep_awake"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("busy, ") && reason.ends_with("% CPU"),
        "{view}"
    );

    docker(&["exec", &c.name, "rm", "/tmp/burn"]);
    let quiet = Instant::now();
    assert!(
        eventually(Duration::from_secs(120), || agent.state("sched-busy")
            == "stopped"),
        "still {} after it went quiet",
        agent.service("sched-busy")
    );
    assert!(
        quiet.elapsed() >= Duration::from_secs(19),
        "{:?}",
        quiet.elapsed()
    );
}
