//! The machine's own Docker daemon, restarted and reconfigured by tests:
//! stop and start it (what `systemctl restart docker` does), and switch its
//! userland proxy on or off through `/etc/docker/daemon.json`.
//!
//! [`DockerDaemon`] is a Drop guard: it restores the original daemon.json
//! byte for byte and leaves a running, answering daemon behind, so a failing
//! test never leaves the machine's Docker changed or stopped.
//!
//! Here dockerd is started by hand (PID 1 is not systemd): the harness reads
//! the running daemon's command line, environment and log file from /proc,
//! stops it with SIGTERM and starts the same command again in its own
//! session. On a systemd machine it uses `systemctl stop|start docker`.
//!
//! Never run a second dockerd beside the main one: its bridge driver
//! recreates the shared iptables DOCKER chains and breaks the main daemon's
//! port publishing. Every test that uses this harness lives in one module
//! (`tests/tests/privileged/daemon.rs`, tests `daemon::privileged_*`),
//! which `cargo xtask test` runs alone with one thread, after the others.
//!
//! A run of the whole test binary must not restart dockerd by accident
//! while others use the machine's Docker: [`DockerDaemon::take`] fails
//! unless [`RESTART_DOCKERD_ENV`]`=1` says this run may (`cargo xtask test`
//! sets it for the daemon run only).
//!
//! Switching the proxy off makes Docker add a MASQUERADE rule and set
//! `route_localnet=1` on its bridges; Docker leaves both behind when the
//! proxy is switched back on. The harness does not fight that.
//!
//! Guards in different processes wait for each other (an flock on
//! `/run/autostop-tests-dockerd.lock`).

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::eventually;

/// The daemon's configuration file.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
pub use autostop_fixtures::docker::RESTART_DOCKERD_ENV;
/// Serialises users of this harness across processes.
const LOCK_FILE: &str = "/run/autostop-tests-dockerd.lock";
/// How long a guard waits for other containers on the machine to stop.
const BUSY_WAIT: Duration = Duration::from_secs(600);
/// Where dockerd writes its pid.
const PID_FILE: &str = "/var/run/docker.pid";
/// Bound on dockerd's clean shutdown (it stops every container first).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on dockerd answering its API after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the daemon is run on this machine.
#[derive(Debug, Clone)]
enum Launch {
    /// PID 1 is systemd: `systemctl stop|start docker`.
    Systemd,
    /// Started by hand: the command line, environment and log file of the
    /// daemon that ran when the guard was taken.
    Manual {
        /// argv, from /proc/PID/cmdline.
        argv: Vec<OsString>,
        /// Environment, from /proc/PID/environ.
        env: Vec<(OsString, OsString)>,
        /// Its stdout/stderr file, or a file of ours when it had none.
        log: PathBuf,
    },
}

/// Exclusive use of the machine's Docker daemon for one test. Restores
/// daemon.json and a running daemon on drop.
pub struct DockerDaemon {
    launch: Launch,
    /// daemon.json as found (`None`: the file did not exist).
    original: Option<Vec<u8>>,
    /// Whether daemon.json was rewritten by this guard.
    changed: bool,
    /// An exclusive flock on [`LOCK_FILE`], so two test processes on this
    /// machine never restart dockerd at the same time; released after
    /// `drop` has restored the daemon (fields drop after it).
    _lock: Flock<File>,
}

impl DockerDaemon {
    /// Takes the running daemon: fails loudly unless
    /// [`require_restart_allowed`] passes and the daemon runs and answers.
    pub fn take() -> Self {
        require_restart_allowed();
        let lock = File::create(LOCK_FILE).unwrap_or_else(|e| panic!("creating {LOCK_FILE}: {e}"));
        // Blocks until no other guard (in any process) holds the lock.
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, errno)| panic!("flock {LOCK_FILE}: {errno}"));
        crate::docker::require_docker();
        wait_until_no_container_runs();
        let launch = if is_systemd() {
            Launch::Systemd
        } else {
            let pid =
                daemon_pid().expect("dockerd answers but has no live pid in /var/run/docker.pid");
            let argv = split_nul(&read(&format!("/proc/{pid}/cmdline")));
            assert!(!argv.is_empty(), "dockerd {pid} has an empty command line");
            let env = split_nul(&read(&format!("/proc/{pid}/environ")))
                .into_iter()
                .filter_map(|kv| {
                    let kv = kv.into_vec();
                    let eq = kv.iter().position(|b| *b == b'=')?;
                    Some((
                        OsString::from_vec(kv[..eq].to_vec()),
                        OsString::from_vec(kv[eq + 1..].to_vec()),
                    ))
                })
                .collect();
            let log = std::fs::read_link(format!("/proc/{pid}/fd/1"))
                .ok()
                .filter(|p| p.is_absolute() && p.is_file())
                .unwrap_or_else(|| PathBuf::from("/var/log/autostop-tests-dockerd.log"));
            Launch::Manual { argv, env, log }
        };
        let original = std::fs::read(DAEMON_JSON).ok();
        Self {
            launch,
            original,
            changed: false,
            _lock: lock,
        }
    }

    /// Stops the daemon and waits until it has exited (the API no longer
    /// answers). Containers it ran are stopped with it.
    pub fn stop(&self) {
        self.try_stop().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the daemon and waits until its API answers.
    pub fn start(&self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_stop(&self) -> Result<(), String> {
        match &self.launch {
            Launch::Systemd => systemctl("stop")?,
            Launch::Manual { .. } => {
                if let Some(pid) = daemon_pid() {
                    // A pid read from dockerd's pid file and checked to be
                    // dockerd and alive; SIGTERM asks it to shut down cleanly.
                    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                        return Err(format!("SIGTERM to dockerd {pid}: {e}"));
                    }
                    if !eventually(STOP_TIMEOUT, || !alive(pid)) {
                        return Err(format!(
                            "dockerd {pid} did not exit within {STOP_TIMEOUT:?} of SIGTERM"
                        ));
                    }
                }
            }
        }
        if answers() {
            return Err("the Docker API still answers after stopping dockerd".into());
        }
        Ok(())
    }

    fn try_start(&self) -> Result<(), String> {
        match &self.launch {
            Launch::Systemd => systemctl("start")?,
            Launch::Manual { argv, env, log } => spawn_detached(argv, env, log)?,
        }
        if !eventually(START_TIMEOUT, answers) {
            return Err(format!(
                "dockerd did not answer within {START_TIMEOUT:?} of starting it (log: {:?})",
                self.log_path()
            ));
        }
        Ok(())
    }

    /// Stops and starts the daemon.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Rewrites daemon.json with `"userland-proxy": on` (every other key
    /// kept) and restarts the daemon.
    pub fn set_userland_proxy(&mut self, on: bool) {
        let mut config: serde_json::Value = match std::fs::read(DAEMON_JSON) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{DAEMON_JSON} is not JSON: {e}")),
            Err(_) => serde_json::json!({}),
        };
        config
            .as_object_mut()
            .unwrap_or_else(|| panic!("{DAEMON_JSON} is not a JSON object"))
            .insert("userland-proxy".into(), serde_json::Value::Bool(on));
        self.changed = true;
        std::fs::write(
            DAEMON_JSON,
            serde_json::to_vec_pretty(&config).expect("serialising daemon.json"),
        )
        .unwrap_or_else(|e| panic!("writing {DAEMON_JSON}: {e}"));
        self.restart();
    }

    /// The daemon's log file, when the harness knows it.
    pub fn log_path(&self) -> Option<&Path> {
        match &self.launch {
            Launch::Systemd => None,
            Launch::Manual { log, .. } => Some(log),
        }
    }
}

