//! Privileged, end to end: the agent binary (`autostop run --config`) in
//! front of real stopped containers, reached the way users reach them:
//! through nginx (blocking mode), with curl-like clients (dynamic mode: wait
//! page for browsers, held replay for API clients; the wait page also
//! through nginx), with a real headless
//! Chromium for every built-in theme (wait page, then the app without a
//! click), and with hostile clients (malformed heads, slowloris).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use autostop_tests::docker::{
    docker, free_port, inspect, require_docker, unique, TestContainer, TestImage,
};
use autostop_tests::e2e::webdriver::Browser;
use autostop_tests::e2e::{artifacts_dir, http_get, read_to_end_by, AgentRun, Nginx};
use autostop_tests::{eventually, require_root_and_bpf};

/// Bound on one cold start seen by a client.
const COLD: Duration = Duration::from_secs(60);
/// The app's page.
const INDEX: &str =
    "<!doctype html><title>autostop e2e app</title><h1 id=app>hello from the app</h1>\n";
/// The app's JSON file.
const JSON: &str = "{\"app\":\"autostop-e2e\",\"ok\":true}\n";
/// A browser's Accept header.
const HTML_ACCEPT: (&str, &str) = (
    "Accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);

fn setup() -> TestImage {
    require_root_and_bpf();
    require_docker();
    TestImage::build()
}

/// A busybox httpd app published on `port`, serving INDEX at `/` and JSON
/// at `/app.json`, listening after `delay_s` seconds; exits fast on SIGTERM.
fn app(image: &TestImage, port: u16, delay_s: u32) -> TestContainer {
    let name = unique("autostop-e2e-");
    let publish = format!("{port}:80");
    let script = format!(
        "trap 'exit 0' TERM; busybox sleep {delay_s}; busybox httpd -f -p 80 -h /www & wait"
    );
    let c = TestContainer::create(
        &name,
        &["-p", &publish],
        &image.tag,
        &["/bin/sh", "-c", &script],
    );
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::write(www.path().join("index.html"), INDEX).expect("index");
    std::fs::write(www.path().join("app.json"), JSON).expect("json");
    let src = www.path().display().to_string();
    docker(&["cp", &src, &format!("{name}:/www")]);
    c
}

fn running(c: &TestContainer) -> bool {
    inspect(&c.name, "{{.State.Running}}") == "true"
}

fn service(name: &str, port: u16, mode: &str, container: &str, theme: Option<&str>) -> String {
    let theme = theme
        .map(|t| format!("theme = \"{t}\"\n"))
        .unwrap_or_default();
    format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\nmode = \"{mode}\"\n{theme}\
         containers = [\"{container}\"]\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n\n"
    )
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn privileged_blocking_http_through_nginx_first_request_is_answered() {
    let image = setup();
    let port = free_port();
    let c = app(&image, port, 0);
    let _agent = AgentRun::start(&service("web", port, "blocking", &c.name, None), &[]);
    let nginx = Nginx::start(port);
    assert!(!running(&c), "the app must start stopped");

    let t = Instant::now();
    let r = http_get(nginx.addr, "/", &[], COLD)
        .unwrap_or_else(|e| panic!("GET through nginx: {e}\n{}", nginx.error_log()));
    eprintln!("first request through nginx answered in {:?}", t.elapsed());
    assert_eq!(r.status, 200, "{}\n{}", r.text(), nginx.error_log());
    assert_eq!(r.text(), INDEX);
    assert!(running(&c), "the first request started the app");
}

#[test]
fn privileged_dynamic_through_nginx_wait_page_then_the_app() {
    let image = setup();
    let port = free_port();
    let c = app(&image, port, 2);
    let _agent = AgentRun::start(&service("site", port, "dynamic", &c.name, None), &[]);
    let nginx = Nginx::start(port);
    assert!(!running(&c), "the app must start stopped");

    // A browser's first navigation through nginx: the themed 503 page, which
    // nginx passes on with the agent's headers.
    let r = http_get(nginx.addr, "/", &[HTML_ACCEPT], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET through nginx: {e}\n{}", nginx.error_log()));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("retry-after").is_some(), "Retry-After missing");
    assert!(r.text().contains("site"), "the page names the service");

    // The page's reload (the same navigation) lands on the app once it is up.
    let landed = eventually(COLD, || {
        http_get(nginx.addr, "/", &[HTML_ACCEPT], Duration::from_secs(10))
            .is_ok_and(|r| r.status == 200 && r.text() == INDEX)
    });
    assert!(
        landed,
        "never reached the app through nginx\n{}",
        nginx.error_log()
    );
    assert!(running(&c));
}

#[test]
fn privileged_dynamic_curl_html_gets_wait_page_and_json_client_is_held() {
    let image = setup();
    let port = free_port();
    let c = app(&image, port, 1);
    // An app whose start fails with an error that quotes its command line,
    // markup included: the visitor sees neither (only the public text).
    let bad_port = free_port();
    let payload = "/<script>alert(1)</script>";
    let bad = TestContainer::create(
        &unique("autostop-e2e-bad-"),
        &["-p", &format!("{bad_port}:80")],
        &image.tag,
        &[payload],
    );
    let config = service("api", port, "dynamic", &c.name, None)
        + &service("broken", bad_port, "dynamic", &bad.name, Some("matrix"));
    let agent = AgentRun::start(&config, &[]);

    // Browser navigation: 503 wait page that names the service; it wakes it.
    let r = http_get(
        local(bad_port),
        "/",
        &[HTML_ACCEPT],
        Duration::from_secs(10),
    )
    .expect("wait page");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("broken"), "wait page names the service");
    let failed = eventually(Duration::from_secs(30), || {
        agent.service("broken").to_string().contains("failed")
    });
    assert!(failed, "broken never failed: {}", agent.service("broken"));
    let r = http_get(
        local(bad_port),
        "/",
        &[HTML_ACCEPT],
        Duration::from_secs(10),
    )
    .expect("failed page");
    let page = r.text();
    assert_eq!(r.status, 503);
    assert!(
        page.contains("data-status=\"failed\"") && page.contains("could not be started"),
        "the page says the start failed: {page}"
    );
    for leak in ["alert(1)", "&lt;script&gt;", &bad.name] {
        assert!(
            !page.contains(leak),
            "Docker's error leaks ({leak:?}): {page}"
        );
    }

    // API client: held until the app is up, then answered by the app itself.
    assert!(!running(&c), "the app must start stopped");
    let t = Instant::now();
    let r = http_get(
        local(port),
        "/app.json",
        &[("Accept", "application/json")],
        COLD,
    )
    .expect("held JSON request");
    eprintln!("held JSON request answered in {:?}", t.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), JSON);
    assert!(running(&c));
}

