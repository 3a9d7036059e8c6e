//! A headless Chromium driven over W3C WebDriver (Debian's `chromedriver`)
//! with plain HTTP calls: enough to navigate, read the title and the
//! document text, click elements, run scripts and save PNG screenshots;
//! also with the pages' JavaScript switched off
//! ([`Browser::start_without_javascript`]).
//! The browser's profile lives in a tempdir; on drop the session is
//! deleted, chromedriver is killed, and any Chromium process still using
//! that profile is killed by pid.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};

use autostop_fixtures::http::{self, Request};

use crate::docker::free_port;
use crate::eventually;

/// Bound on one WebDriver call (a navigation waits for the page load).
const CALL: Duration = Duration::from_secs(60);

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session
    /// (`--headless=new --no-sandbox --disable-gpu`).
    pub fn start() -> Self {
        Self::launch(true)
    }

    /// Like [`start`](Self::start) with JavaScript off for every page
    /// (the content setting `profile.managed_default_content_settings.javascript
    /// = 2`, as a policy would set it): pages' scripts do not run and
    /// `<noscript>` applies, while WebDriver's own scripts ([`execute`](Self::execute),
    /// [`html`](Self::html)) still read the document.
    pub fn start_without_javascript() -> Self {
        Self::launch(false)
    }

    fn launch(javascript: bool) -> Self {
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver (install chromium-driver: `cargo xtask setup`)");
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let up = eventually(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "chromedriver did not listen on {addr} within 20 s");
        // 1 allows, 2 blocks.
        let javascript = if javascript { 1 } else { 2 };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
                "prefs": {"profile.managed_default_content_settings.javascript": javascript},
            },
        }}});
        let value = browser.call("POST", "/session", Some(caps));
        browser.session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_string();
        browser.session_call(
            "POST",
            "/timeouts",
            Some(json!({"pageLoad": 30_000, "script": 10_000})),
        );
        browser
    }

    /// Sends one WebDriver command; panics on an HTTP or WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Sends one WebDriver command; `Err` carries the reason.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string().into_bytes());
        let request = Request {
            body: body.as_deref().map(|b| ("application/json", b)),
            ..Request::new(method, path)
        };
        let r = http::request(self.addr, &request, CALL).map_err(|e| e.to_string())?;
        let value: Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {value}", r.status));
        }
        Ok(value["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Navigates and waits for the load (a 503 wait page loads like any page).
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The document title.
    pub fn title(&self) -> String {
        self.session_call("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The title of the document in the page's frame number `index`
    /// (WebDriver switches into it, reads it with a script, and switches
    /// back to the top); `None` when no script runs there (an error page,
    /// such as a frame the browser refused to show).
    pub fn frame_title(&self, index: u32) -> Option<String> {
        self.session_call("POST", "/frame", Some(json!({ "id": index })));
        let title = self
            .try_execute("return document.title;")
            .and_then(|v| v.as_str().map(str::to_string));
        self.session_call("POST", "/frame", Some(json!({ "id": null })));
        title
    }

    /// Resizes the browser window (CSS pixels), as a narrower screen would.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Runs `script` (a function body) and returns its value.
    pub fn execute(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs `script` (a function body) and returns its value, or `None`
    /// while no document can run it (during a navigation or reload).
    pub fn try_execute(&self, script: &str) -> Option<Value> {
        let path = format!("/session/{}/execute/sync", self.session);
        self.try_call("POST", &path, Some(json!({ "script": script, "args": [] })))
            .ok()
    }

    /// Clicks the first element matching the CSS `selector` the way a user
    /// would (WebDriver's element click: scrolled into view, real mouse
    /// events); panics when nothing matches. A page that redraws the
    /// element between the lookup and the click (a stale reference) gets
    /// a fresh lookup, a few times.
    pub fn click(&self, selector: &str) {
        let mut last = String::new();
        for _ in 0..5 {
            let found = self.session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            );
            // W3C names the element reference with this fixed key.
            let id = found["element-6066-11e4-a52e-4f735466cecf"]
                .as_str()
                .unwrap_or_else(|| panic!("no element for {selector:?}: {found}"))
                .to_string();
            let path = format!("/session/{}/element/{id}/click", self.session);
            match self.try_call("POST", &path, Some(json!({}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => last = e,
                Err(e) => panic!("WebDriver click on {selector:?}: {e}"),
            }
        }
        panic!("WebDriver click on {selector:?}: still stale: {last}");
    }

    /// The serialized document (`document.documentElement.outerHTML`), or
    /// `None` while no document can run scripts (during a reload).
    pub fn html(&self) -> Option<String> {
        let path = format!("/session/{}/execute/sync", self.session);
        let script = json!({"script": "return document.documentElement.outerHTML;", "args": []});
        self.try_call("POST", &path, Some(script))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// Saves a PNG screenshot of the viewport to `path`; returns its size.
    pub fn screenshot(&self, path: &Path) -> usize {
        let b64 = self.session_call("GET", "/screenshot", None);
        let png = decode_base64(b64.as_str().expect("screenshot is a string"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot is not a PNG"
        );
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        png.len()
    }

    /// Pids of processes whose command line names our profile directory.
    fn profile_pids(&self) -> Vec<i32> {
        let needle = self.profile.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http::request(self.addr, &Request::new("DELETE", &path), CALL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for pid in self.profile_pids() {
            // A pid we just read whose command line names our own private
            // profile directory.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Standard base64 (with padding), as WebDriver returns screenshots.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("invalid base64 byte {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
