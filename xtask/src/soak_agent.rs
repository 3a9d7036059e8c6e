//! The agent under soak: started (and started again after a SIGKILL or a
//! crash) with one config, state dir and warm-up table, each life's log in
//! its own file; its API and CLI as the faults use them; and a sampler of
//! its resident memory and open descriptors (`/proc/<pid>/status`,
//! `/proc/<pid>/fd`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{bail, Context as _};
use autostop_fixtures::agent::{AgentConfig, Launch, RunningAgent};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{bench_scale_probe::proc_field, soak_record::Clock};

/// How often the sampler reads `/proc`.
const SAMPLE_PERIOD: Duration = Duration::from_secs(2);

/// One life of the agent process.
#[derive(Debug, Clone)]
pub struct Life {
    /// Its pid.
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
    /// When it was started (run ms).
    pub started: u64,
    /// When it ran and its API answered (run ms).
    pub running: u64,
    /// When it ended, and how (`SIGKILL (fault)`, `exited: …`).
    pub ended: Option<(u64, String)>,
}

/// The agent, restarted as needed.
pub struct AgentRunner {
    config: AgentConfig,
    binary: PathBuf,
    dir: PathBuf,
    agent: Option<RunningAgent>,
    /// Every life so far.
    pub lives: Vec<Life>,
    /// The running agent's pid (0 while none runs), for the sampler.
    pub pid: Arc<AtomicU32>,
}

impl AgentRunner {
    /// An agent of `binary` with `config`, its logs in `dir`; not started.
    pub fn new(config: AgentConfig, binary: PathBuf, dir: &Path) -> Self {
        Self {
            config,
            binary,
            dir: dir.to_path_buf(),
            agent: None,
            lives: Vec::new(),
            pid: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Its config.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Starts a new life and waits until it runs and its API answers.
    pub fn start(&mut self, clock: &Clock) -> anyhow::Result<()> {
        // The old guard deletes the warm-up table by name: drop it first.
        self.agent = None;
        let log = self.dir.join(format!("agent-{}.log", self.lives.len() + 1));
        let launch = Launch {
            binary: Some(self.binary.clone()),
            log_file: Some(log.clone()),
            ..Launch::default()
        };
        let started = clock.now();
        let agent = RunningAgent::start_with(&self.config, launch)
            .with_context(|| format!("starting the agent (log: {})", log.display()))?;
        self.pid.store(agent.pid(), Ordering::Relaxed);
        self.lives.push(Life {
            pid: agent.pid(),
            log,
            started,
            running: clock.now(),
            ended: None,
        });
        self.agent = Some(agent);
        Ok(())
    }

    /// The running agent.
    pub fn agent(&self) -> anyhow::Result<&RunningAgent> {
        self.agent.as_ref().context("no agent runs")
    }

    fn ended(&mut self, at: u64, how: String) {
        self.pid.store(0, Ordering::Relaxed);
        if let Some(life) = self.lives.last_mut() {
            life.ended.get_or_insert((at, how));
        }
    }

    /// SIGKILLs the agent and waits for its exit.
    pub fn kill(&mut self, clock: &Clock) -> anyhow::Result<()> {
        let agent = self.agent.as_mut().context("no agent runs")?;
        agent.signal_and_wait(Signal::SIGKILL as i32, Duration::from_secs(10))?;
        self.ended(clock.now(), "SIGKILL (fault)".to_owned());
        self.agent = None;
        Ok(())
    }

    /// `Some(how)` when the agent has exited on its own since the last
    /// look (the life is recorded as ended).
    pub fn exited(&mut self, clock: &Clock) -> Option<String> {
        let status = self.agent.as_mut()?.exited().ok().flatten()?;
        let how = format!("exited on its own: {status}");
        self.ended(clock.now(), how.clone());
        self.agent = None;
        Some(how)
    }

    /// SIGTERMs the agent at the end of the run; its exit status.
    pub fn stop(&mut self, clock: &Clock) -> anyhow::Result<String> {
        let Some(agent) = self.agent.as_mut() else {
            return Ok("not running".to_owned());
        };
        let status = agent.signal_and_wait(Signal::SIGTERM as i32, Duration::from_secs(15))?;
        let how = format!("SIGTERM at the end: {status}");
        self.ended(clock.now(), how.clone());
        self.agent = None;
        Ok(how)
    }

    /// `GET /api/services`, as a list.
    pub fn services(&self) -> anyhow::Result<Vec<Value>> {
        let list = self.agent()?.services()?;
        list.as_array()
            .cloned()
            .context("GET /api/services is not a list")
    }

    /// `autostop ARGS… --config FILE` (the CLI as an operator runs it);
    /// its stdout, or an error with its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&self.config.path)
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("running autostop {}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "autostop {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// Every log line of every life, in order.
    pub fn log_lines(&self) -> Vec<String> {
        self.lives
            .iter()
            .flat_map(|life| {
                fs::read_to_string(&life.log)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The last `n` lines of the current (or last) life's log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let Some(life) = self.lives.last() else {
            return Vec::new();
        };
        let text = fs::read_to_string(&life.log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// One reading of the agent's footprint.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When (run ms).
    pub at: u64,
    /// Which process.
    pub pid: u32,
    /// `VmRSS`, in bytes.
    pub rss: u64,
    /// Open descriptors (`/proc/<pid>/fd` entries).
    pub fds: u64,
}

/// Reads the agent's RSS and open fds every [`SAMPLE_PERIOD`] until `stop`.
pub fn spawn_sampler(
    pid: Arc<AtomicU32>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Sample>> {
    thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let pid = pid.load(Ordering::Relaxed);
            if pid != 0 {
                let rss = proc_field(pid, "VmRSS").ok();
                let fds = fs::read_dir(format!("/proc/{pid}/fd"))
                    .ok()
                    .map(|d| d.count() as u64);
                if let (Some(rss), Some(fds)) = (rss, fds) {
                    samples.push(Sample {
                        at: clock.now(),
                        pid,
                        rss,
                        fds,
                    });
                }
            }
            thread::sleep(SAMPLE_PERIOD);
        }
        samples
    })
}
