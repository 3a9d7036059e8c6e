//! Fixtures for end-to-end tests of `autostop run`: a per-test config file
//! and state directory, the agent as its own process (stderr logs captured
//! and echoed), its status API and metrics, a busybox image with applets
//! installed, tiny HTTP/echo clients, and the kernel objects the agent owns
//! (learned from its own file descriptors). Every resource is a Drop guard.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

mod http;
mod kernel;

pub use http::{echo_roundtrip, http_get, http_get_timeout, http_post};
pub use kernel::{
    kernel_objects_of, steered_any, steered_entries, warming_elements, KernelObjects,
};

use crate::docker::{free_port, unique, TestContainer};
use crate::{agent_binary, eventually};

/// How long the agent may take to load its programs and answer its API.
pub const AGENT_START: Duration = Duration::from_secs(30);

/// A config file and state directory for one test; the temp dir goes away
/// on drop.
pub struct AgentConfig {
    /// Holds the config file and the state directory.
    pub dir: tempfile::TempDir,
    /// The status API address (`agent.status_listen`).
    pub status: SocketAddr,
    /// Path of the config file.
    pub path: PathBuf,
    /// The agent's own warm-up table (`inet NAME`, via `AUTOSTOP_NFT_TABLE`),
    /// so other agents on this host never touch it. The kernel deletes it
    /// with the agent (owner flag); drop deletes a leftover all the same.
    pub nft_table: String,
}

impl AgentConfig {
    /// A config with a fresh status port and state dir; `services` is the
    /// TOML of the `[[service]]` tables.
    pub fn new(services: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let path = dir.path().join("autostop.toml");
        let nft_table = unique("astest");
        let config = Self {
            dir,
            status,
            path,
            nft_table,
        };
        config.write(services);
        config
    }

    /// The `[agent]` table this config uses. Docker labels are off: a test
    /// agent manages only its own services, never a labelled container
    /// another test on this host made (see [`Self::with_labels`]).
    pub fn agent_table(&self) -> String {
        self.agent_table_with("docker_labels = false\n")
    }

    /// The `[agent]` table with `extra` lines (`key = value\n`).
    pub fn agent_table_with(&self, extra: &str) -> String {
        let state = self.dir.path().join("state");
        let themes = self.dir.path().join("themes");
        format!(
            "[agent]\nstatus_listen = \"{}\"\nstate_dir = \"{}\"\nthemes_dir = \"{}\"\n{extra}\n",
            self.status,
            state.display(),
            themes.display()
        )
    }

    /// Rewrites the file with labels on (plus `extra` `[agent]` lines) and
    /// `services`.
    pub fn with_labels(&self, extra: &str, services: &str) {
        self.write_raw(&format!("{}{services}", self.agent_table_with(extra)));
    }

    /// Rewrites the file with the same `[agent]` table and new services.
    pub fn write(&self, services: &str) {
        self.write_raw(&format!("{}{services}", self.agent_table()));
    }

    /// Rewrites the file with exactly `text`.
    pub fn write_raw(&self, text: &str) {
        std::fs::write(&self.path, text).expect("writing the config");
    }
}

impl Drop for AgentConfig {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.nft_table])
            .stderr(Stdio::null())
            .status();
    }
}

/// How [`RunningAgent::spawn_with`] starts the agent.
#[derive(Debug, Default)]
pub struct Launch {
    /// The binary (default: [`agent_binary`]).
    pub binary: Option<PathBuf>,
    /// A command the agent's command line is prefixed with.
    pub wrapper: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Close the read end of the agent's stderr after this many lines (a
    /// log reader that goes away).
    pub close_stderr_after: Option<usize>,
}

/// `autostop run --config FILE` as its own process. Its stderr (the logs) is
/// collected and echoed to the test's stderr. Dropping it SIGTERMs it (so it
/// detaches cleanly), then kills it if it lingers.
pub struct RunningAgent {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// The status API address.
    pub status: SocketAddr,
    /// The API token, for an agent with `token_file` (see
    /// [`Self::with_token`]).
    token: Option<String>,
}

impl RunningAgent {
    /// Starts the agent and waits until its API answers.
    pub fn start(config: &AgentConfig) -> Self {
        Self::start_under(config, &[])
    }

    /// Like [`Self::start`], with the agent's command line prefixed by
    /// `wrapper` (e.g. `setpriv … --`).
    pub fn start_under(config: &AgentConfig, wrapper: &[String]) -> Self {
        let mut agent = Self::spawn_under(config, wrapper);
        agent.wait_running();
        agent
    }

    /// Waits until the agent logs that it runs and its API answers.
    fn wait_running(&mut self) {
        let agent = self;
        let needle = "autostop is running";
        eventually(AGENT_START, || {
            agent.logs().iter().any(|l| l.contains(needle)) || agent.exited().is_some()
        });
        if let Some(status) = agent.exited() {
            panic!(
                "the agent exited ({status}) before running:\n{}",
                agent.logs().join("\n")
            );
        }
        agent.wait_log(needle, Duration::ZERO);
        assert!(
            eventually(AGENT_START, || http_get(agent.status, "/api/services")
                .is_ok()),
            "the status API on {} never answered",
            agent.status
        );
    }

