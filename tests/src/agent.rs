//! Fixtures for end-to-end tests of `autostop run`: a per-test config file
//! and state directory, the agent as its own process (stderr logs captured
//! and echoed), its status API and metrics, a busybox image with applets
//! installed, tiny HTTP/echo clients, and the kernel objects the agent owns
//! (learned from its own file descriptors). Every resource is a Drop guard.
//!
//! [`AgentConfig`] and [`RunningAgent`] are `autostop_fixtures::agent`'s,
//! with every error a test failure; both deref to the shared types for
//! what cannot fail (`status`, `nft_table`, `agent_table()`, `logs()`).

use std::{net::SocketAddr, ops::Deref, process::ExitStatus, time::Duration};

mod http;
mod kernel;
mod upgrade;

pub use autostop_fixtures::agent::{Launch, AGENT_START};
pub use http::{echo_roundtrip, http_get, http_get_timeout, http_post};
pub use kernel::{
    clear_listener_slots, datapath_stats, kernel_objects_of, steered_any, steered_entries,
    warming_elements, KernelObjects,
};
pub use upgrade::{docker_starts, stop_agent, upgrade, warmup_tables};

use crate::docker::{unique, TestContainer};
use crate::OrFail as _;

use autostop_fixtures::agent as shared;

/// A config file and state directory for one test; the temp dir goes away
/// on drop.
pub struct AgentConfig(shared::AgentConfig);

impl AgentConfig {
    /// A config with a fresh status port and state dir; `services` is the
    /// TOML of the `[[service]]` tables.
    #[track_caller]
    pub fn new(services: &str) -> Self {
        Self(shared::AgentConfig::new(services).or_fail())
    }

    /// Rewrites the file with labels on (plus `extra` `[agent]` lines) and
    /// `services`.
    #[track_caller]
    pub fn with_labels(&self, extra: &str, services: &str) {
        self.0.with_labels(extra, services).or_fail()
    }

    /// Rewrites the file with the same `[agent]` table and new services.
    #[track_caller]
    pub fn write(&self, services: &str) {
        self.0.write(services).or_fail()
    }

    /// Rewrites the file with exactly `text`.
    #[track_caller]
    pub fn write_raw(&self, text: &str) {
        self.0.write_raw(text).or_fail()
    }

    /// Writes the user theme `themes/NAME.html`.
    #[track_caller]
    pub fn write_theme(&self, name: &str, html: &str) {
        self.0.write_theme(name, html).or_fail()
    }
}

impl Deref for AgentConfig {
    type Target = shared::AgentConfig;
    fn deref(&self) -> &shared::AgentConfig {
        &self.0
    }
}

/// `autostop run --config FILE` as its own process. Its stderr (the logs) is
/// collected and echoed to the test's stderr. Dropping it SIGTERMs it (so it
/// detaches cleanly), then kills it if it lingers.
pub struct RunningAgent(shared::RunningAgent);

impl RunningAgent {
    /// Starts the agent and waits until its API answers.
    #[track_caller]
    pub fn start(config: &AgentConfig) -> Self {
        Self(shared::RunningAgent::start(config).or_fail())
    }

    /// Like [`Self::start`], with the agent's command line prefixed by
    /// `wrapper` (e.g. `setpriv … --`).
    #[track_caller]
    pub fn start_under(config: &AgentConfig, wrapper: &[String]) -> Self {
        let launch = Launch {
            wrapper: wrapper.to_vec(),
            ..Launch::default()
        };
        Self(shared::RunningAgent::start_with(config, launch).or_fail())
    }

    /// Like [`Self::start`], with extra environment variables (e.g. a
    /// `PATH` without `nft`).
    #[track_caller]
    pub fn start_with_env(config: &AgentConfig, env: &[(&str, &str)]) -> Self {
        let launch = Launch {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Launch::default()
        };
        Self(shared::RunningAgent::start_with(config, launch).or_fail())
    }

