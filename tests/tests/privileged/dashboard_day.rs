//! Privileged end to end: the dashboard "at a glance" (issue #19) in a real
//! headless Chromium after a scripted day of activity against
//! `autostop run` with three busybox services. `day-web` is woken by a
//! request, stopped for idleness, started and stopped through the API;
//! `day-api` is started through the API and stays up (its RAM bar);
//! `day-bad`'s container exits 1, so its start fails. The page must then
//! show one timeline row per service whose bands are exactly the
//! transitions `/api/history` recorded, with start and stop markers naming
//! their trigger, the start durations, RAM and GB·h that `/api/services`
//! gives, and the host's RAM from `/proc/meminfo`; then, with the page
//! open, an idle-timeout change and a stop through its confirmed actions
//! and a start through the API show up live from the events stream,
//! without a reload. Screenshots: `dashboard-day.png` (zoomed to the activity),
//! `dashboard-day-24h.png`, `dashboard-day-charts.png`, `dashboard-day-live.png` in
//! `target/test-artifacts/`.

use std::time::Duration;

use autostop_tests::{
    agent::{
        http_get_timeout, httpd_script, local, service_toml, setup, AgentConfig, RunningAgent,
    },
    docker::{free_port, unique, TestContainer},
    e2e::{
        artifacts_dir,
        dashboard_page::{
            act, bands, bands_match, cell, data, history, markers, message, numbers,
            overlapping_ticks, recorded, steps, texts, timeline_rows,
        },
        webdriver::Browser,
    },
    eventually,
};