    /// Like [`Self::start`], with extra environment variables (e.g. a
    /// `PATH` without `nft`).
    pub fn start_with_env(config: &AgentConfig, env: &[(&str, &str)]) -> Self {
        let launch = Launch {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Launch::default()
        };
        let mut agent = Self::spawn_with(config, launch);
        agent.wait_running();
        agent
    }

    /// Starts the agent (prefixed by `wrapper`) without waiting for it.
    pub fn spawn_under(config: &AgentConfig, wrapper: &[String]) -> Self {
        Self::spawn_with(
            config,
            Launch {
                wrapper: wrapper.to_vec(),
                ..Launch::default()
            },
        )
    }

    /// Starts the agent as `launch` says, without waiting for it.
    pub fn spawn_with(config: &AgentConfig, launch: Launch) -> Self {
        let binary = launch.binary.unwrap_or_else(agent_binary);
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["run", "--config"])
            .arg(&config.path)
            .env("NO_COLOR", "1")
            .env("AUTOSTOP_NFT_TABLE", &config.nft_table)
            .env(
                "RUST_LOG",
                std::env::var("AUTOSTOP_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(launch.env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the agent");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let keep = launch.close_stderr_after.unwrap_or(usize::MAX);
        std::thread::spawn(move || {
            // Returning drops the read end: the agent's next writes fail
            // with EPIPE once `keep` lines have been read.
            for line in BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .take(keep)
            {
                eprintln!("[agent] {line}");
                sink.lock().expect("log lock").push(line);
            }
        });
        Self {
            child,
            logs,
            status: config.status,
            token: None,
        }
    }

    /// Waits for the agent to exit by itself; fails after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, if the agent has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Process id, for signals.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let mut found = None;
        let ok = eventually(timeout, || {
            found = self.logs().into_iter().find(|l| l.contains(needle));
            found.is_some()
        });
        assert!(ok, "no log line containing {needle:?} within {timeout:?}");
        found.expect("found")
    }

    /// Sends `signal` (no wait).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own unreaped child: the pid is still ours.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        crate::wait_for_exit(&mut self.child, timeout, signal)
    }

    /// Sends `token` with the fixture's own API calls (an agent with a
    /// token file shows nothing without it).
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// `GET path` on the status API, with the token if any.
    pub fn api_get(&self, path: &str) -> Result<(u16, String), String> {
        http::http_request(
            self.status,
            "GET",
            path,
            &self.auth(),
            Duration::from_secs(30),
        )
    }

    /// `POST /api/services/NAME/ACTION` (start, stop, hold, release); the
    /// status code.
    pub fn act(&self, name: &str, action: &str) -> u16 {
        let path = format!("/api/services/{name}/{action}");
        let (status, body) = http::http_request(
            self.status,
            "POST",
            &path,
            &self.auth(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert!(status < 500, "POST {path}: {status} {body}");
        status
    }

    fn auth(&self) -> String {
        self.token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default()
    }

    /// `GET /api/services` as JSON.
    pub fn services(&self) -> serde_json::Value {
        let (status, body) = self.api_get("/api/services").expect("status API");
        assert_eq!(status, 200, "GET /api/services: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("API JSON {body:?}: {e}"))
    }

    /// The API view of service `name`.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let all = self.services();
        all.as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("service {name} not in {all}"))
    }

    /// The API state of service `name`.
    pub fn state(&self, name: &str) -> String {
        self.service(name)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until service `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        let ok = eventually(timeout, || self.state(name) == state);
        assert!(
            ok,
            "service {name} not {state} within {timeout:?}: {}",
            self.service(name)
        );
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = self.api_get("/metrics").expect("metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Starts of `name` issued by the agent (every trigger but `external`,
    /// which only records a start someone else made).
    pub fn starts(&self, name: &str) -> u64 {
        metric_sum(&self.metrics(), "autostop_starts_total", name, |l| {
            !l.contains("trigger=\"external\"")
        })
    }

    /// Failed starts of `name`.
    pub fn start_failures(&self, name: &str) -> u64 {
        metric_sum(
            &self.metrics(),
            "autostop_start_failures_total",
            name,
            |_| true,
        )
    }

    /// Program and link ids the agent holds open (from /proc/PID/fdinfo),
    /// with each link's type.
    pub fn kernel_objects(&self) -> KernelObjects {
        kernel_objects_of(self.pid())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sums the samples of `metric` for `service` whose label text passes `keep`.
pub fn metric_sum(text: &str, metric: &str, service: &str, keep: impl Fn(&str) -> bool) -> u64 {
    let label = format!("service=\"{service}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label) && keep(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Test image: `FROM scratch` busybox with every applet linked into /bin,
/// so `nc -e cat` and friends work. Removed on drop.
pub struct AppletImage {
    /// Unique tag.
    pub tag: String,
}

impl AppletImage {
    /// Builds the image (needs /bin/busybox from busybox-static).
    pub fn build() -> Self {
        let tag = crate::docker::build_busybox_image(
            "autostop-test-applets",
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        );
        Self { tag }
    }
}

impl Drop for AppletImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
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