    /// Starts the agent (prefixed by `wrapper`) without waiting for it.
    #[track_caller]
    pub fn spawn_under(config: &AgentConfig, wrapper: &[String]) -> Self {
        let launch = Launch {
            wrapper: wrapper.to_vec(),
            ..Launch::default()
        };
        Self::spawn_with(config, launch)
    }

    /// Starts the agent as `launch` says, without waiting for it.
    #[track_caller]
    pub fn spawn_with(config: &AgentConfig, launch: Launch) -> Self {
        Self(shared::RunningAgent::spawn_with(config, launch).or_fail())
    }

    /// Waits for the agent to exit by itself; fails after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.0.wait_exit(timeout).or_fail()
    }

    /// The exit status, if the agent has exited.
    #[track_caller]
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.exited().or_fail()
    }

    /// Process id, for signals.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.pid()).expect("pid fits in i32")
    }

    /// Waits for a log line containing `needle`; returns it.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.0.wait_log(needle, timeout).or_fail()
    }

    /// Sends `signal` (no wait).
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        self.0.signal(signal).or_fail()
    }

    /// Sends `signal` and waits for the process to exit.
    #[track_caller]
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        self.0.signal_and_wait(signal, timeout).or_fail()
    }

    /// Sends `token` with the fixture's own API calls (an agent with a
    /// token file shows nothing without it).
    pub fn with_token(self, token: &str) -> Self {
        Self(self.0.with_token(token))
    }

    /// `GET path` on the status API, with the token if any: status and body.
    pub fn api_get(&self, path: &str) -> Result<(u16, String), String> {
        let r = self.0.api("GET", path).map_err(|e| e.to_string())?;
        Ok((r.status, r.text()))
    }

    /// `POST /api/services/NAME/ACTION` (start, stop, hold, release); the
    /// status code.
    #[track_caller]
    pub fn act(&self, name: &str, action: &str) -> u16 {
        self.0.act(name, action).or_fail()
    }

    /// `GET /api/services` as JSON.
    #[track_caller]
    pub fn services(&self) -> serde_json::Value {
        self.0.services().or_fail()
    }

    /// The API view of service `name`.
    #[track_caller]
    pub fn service(&self, name: &str) -> serde_json::Value {
        self.0.service(name).or_fail()
    }

    /// The API state of service `name`.
    #[track_caller]
    pub fn state(&self, name: &str) -> String {
        self.0.state(name).or_fail()
    }

    /// Waits until service `name` is in `state`.
    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        self.0.wait_state(name, state, timeout).or_fail()
    }

    /// Waits until no service is `unknown` (its ports are steered).
    #[track_caller]
    pub fn wait_adopted(&self) {
        self.0.wait_adopted(AGENT_START).or_fail()
    }

    /// The Prometheus text of `/metrics`.
    #[track_caller]
    pub fn metrics(&self) -> String {
        self.0.metrics().or_fail()
    }

    /// Starts of `name` issued by the agent (every trigger but `external`).
    #[track_caller]
    pub fn starts(&self, name: &str) -> u64 {
        self.0.starts(name).or_fail()
    }

    /// Failed starts of `name`.
    #[track_caller]
    pub fn start_failures(&self, name: &str) -> u64 {
        self.0.start_failures(name).or_fail()
    }

    /// Program and link ids the agent holds open (from /proc/PID/fdinfo),
    /// with each link's type.
    pub fn kernel_objects(&self) -> KernelObjects {
        kernel_objects_of(self.pid())
    }
}

impl Deref for RunningAgent {
    type Target = shared::RunningAgent;
    fn deref(&self) -> &shared::RunningAgent {
        &self.0
    }
}

/// An agent started from a fresh config with `services` and user `themes`
/// (`NAME`, HTML), once every service is adopted; holds both.
pub struct AgentRun {
    /// The config (and its directory) the agent runs from.
    pub config: AgentConfig,
    /// The agent.
    pub agent: RunningAgent,
}