const SERVICES: [&str; 3] = ["day-web", "day-api", "day-bad"];

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kib * 1024.0
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn privileged_dashboard_day_timeline_charts_and_live_updates_in_chromium() {
    let image = setup();
    let ports = [free_port(), free_port(), free_port()];
    let publish = |p: u16| format!("{p}:80");
    let web = TestContainer::create(
        &unique("as-day-web"),
        &["-p", &publish(ports[0]), "--memory", "64m"],
        &image.tag,
        &["sh", "-c", &httpd_script("day-web", 0)],
    );
    let api = TestContainer::create(
        &unique("as-day-api"),
        &["-p", &publish(ports[1]), "--memory", "96m"],
        &image.tag,
        &["sh", "-c", &httpd_script("day-api", 0)],
    );
    let bad = TestContainer::create(
        &unique("as-day-bad"),
        &["-p", &publish(ports[2])],
        &image.tag,
        &["sh", "-c", "exit 1"],
    );
    let config = AgentConfig::new(&format!(
        "{}{}{}",
        service_toml("day-web", ports[0], &web.name, "3s"),
        service_toml("day-api", ports[1], &api.name, "10m"),
        service_toml("day-bad", ports[2], &bad.name, "10m"),
    ));
    let agent = RunningAgent::start(&config);
    for name in SERVICES {
        agent.wait_state(name, "stopped", Duration::from_secs(10));
    }

    // The day: a request wakes day-web, idleness stops it; the API starts
    // and stops it; the API starts day-api (kept up) and day-bad (fails).
    let answer =
        http_get_timeout(local(ports[0]), "/", Duration::from_secs(30)).expect("GET day-web");
    assert!(answer.1.contains("day-web"), "{answer:?}");
    agent.wait_state("day-web", "ready", Duration::from_secs(10));
    agent.wait_state("day-web", "stopped", Duration::from_secs(30));
    assert_eq!(agent.act("day-web", "start"), 202);
    agent.wait_state("day-web", "ready", Duration::from_secs(30));
    assert_eq!(agent.act("day-web", "stop"), 202);
    agent.wait_state("day-web", "stopped", Duration::from_secs(30));
    assert_eq!(agent.act("day-api", "start"), 202);
    agent.wait_state("day-api", "ready", Duration::from_secs(30));
    assert_eq!(agent.act("day-bad", "start"), 202);
    agent.wait_state("day-bad", "failed", Duration::from_secs(60));
    // A sampled RAM figure for day-api and savings credited for day-web
    // (one accounting round is 15 s).
    assert!(
        eventually(Duration::from_secs(40), || {
            agent.service("day-api")["memory_bytes"].as_u64().is_some()
                && agent.service("day-web")["ram_saved_gb_h"]
                    .as_f64()
                    .is_some_and(|g| g > 0.0)
        }),
        "no RAM sample or savings: {}",
        agent.services()
    );

    // What the agent recorded is the day as scripted.
    let recorded_day = history(&agent);
    let web_steps = steps(&recorded_day, "day-web");
    let causes = |state: &str| -> Vec<String> {
        web_steps
            .iter()
            .filter(|(s, _)| s == state)
            .map(|(_, c)| c.clone())
            .collect()
    };
    assert_eq!(causes("starting").len(), 2, "{web_steps:?}");
    assert!(
        ["syn", "connection"].contains(&causes("starting")[0].as_str()),
        "{web_steps:?}"
    );
    assert_eq!(causes("starting")[1], "manual", "{web_steps:?}");
    // Adopted stopped at the agent's start, then the two stops.
    assert_eq!(
        causes("stopped"),
        ["adopted", "idle", "manual"],
        "{web_steps:?}"
    );
    assert_eq!(causes("ready").len(), 2, "{web_steps:?}");
    let bad_steps = steps(&recorded_day, "day-bad");
    let bad_states: Vec<&str> = bad_steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        bad_states[..3],
        ["stopped", "starting", "failed"],
        "{bad_steps:?}"
    );
    let web_starts = recorded(&recorded_day, "day-web")["starts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(web_starts.len(), 2, "{recorded_day}");
    assert!(web_starts
        .iter()
        .all(|s| s["ok"] == true && s["took_ms"].as_u64().is_some()));
    assert_eq!(web_starts[1]["trigger"], "manual");
    assert!(
        web_starts[1]["estimate_ms"].as_u64().is_some(),
        "the second start had an estimate: {recorded_day}"
    );

    // The page: one timeline row per service.
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", agent.status));
    assert!(
        eventually(Duration::from_secs(15), || timeline_rows(&browser).len()
            == SERVICES.len()),
        "timeline rows: {:?}",
        timeline_rows(&browser)
    );
    let mut rows = timeline_rows(&browser);
    rows.sort();
    let mut expected: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(rows, expected, "exactly one row per service");

    // Bands and markers are the recorded transitions.
    for name in SERVICES {
        let mut last = Ok(());
        let same = eventually(Duration::from_secs(15), || {
            last = bands_match(&bands(&browser, name), &history(&agent), name);
            last.is_ok()
        });
        assert!(same, "{name}: {last:?}\n{:?}", bands(&browser, name));
    }
    assert_eq!(markers(&browser, "day-web", "start"), causes("starting"));
    let stops: Vec<String> = web_steps
        .iter()
        .filter(|(s, _)| s == "stopping")
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(markers(&browser, "day-web", "stop"), stops);
    assert!(
        bands(&browser, "day-bad")
            .iter()
            .any(|b| b.state == "failed"),
        "no failed band"
    );

    // The numbers are the API's.
    let mut mismatch = String::new();
    let numbers_agree = eventually(Duration::from_secs(20), || {
        let services = agent.services();
        let list = services.as_array().cloned().unwrap_or_default();
        mismatch.clear();
        for s in &list {
            let name = s["name"].as_str().unwrap_or_default();
            let starts = data(
                &browser,
                &format!("tr[data-service=\"{name}\"] .starts"),
                "value",
            );
            if starts.as_deref() != Some(&s["starts_24h"].to_string()) {
                mismatch += &format!("{name} starts {starts:?} vs {}; ", s["starts_24h"]);
            }
        }
        let api_view = list
            .iter()
            .find(|s| s["name"] == "day-api")
            .cloned()
            .unwrap_or_default();
        for (selector, attr, field) in [
            (
                "g.ram-row[data-service=\"day-api\"]",
                "used",
                "memory_bytes",
            ),
            (
                "g.ram-row[data-service=\"day-api\"]",
                "limit",
                "memory_limit_bytes",
            ),
            ("tr[data-service=\"day-api\"] .ram", "bytes", "memory_bytes"),
        ] {
            let shown = data(&browser, selector, attr);
            if shown.as_deref() != Some(&api_view[field].to_string()) {
                mismatch += &format!("RAM {attr} {shown:?} vs {}; ", api_view[field]);
            }
        }
        let total: f64 = list
            .iter()
            .filter_map(|s| s["ram_saved_gb_h"].as_f64())
            .sum();
        let summary = data(&browser, "#summary", "gbh")
            .and_then(|g| g.parse::<f64>().ok())
            .unwrap_or(-1.0);
        let days: f64 = numbers(&browser, "#saved rect.day-bar", "gbh").iter().sum();
        // A fresh agent: every GB·h it saved falls on the last 14 days.
        if !close(summary, total) || !close(days, total) {
            mismatch += &format!("GB·h summary {summary} days {days} vs {total}; ");
        }
        mismatch.is_empty()
    });
    assert!(numbers_agree, "{mismatch}");
    assert!(
        cell(&browser, "day-api", ".ram").contains(" / "),
        "RAM cell"
    );
    assert_eq!(
        numbers(&browser, "#ram g.ram-row", "used").len(),
        1,
        "one RAM bar per awake service"
    );
    let host_total = numbers(&browser, "#host-ram", "total");
    assert_eq!(host_total, [mem_total()], "host RAM total");
    let host_used = numbers(&browser, "#host-ram", "used");
    assert!(
        host_used
            .first()
            .is_some_and(|u| *u > 0.0 && *u < mem_total()),
        "{host_used:?}"
    );
    let took: Vec<f64> = web_starts
        .iter()
        .filter_map(|s| s["took_ms"].as_f64())
        .collect();
    assert_eq!(
        numbers(
            &browser,
            "svg.starts-chart[data-service=\"day-web\"] circle.dot.ok",
            "tookMs"
        ),
        took
    );
    assert_eq!(
        numbers(
            &browser,
            "svg.starts-chart[data-service=\"day-bad\"] circle.dot.failed",
            "tookMs"
        )
        .len(),
        1
    );

    // Issue #29: axis labels never overlap, on a desktop or a phone; the
    // 24 h timeline reads hours and minutes; small savings scale their
    // unit instead of reading "0.0 kB·h".
    let shots = artifacts_dir();
    for (width, height) in [(390, 844), (1280, 900)] {
        browser.set_window_size(width, height);
        let overlaps = overlapping_ticks(&browser);
        assert!(overlaps.is_empty(), "at {width} px: {overlaps:?}");
        assert!(
            !texts(&browser, "#saved text.tick").is_empty(),
            "no day labels"
        );
    }
    let ticks = texts(&browser, "#timeline text.tick");
    assert!(
        ticks.len() == 5 && ticks.iter().all(|t| t.matches(':').count() <= 1),
        "24 h axis: {ticks:?}"
    );
    let top = texts(&browser, "#saved text");
    assert!(
        top.first()
            .is_some_and(|t| !t.starts_with("0.0") && t.ends_with("B·h")),
        "savings axis: {top:?}"
    );
    browser.screenshot(&shots.join("dashboard-day-24h.png"));
    browser.click("#zoom button[data-span=\"fit\"]");
    let size = browser.screenshot(&shots.join("dashboard-day.png"));
    assert!(size > 1000, "screenshot of {size} bytes");
    browser.execute("document.getElementById('ram').scrollIntoView(); return null;");
    browser.screenshot(&shots.join("dashboard-day-charts.png"));
    browser.execute("window.scrollTo(0, 0); return null;");

    // Live, without a reload: the confirmed actions with their results,
    // and a start made elsewhere arriving through the events stream.
    browser.execute("window.autostopMarker = 42; return null;");
    browser.execute(
        "const i = document.querySelector('tr[data-service=\"day-web\"] input.timeout'); \
         i.value = '10m'; i.dispatchEvent(new Event('input')); return null;",
    );
    act(&browser, "day-web", "idle-timeout");
    assert!(
        eventually(Duration::from_secs(10), || message(&browser)
            == "idle timeout 10m day-web: done"),
        "result: {:?}",
        message(&browser)
    );
    assert_eq!(agent.service("day-web")["idle_timeout_s"], 600);
    let events_before = browser
        .execute("return window.autostopEvents || 0;")
        .as_u64()
        .unwrap_or(0);
    assert_eq!(agent.act("day-web", "start"), 202);
    let last_band = |b: &Browser| {
        bands(b, "day-web")
            .last()
            .map(|b| b.state.clone())
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(30), || last_band(&browser) == "ready"),
        "the row never showed the start: {:?}",
        bands(&browser, "day-web")
    );
    let events_after = browser
        .execute("return window.autostopEvents || 0;")
        .as_u64()
        .unwrap_or(0);
    assert!(
        events_after > events_before,
        "no event reached the page ({events_before} → {events_after})"
    );
    let last_event = browser.execute("return window.autostopLastEvent;");
    assert!(
        last_event.as_str().is_some_and(|e| e.contains("day-web")),
        "{last_event}"
    );
    act(&browser, "day-web", "stop");
    assert!(
        eventually(Duration::from_secs(30), || last_band(&browser) == "stopped"),
        "the row never showed the stop: {:?}",
        bands(&browser, "day-web")
    );
    assert_eq!(message(&browser), "stop day-web: done");
    assert_eq!(
        browser.execute("return window.autostopMarker;"),
        serde_json::json!(42),
        "the page reloaded"
    );
    browser.screenshot(&shots.join("dashboard-day-live.png"));
    let mut last = Ok(());
    let same = eventually(Duration::from_secs(15), || {
        last = bands_match(&bands(&browser, "day-web"), &history(&agent), "day-web");
        last.is_ok()
    });
    assert!(same, "day-web after the live steps: {last:?}");
}
