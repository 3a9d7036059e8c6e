//! Privileged, end to end: the wait page's live start progress (issue #19)
//! in a real headless Chromium, against `autostop run` and compose
//! projects of busybox containers.
//!
//! Each project has two containers: `db` turns healthy about 3 s after it
//! starts (its healthcheck looks for a file made then), and `web` depends
//! on it with `condition: service_healthy`, turns healthy 2 s after its
//! own start and listens 5 s after it. For every built-in theme the page
//! is screenshot at three moments (db's health check pending; db healthy
//! and web started; web's port awaited), the steps read from the DOM show
//! the phases advancing, and the page lands on the app by itself. A start
//! whose (named) container exits non-zero shows the public failure text
//! and a failed step in every theme. A Chromium with JavaScript off shows
//! the server-rendered progress (a required service's step first) and
//! lands on the app by the page's meta refresh alone. Screenshots:
//! `target/test-artifacts/waitpage-*.png`.

use std::time::{Duration, Instant};

use autostop_tests::agent::{container, httpd_script, service_toml, setup, AppletImage};
use autostop_tests::docker::{free_port, ComposeProject, TestContainer};
use autostop_tests::e2e::webdriver::Browser;
use autostop_tests::e2e::{artifacts_dir, AgentRun};
use autostop_tests::eventually;

/// Bound on each moment of a start (generous: the whole start takes about
/// 9 s).
const MOMENT: Duration = Duration::from_secs(30);

/// The two-container project, published on `port`, answering `body`.
fn project(image: &AppletImage, port: u16, body: &str) -> ComposeProject {
    let db = "trap 'exit 0' TERM; (sleep 3; touch /healthy) & sleep 86400 & wait";
    let web = format!(
        "trap 'exit 0' TERM; mkdir -p /www; echo {body} > /www/index.html; \
         (sleep 2; touch /healthy) & (sleep 5; exec httpd -f -p 80 -h /www) & wait"
    );
    let health = "    healthcheck:\n      test: [\"CMD-SHELL\", \"test -f /healthy\"]\n      \
                  interval: 1s\n      timeout: 1s\n      retries: 60\n";
    let yaml = format!(
        "version: '2.4'\nservices:\n  db:\n    image: {tag}\n    stop_grace_period: 1s\n    \
         command: [\"sh\", \"-c\", {db:?}]\n{health}  web:\n    image: {tag}\n    \
         stop_grace_period: 1s\n    ports: [\"{port}:80\"]\n    depends_on:\n      db:\n        \
         condition: service_healthy\n    command: [\"sh\", \"-c\", {web:?}]\n{health}",
        tag = image.tag,
    );
    // `create`: compose 1.29's `up --no-start` may wait on conditions.
    ComposeProject::create_with(&yaml, &["create"])
}

fn service(name: &str, port: u16, project: &ComposeProject, theme: &str) -> String {
    let target = format!("compose_dir = \"{}\"", project.path().display());
    dynamic(name, port, &target, theme)
}

fn dynamic(name: &str, port: u16, target: &str, theme: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\nmode = \"dynamic\"\ntheme = \"{theme}\"\n\
         {target}\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n\n"
    )
}

/// The steps wait.js shows: (label, phase) of each `#steps li`.
fn steps(browser: &Browser) -> Vec<(String, String)> {
    page_moment(browser).0
}

/// The steps and the `#eta` text, read by one script so both describe the
/// same moment (the page may move on to the app right after).
fn page_moment(browser: &Browser) -> (Vec<(String, String)>, String) {
    let script = "var e=document.getElementById('eta');\
                  return [Array.prototype.map.call(\
                  document.querySelectorAll('#steps li[data-phase]'),function(li){\
                  return [li.querySelector('.label').textContent,li.getAttribute('data-phase')]}),\
                  e?e.textContent:''];";
    let Some(value) = browser.try_execute(script) else {
        return (Vec::new(), String::new());
    };
    let steps = value[0]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|pair| {
                    let text = |i: usize| pair[i].as_str().unwrap_or_default().to_string();
                    (text(0), text(1))
                })
                .collect()
        })
        .unwrap_or_default();
    (steps, value[1].as_str().unwrap_or_default().to_string())
}