impl AgentRun {
    /// Writes the config and themes, starts the agent and waits until its
    /// services are adopted.
    #[track_caller]
    pub fn start(services: &str, themes: &[(&str, &str)]) -> Self {
        let config = AgentConfig::new(services);
        for (name, html) in themes {
            config.write_theme(name, html);
        }
        let agent = RunningAgent::start(&config);
        agent.wait_adopted();
        Self { config, agent }
    }
}

impl Deref for AgentRun {
    type Target = RunningAgent;
    fn deref(&self) -> &RunningAgent {
        &self.agent
    }
}

/// Sums the samples of `metric` for `service` whose line passes `keep`
/// (counters: a whole number).
pub fn metric_sum(text: &str, metric: &str, service: &str, keep: impl Fn(&str) -> bool) -> u64 {
    shared::metric_sum(text, metric, service, keep) as u64
}

/// Test image: `FROM scratch` busybox with every applet linked into /bin,
/// so `nc -e cat` and friends work. Removed on drop.
pub struct AppletImage(autostop_fixtures::docker::Image);

impl AppletImage {
    /// Builds the image (needs /bin/busybox from busybox-static).
    pub fn build() -> Self {
        Self(crate::docker::build_busybox_image(
            "autostop-test-applets",
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        ))
    }
}

impl Deref for AppletImage {
    type Target = autostop_fixtures::docker::Image;
    fn deref(&self) -> &autostop_fixtures::docker::Image {
        &self.0
    }
}

/// A shell command (for `sh -c`) that serves `body` over HTTP on port 80
/// after `delay_s` seconds and exits 0 on SIGTERM.
pub fn httpd_script(body: &str, delay_s: u32) -> String {
    format!(
        "trap 'exit 0' TERM; mkdir -p /www; echo {body} > /www/index.html; \
         (sleep {delay_s}; exec httpd -f -p 80 -h /www) & wait"
    )
}

/// A shell command (for `sh -c`) that echoes every TCP connection on port 80
/// and exits 0 on SIGTERM.
pub fn echo_script() -> &'static str {
    "trap 'exit 0' TERM; nc -ll -p 80 -e cat & wait"
}

/// `docker inspect` State.Running of `name`.
pub fn running(name: &str) -> bool {
    crate::docker::inspect(name, "{{.State.Running}}") == "true"
}

/// A blocking `[[service]]` for named containers.
pub fn service_toml(name: &str, port: u16, container: &str, idle: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{container}\"]\nidle_timeout = \"{idle}\"\nstart_timeout = \"60s\"\n\n"
    )
}

/// One stopped container publishing `port` → 80, running `sh -c script`.
pub fn container(image: &AppletImage, port: u16, script: &str) -> TestContainer {
    let publish = format!("{port}:80");
    TestContainer::create(
        &unique("as-e2e"),
        &["-p", &publish],
        &image.tag,
        &["sh", "-c", script],
    )
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Fails loudly without root, BPF or Docker, then builds the applet image.
pub fn setup() -> AppletImage {
    crate::require_root_and_bpf();
    crate::docker::require_docker();
    AppletImage::build()
}

/// `autostop ARGS --config FILE` (the CLI talking to the agent of `config`,
/// or checking its file), killed and failed if it has not exited within
/// `timeout`: whether it succeeded, and its stdout then stderr.
#[track_caller]
pub fn cli(config: &AgentConfig, args: &[&str], timeout: Duration) -> (bool, String) {
    use std::{io::Read as _, process::Stdio};
    let mut child = std::process::Command::new(crate::agent_binary())
        .args(args)
        .arg("--config")
        .arg(&config.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the autostop CLI");
    let exited = crate::eventually(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("autostop {args:?} did not finish within {timeout:?}");
    }
    let status = child.wait().expect("CLI status");
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    (status.success(), text)
}