impl Drop for DockerDaemon {
    /// Never panics (it may run while a failed test unwinds): problems are
    /// printed, and each step is tried regardless of the previous one.
    fn drop(&mut self) {
        if self.changed {
            let restored = match &self.original {
                Some(bytes) => std::fs::write(DAEMON_JSON, bytes),
                None => std::fs::remove_file(DAEMON_JSON),
            };
            if let Err(e) = restored {
                eprintln!("restoring {DAEMON_JSON} failed: {e}");
            }
            if let Err(e) = self.try_stop() {
                eprintln!("restoring dockerd: {e}");
            }
        }
        if !answers() {
            if let Err(e) = self.try_start() {
                eprintln!("restoring dockerd: {e}");
            }
        }
    }
}

/// Whether a docker-proxy relays host port `port` (any protocol, any host
/// address): with the userland proxy off, none ever does.
pub fn docker_proxy_running(port: u16) -> bool {
    let wanted = port.to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(Result::ok).any(|entry| {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            return false;
        };
        let args = split_nul(&cmdline);
        let is_proxy = args.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == "docker-proxy")
        });
        is_proxy
            && args
                .windows(2)
                .any(|w| w[0] == "-host-port" && w[1] == wanted.as_str())
    })
}

/// Restarting dockerd stops every container on the machine: wait (bounded)
/// until none runs, so a test never kills someone else's containers. Under
/// `cargo xtask test` nothing else runs and this returns at once.
fn wait_until_no_container_runs() {
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        let running = crate::docker::docker(&["ps", "--format", "{{.Names}}"]);
        if running.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "containers still run after {BUSY_WAIT:?}, and restarting dockerd would stop them: {}",
            running.replace('\n', ", ")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Fails the test unless [`RESTART_DOCKERD_ENV`] is `1`: this run may
/// restart the machine's dockerd (nobody else uses Docker meanwhile).
#[track_caller]
pub fn require_restart_allowed() {
    assert!(
        std::env::var(RESTART_DOCKERD_ENV).is_ok_and(|v| v == "1"),
        "privileged test: restarts the machine's dockerd, which stops every container \
         on it; run it alone with {RESTART_DOCKERD_ENV}=1 (`cargo xtask test` does: \
         `cargo test -p autostop-tests --test privileged -- --test-threads=1 daemon::`)"
    );
}

/// Whether the Docker API answers.
pub fn answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_systemd() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

fn systemctl(verb: &str) -> Result<(), String> {
    let status = Command::new("systemctl")
        .args([verb, "docker"])
        .status()
        .map_err(|e| format!("systemctl {verb} docker: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("systemctl {verb} docker: {status}"))
    }
}

/// The live dockerd's pid, from its pid file.
fn daemon_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let is_dockerd = exe.file_name().is_some_and(|n| n == "dockerd");
    (is_dockerd && alive(pid)).then_some(pid)
}

/// Alive and not a zombie waiting for its parent.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn split_nul(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}

/// Runs `argv` with exactly `env`, in a new session (`setsid --fork`, so it
/// is not our child and outlives the test), output appended to `log`.
fn spawn_detached(
    argv: &[OsString],
    env: &[(OsString, OsString)],
    log: &Path,
) -> Result<(), String> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening {}: {e}", log.display()))
    };
    let status = Command::new("/usr/bin/setsid")
        .arg("--fork")
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status()
        .map_err(|e| format!("starting {argv:?} with setsid: {e}"))?;
    if !status.success() {
        return Err(format!("setsid --fork {argv:?}: {status}"));
    }
    if !eventually(START_TIMEOUT, || daemon_pid().is_some()) {
        return Err(format!(
            "dockerd wrote no pid file within {START_TIMEOUT:?}"
        ));
    }
    Ok(())
}