/// Waits until the page's steps are two and `ok` accepts their phases;
/// returns them with the `#eta` text of that moment.
fn moment(
    browser: &Browser,
    what: &str,
    ok: impl Fn(&str, &str) -> bool,
) -> (Vec<(String, String)>, String) {
    let mut last = (Vec::new(), String::new());
    let seen = eventually(MOMENT, || {
        last = page_moment(browser);
        let steps = &last.0;
        steps.len() == 2
            && steps[0].0 == "container 1 of 2"
            && steps[1].0 == "container 2 of 2"
            && ok(&steps[0].1, &steps[1].1)
    });
    assert!(seen, "{what}: never seen; last steps {:?}", last.0);
    last
}

fn text_of(browser: &Browser, id: &str) -> String {
    let script = format!("var e=document.getElementById('{id}');return e?e.textContent:null");
    browser
        .try_execute(&script)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The names of the built-in themes, each tested in turn.
fn builtin_themes() -> Vec<&'static str> {
    autostop::config::BUILTIN_THEMES
        .iter()
        .map(|t| t.name)
        .collect()
}

#[test]
fn privileged_each_theme_shows_the_phases_advancing_then_the_app() {
    let image = setup();
    let themes = builtin_themes();
    let ports: Vec<u16> = themes.iter().map(|_| free_port()).collect();
    let projects: Vec<ComposeProject> = themes
        .iter()
        .zip(&ports)
        .map(|(t, p)| project(&image, *p, &format!("app-ok-{t}")))
        .collect();
    let config: String = themes
        .iter()
        .zip(&ports)
        .zip(&projects)
        .map(|((t, p), c)| service(&format!("{t}-site"), *p, c, t))
        .collect();
    let agent = AgentRun::start(&config, &[]);
    let browser = Browser::start();
    let dir = artifacts_dir();
    let shot = |name: String| {
        let size = browser.screenshot(&dir.join(&name));
        eprintln!("{name}: {size} B");
    };

    for ((theme, port), project) in themes.iter().zip(&ports).zip(&projects) {
        let t = Instant::now();
        browser.goto(&format!("http://127.0.0.1:{port}/"));

        let (first, _) = moment(&browser, "db's health check pending", |db, web| {
            db == "health_pending" && web == "waiting"
        });
        shot(format!("waitpage-{theme}-1.png"));
        let (second, _) = moment(&browser, "db healthy, web started", |db, web| {
            db == "healthy" && matches!(web, "starting" | "running" | "health_pending")
        });
        shot(format!("waitpage-{theme}-2.png"));
        let third = moment(&browser, "web's port awaited", |db, web| {
            db == "healthy" && web == "port_wait"
        });
        shot(format!("waitpage-{theme}-3.png"));
        // Read with the steps: by now the page may have moved on.
        let eta = &third.1;
        assert!(eta.contains(" of about "), "{theme}: #eta {eta:?}");
        // Generic labels only: no compose project, container or path.
        let html = browser.html().unwrap_or_default();
        let path = project.path().display().to_string();
        for internal in [
            project.name.as_str(),
            path.as_str(),
            "_db_",
            "-db-",
            "_web_",
            "-web-",
        ] {
            assert!(
                !html.contains(internal),
                "{theme}: the page shows {internal:?}"
            );
        }
        eprintln!("{theme}: {first:?} -> {second:?} -> {:?}", third.0);

        let body = format!("app-ok-{theme}");
        let landed = eventually(MOMENT, || browser.html().is_some_and(|h| h.contains(&body)));
        assert!(
            landed,
            "{theme}: never landed on the app: {:?}",
            browser.html()
        );
        shot(format!("waitpage-{theme}-app.png"));
        eprintln!("{theme}: app after {:?}", t.elapsed());
        assert_eq!(agent.state(&format!("{theme}-site")), "ready");
    }
}