#[test]
fn privileged_browser_sees_wait_page_then_app_for_each_theme() {
    let image = setup();
    let themes: Vec<&str> = autostop::config::BUILTIN_THEMES
        .iter()
        .map(|t| t.name)
        .collect();
    let ports: Vec<u16> = themes.iter().map(|_| free_port()).collect();
    let apps: Vec<TestContainer> = ports.iter().map(|p| app(&image, *p, 3)).collect();
    let config: String = themes
        .iter()
        .zip(&ports)
        .zip(&apps)
        .map(|((t, p), c)| service(&format!("{t}-site"), *p, "dynamic", &c.name, Some(t)))
        .collect();
    let _agent = AgentRun::start(&config, &[]);
    let browser = Browser::start();
    let dir = artifacts_dir();

    for (theme, port) in themes.iter().zip(&ports) {
        let t = Instant::now();
        browser.goto(&format!("http://127.0.0.1:{port}/"));
        let wait_png = dir.join(format!("wait-{theme}.png"));
        let size = browser.screenshot(&wait_png);
        let html = browser.html().expect("wait page document");
        assert!(
            html.contains(&format!("data-service=\"{theme}-site\"")),
            "{theme}: not the wait page for this service: {html}"
        );
        assert!(html.contains("id=\"bar\""), "{theme}: no progress bar");
        // The agent served the page's script (/.autostop/wait.js) and it
        // runs: it sizes the progress bar at once.
        let painted = eventually(Duration::from_secs(5), || {
            browser
                .execute("var b=document.getElementById('bar');return b?b.style.width:null")
                .as_str()
                .is_some_and(|w| !w.is_empty())
        });
        assert!(
            painted,
            "{theme}: the wait script did not run: {:?}",
            browser.html()
        );
        assert!(
            !html.contains("hello from the app"),
            "{theme}: app too early"
        );
        eprintln!(
            "{theme}: wait page, title {:?}, {size} B screenshot",
            browser.title()
        );

        let landed = eventually(Duration::from_secs(30), || {
            browser
                .html()
                .is_some_and(|h| h.contains("hello from the app"))
        });
        assert!(
            landed,
            "{theme}: the page never reloaded onto the app: {:?}",
            browser.html()
        );
        assert_eq!(browser.title(), "autostop e2e app");
        let size = browser.screenshot(&dir.join(format!("app-{theme}.png")));
        eprintln!("{theme}: app after {:?}, {size} B screenshot", t.elapsed());
    }
}

#[test]
fn privileged_malformed_and_slowloris_heads_are_held_for_the_app_without_affecting_others() {
    let image = setup();
    let port = free_port();
    let c = app(&image, port, 5);
    let _agent = AgentRun::start(&service("hostile", port, "dynamic", &c.name, None), &[]);
    let addr = local(port);

    // Garbage: not HTTP/1, so held (its SYN already woke the service; the
    // app takes 5 s to listen) and replayed: the app answers it, not the
    // agent.
    let mut garbage = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    garbage
        .write_all(b"\x01\x02\x03 \xff\xfe garbage\r\n\r\n")
        .expect("write");

    // Slowloris: a head dripped one byte per 300 ms, past the agent's 10 s
    // header timeout, then complete.
    let mut slow = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let mut writer = slow.try_clone().expect("clone");
    let dripper = std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n";
        for b in head {
            writer.write_all(&[*b]).expect("drip");
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    // A browser in parallel gets its wait page at once.
    let r = http_get(addr, "/", &[HTML_ACCEPT], Duration::from_secs(5))
        .expect("wait page while a slowloris client is connected");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("hostile"));

    let raw = read_to_end_by(&mut garbage, Instant::now() + COLD).expect("garbage answered");
    let text = String::from_utf8_lossy(&raw);
    assert!(running(&c), "answered only once the app runs");
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("Date:"),
        "the app's own 400 (the agent sends no Date): {text:?}"
    );

    let t = Instant::now();
    let raw = read_to_end_by(&mut slow, Instant::now() + COLD).expect("slow client answered");
    eprintln!(
        "slowloris client answered {:?} after the garbage one",
        t.elapsed()
    );
    dripper.join().expect("dripper");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with(INDEX),
        "the slow head reached the app: {text:?}"
    );
}
