//! Privileged end to end: the dashboard (`GET /`) in a real headless
//! Chromium against `autostop run`. A stopped service's row, a click on its
//! "start" button that really starts the container and updates the row in
//! place (no reload; the click asks for a confirmation first), the RAM column showing a sampled figure with the
//! container's real limit, then a click on "stop" and the RAM savings
//! accrued, shown and persisted in `state.json` at shutdown; the agent's
//! Content-Security-Policy in force (no inline style, no framing).
//! Screenshots land in `target/test-artifacts/`.

use std::time::Duration;

use autostop_tests::{
    agent::{httpd_script, running, service_toml, setup, AgentConfig, RunningAgent},
    docker::{free_port, unique, TestContainer},
    e2e::{
        artifacts_dir,
        dashboard_page::{act, cell, message},
        framing::FramingPage,
        webdriver::Browser,
    },
    eventually,
};

/// The container's memory limit: the RAM column must show exactly this.
const LIMIT_BYTES: u64 = 64 * 1024 * 1024;

#[test]
fn privileged_dashboard_in_chromium_starts_a_stopped_service_and_shows_its_ram() {
    let image = setup();
    let port = free_port();
    let publish = format!("{port}:80");
    let c = TestContainer::create(
        &unique("as-dash"),
        &["-p", &publish, "--memory", "64m"],
        &image.tag,
        &["sh", "-c", &httpd_script("dash-ok", 0)],
    );
    let config = AgentConfig::new(&service_toml("dash", port, &c.name, "10m"));
    let mut agent = RunningAgent::start(&config);
    agent.wait_state("dash", "stopped", Duration::from_secs(10));

    let browser = Browser::start();
    browser.goto(&format!("http://{}/", agent.status));
    assert_eq!(browser.title(), "autostop");
    assert!(
        eventually(Duration::from_secs(10), || cell(&browser, "dash", ".state")
            == "stopped"),
        "no stopped row for dash: {:?}",
        browser.html()
    );
    assert_eq!(
        cell(&browser, "dash", ".ram"),
        "–",
        "a stopped service has no RAM figure"
    );
    let shots = artifacts_dir();
    let size = browser.screenshot(&shots.join("dashboard-stopped.png"));
    assert!(size > 1000, "screenshot of {size} bytes");

    // A marker on the page: still there later means the page never reloaded.
    browser.execute("window.autostopMarker = 42; return null;");
    act(&browser, "dash", "start");
    assert!(
        eventually(Duration::from_secs(30), || running(&c.name)),
        "the click on start did not start the container"
    );
    assert!(
        eventually(Duration::from_secs(30), || cell(&browser, "dash", ".state")
            == "ready"),
        "the row never showed ready: {:?}",
        cell(&browser, "dash", ".state")
    );
    // RAM sampled from Docker stats: "N MB / 67 MB" (64 MiB limit).
    assert!(
        eventually(Duration::from_secs(30), || cell(&browser, "dash", ".ram")
            .ends_with("/ 67 MB")),
        "the RAM column never showed the sampled figure: {:?}",
        cell(&browser, "dash", ".ram")
    );
    assert_eq!(
        browser.execute("return window.autostopMarker;"),
        serde_json::json!(42),
        "the page reloaded instead of updating in place"
    );
    assert_eq!(message(&browser), "start dash: done");
    browser.screenshot(&shots.join("dashboard-running.png"));
    let view = agent.service("dash");
    let used = view["memory_bytes"]
        .as_u64()
        .expect("memory_bytes once sampled");
    assert_eq!(
        view["memory_limit_bytes"].as_u64(),
        Some(LIMIT_BYTES),
        "{view}"
    );
    assert!(
        used > 0 && used < LIMIT_BYTES,
        "implausible RAM use {used}: {view}"
    );
    let metrics = agent.metrics();
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("autostop_memory_bytes{service=\"dash\"}"))
        .unwrap_or_else(|| panic!("no memory gauge in {metrics}"));
    assert!(!gauge.ends_with(" 0"), "memory gauge is zero: {gauge}");

    // Stop from the dashboard; the savings accrue while stopped (one
    // accounting round is 15 s).
    act(&browser, "dash", "stop");
    assert!(
        eventually(Duration::from_secs(30), || !running(&c.name)),
        "the click on stop did not stop the container"
    );
    agent.wait_state("dash", "stopped", Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(40), || agent.service("dash")
            ["ram_saved_gb_h"]
            .as_f64()
            .is_some_and(|g| g > 0.0)),
        "no RAM savings credited: {}",
        agent.service("dash")
    );
    let view = agent.service("dash");
    assert!(
        view["memory_bytes"].is_null(),
        "stopped but RAM shown: {view}"
    );
    assert!(
        view["ram_saved_gb_h_24h"].as_f64().is_some_and(|g| g > 0.0),
        "{view}"
    );
    // A few MB for some seconds: a small figure, not "0.0 GB·h".
    assert!(
        eventually(Duration::from_secs(10), || {
            let saved = cell(&browser, "dash", ".saved");
            let amount = saved.split(' ').next().and_then(|n| n.parse::<f64>().ok());
            amount.is_some_and(|a| a > 0.0) && saved.ends_with("in 24 h)")
        }),
        "the savings cell shows nothing saved: {:?}",
        cell(&browser, "dash", ".saved")
    );
    browser.screenshot(&shots.join("dashboard-saved.png"));
    the_policy_is_in_force(&browser, &agent);

    // Saved at shutdown: the totals survive the agent.
    agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    let state = config.dir().join("state").join("state.json");
    let text = std::fs::read_to_string(&state).expect("state.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
    let remembered = &json["services"]["dash"];
    assert!(
        remembered["last_memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{text}"
    );
    assert!(
        remembered["memory_saved_byte_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "savings not persisted: {text}"
    );
}

/// The agent's Content-Security-Policy as Chromium applies it: the page's
/// own stylesheet applies and an inline style attribute does not; and no
/// page may frame the dashboard (a local page that frames a control
/// document shows it, the dashboard's frame stays an error page).
fn the_policy_is_in_force(browser: &Browser, agent: &RunningAgent) {
    let styles = browser.execute(
        "const p = document.createElement('p'); p.setAttribute('style', 'color: rgb(1, 2, 3)');\
         document.body.append(p); const inline = getComputedStyle(p).color; p.remove();\
         const swatch = document.querySelector('.legend .swatch-awake');\
         return [inline, getComputedStyle(swatch).backgroundColor];",
    );
    assert_ne!(
        styles[0], "rgb(1, 2, 3)",
        "an inline style applied: {styles}"
    );
    assert_ne!(
        styles[1], "rgba(0, 0, 0, 0)",
        "dashboard.css did not apply: {styles}"
    );
    // A page on another local origin frames it (beside a control frame).
    let framing = FramingPage::serve(&format!("http://{}/", agent.status));
    browser.goto(&format!("http://{}/", framing.addr));
    assert!(
        eventually(Duration::from_secs(20), || browser
            .execute("return document.readyState;")
            == "complete"),
        "the framing page never loaded"
    );
    assert_eq!(browser.frame_title(0).as_deref(), Some("control"));
    let framed = browser.frame_title(1);
    assert_ne!(
        framed.as_deref(),
        Some("autostop"),
        "another page framed the dashboard"
    );
}