#[test]
fn privileged_a_failed_start_shows_the_public_message_and_a_failed_step() {
    let image = setup();
    let themes = builtin_themes();
    let ports: Vec<u16> = themes.iter().map(|_| free_port()).collect();
    // Named containers (a `containers` list, not compose) that exit 3
    // after 2 s.
    let broken: Vec<TestContainer> = ports
        .iter()
        .map(|p| container(&image, *p, "sleep 2; exit 3"))
        .collect();
    let config: String = themes
        .iter()
        .zip(&ports)
        .zip(&broken)
        .map(|((t, p), c)| {
            let target = format!("containers = [\"{}\"]", c.name);
            dynamic(&format!("{t}-broken"), *p, &target, t)
        })
        .collect();
    let _agent = AgentRun::start(&config, &[]);
    let browser = Browser::start();
    let dir = artifacts_dir();

    for ((theme, port), c) in themes.iter().zip(&ports).zip(&broken) {
        browser.goto(&format!("http://127.0.0.1:{port}/"));
        let mut last = (String::new(), Vec::new());
        let failed = eventually(MOMENT, || {
            last = (text_of(&browser, "err"), steps(&browser));
            last.0 == autostop::waitpage::PUBLIC_FAILURE
                && last.1 == [("container 1 of 1".to_string(), "failed".to_string())]
        });
        assert!(
            failed,
            "{theme}: no failure shown; last (#err, steps) {last:?}"
        );
        let name = format!("waitpage-{theme}-failed.png");
        let size = browser.screenshot(&dir.join(&name));
        eprintln!("{name}: {size} B");
        let html = browser.html().unwrap_or_default();
        assert!(html.contains("data-status=\"failed\""), "{theme}");
        for internal in [c.name.as_str(), "exited", "code 3", "daemon"] {
            assert!(
                !html.contains(internal),
                "{theme}: the page shows {internal:?}"
            );
        }
    }
}

#[test]
fn privileged_without_javascript_the_page_shows_progress_and_refreshes_to_the_app() {
    let image = setup();
    let port = free_port();
    let project = project(&image, port, "app-ok-nojs");
    // A required service, started first: its step comes before the
    // containers'.
    let base_port = free_port();
    let base = container(&image, base_port, &httpd_script("base", 0));
    let config = format!(
        "{}\nrequires = [\"base\"]\n\n{}",
        service("plain", port, &project, "hackerTerminal").trim_end(),
        service_toml("base", base_port, &base.name, "10m"),
    );
    let _agent = AgentRun::start(&config, &[]);
    let browser = Browser::start_without_javascript();
    let dir = artifacts_dir();
    let t = Instant::now();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    // JavaScript is really off: `<noscript>` content is markup (with
    // scripting on it is raw text), and neither wait.js nor the theme's
    // own script ran (no #log lines, #pct as served).
    let js_off = browser.execute(
        "return [!!document.querySelector('noscript meta[http-equiv=refresh]'),\
         document.getElementById('log').children.length,\
         document.getElementById('pct').textContent]",
    );
    assert_eq!(
        js_off,
        serde_json::json!([true, 0, "0%"]),
        "JavaScript is not off"
    );

    // A later refresh (every 5 s) shows the steps the server rendered.
    let mut shown = String::new();
    let progress = eventually(MOMENT, || {
        shown = text_of(&browser, "steps");
        shown.starts_with("required service 1 of 1: ready \u{b7} container 1 of 2: ")
            && shown.contains(" \u{b7} container 2 of 2: ")
    });
    assert!(
        progress,
        "no server-rendered progress; last #steps {shown:?}"
    );
    let eta = text_of(&browser, "eta");
    assert!(eta.ends_with(" s of about 20 s"), "#eta as served: {eta:?}");
    let size = browser.screenshot(&dir.join("waitpage-nojs-1.png"));
    eprintln!(
        "waitpage-nojs-1.png: {size} B, {shown:?} after {:?}",
        t.elapsed()
    );
    let html = browser.html().unwrap_or_default();
    assert!(!html.contains("<li data-phase"), "wait.js ran: {html}");

    let landed = eventually(MOMENT, || {
        browser.html().is_some_and(|h| h.contains("app-ok-nojs"))
    });
    assert!(landed, "never refreshed onto the app: {:?}", browser.html());
    let size = browser.screenshot(&dir.join("waitpage-nojs-app.png"));
    eprintln!("waitpage-nojs-app.png: {size} B after {:?}", t.elapsed());
}
