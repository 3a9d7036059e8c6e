//! End-to-end fixtures: the real agent binary running from a config file
//! ([`AgentRun`]), Debian's nginx proxying to a published port ([`Nginx`]),
//! a minimal HTTP/1.1 client ([`http_get`], `autostop_fixtures::http`) and
//! a headless Chromium driven over WebDriver ([`webdriver::Browser`]), the
//! dashboard page's readers ([`dashboard_page`]) and a page that frames
//! another ([`framing::FramingPage`]). Each
//! fixture is a Drop guard that stops what it started.

pub mod dashboard_page;
pub mod framing;
pub mod webdriver;

use std::ops::Deref;
use std::path::PathBuf;

pub use crate::agent::AgentRun;
pub use autostop_fixtures::http::{get as http_get, read_to_end_by, Response};

use crate::OrFail as _;

/// Debian's nginx with the README's server block on a free loopback port,
/// proxying to `127.0.0.1:SERVICE_PORT`, everything inside a tempdir.
/// Stopped on drop.
pub struct Nginx(autostop_fixtures::nginx::Nginx);

impl Nginx {
    /// Starts nginx in the foreground and waits until it accepts.
    #[track_caller]
    pub fn start(service_port: u16) -> Self {
        Self(autostop_fixtures::nginx::Nginx::start(service_port).or_fail())
    }
}

impl Deref for Nginx {
    type Target = autostop_fixtures::nginx::Nginx;
    fn deref(&self) -> &autostop_fixtures::nginx::Nginx {
        &self.0
    }
}

/// `target/test-artifacts/`, created if missing (screenshots go there).
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/test-artifacts
    let dir = exe
        .ancestors()
        .nth(3)
        .map(|target| target.join("test-artifacts"))
        .expect("test binary lives in target/<profile>/deps");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}
