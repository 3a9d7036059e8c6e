//! The stack every end-to-end section of `cargo xtask bench` stands on:
//! a busybox image `FROM scratch`, bench containers, nginx from Debian in
//! front and the real agent beside, each behind a Drop guard so a failing
//! section still leaves no container, image, nginx, agent or nft table.
//! The guards, the agent launcher, the HTTP client and free ports are
//! `autostop_fixtures`' (shared with the privileged tests); this module
//! adds what only the bench needs, and the statistics helpers the sections
//! share.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use nix::{
    sys::resource::{getrlimit, setrlimit, Resource},
    unistd::{sysconf, SysconfVar},
};

pub use autostop_fixtures::{
    agent::RunningAgent as Agent,
    docker::{docker, Image},
    free_port,
    nginx::Nginx,
};
use autostop_fixtures::{
    agent::{AgentConfig, Launch},
    eventually,
};

use crate::run;

/// Docker label on every bench container, so leftovers of an interrupted
/// run can be found and removed.
pub const LABEL: &str = "autostop.bench=1";

/// Names unique to this run (another worker may bench at the same time).
pub fn unique(what: &str) -> String {
    autostop_fixtures::unique(&format!("autostop-bench-{what}-"))
}

/// Builds the bench image (busybox-static `FROM scratch`); its httpd serves
/// `/www/index.html` = `cold bench`.
pub fn build_image() -> anyhow::Result<Image> {
    let image = Image::build_busybox(
        &format!("autostop-bench:{}", std::process::id()),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY busybox /bin/sleep\n\
         COPY busybox /bin/httpd\nCOPY www /www\n",
        &[("www/index.html", b"cold bench\n")],
    )?;
    Ok(image)
}

/// Removes bench containers left by an interrupted earlier run.
pub fn remove_leftovers() {
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}")]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
}

/// `docker create` arguments for a bench container named `name` publishing
/// `127.0.0.1:port` → 80 and running `script` under busybox sh.
pub fn create_container(image: &Image, name: &str, port: u16, script: &str) -> anyhow::Result<()> {
    docker(&[
        "create",
        "--name",
        name,
        "--label",
        LABEL,
        "--stop-timeout",
        "1",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        &image.tag,
        "/bin/sh",
        "-c",
        script,
    ])?;
    Ok(())
}

/// The shell line of an httpd that listens `delay_s` seconds after start.
/// Just before it execs httpd it prints the time (busybox `adjtimex`:
/// `time.tv_sec:` and `time.tv_usec:` lines), which the cold section reads
/// as the moment the app listens.
pub fn httpd_script(delay_s: &str) -> String {
    format!(
        "trap 'exit 0' TERM; (sleep {delay_s}; adjtimex | grep tv_; exec httpd -f -p 80 -h /www) & wait"
    )
}

/// Removes bench containers (by name) when dropped.
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for chunk in self.0.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// The address of a running container on its Docker network.
pub fn container_ip(name: &str) -> anyhow::Result<String> {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])?;
    Ok(ip.trim().to_owned())
}

/// The real agent (`autostop run`, release build) with its own config in
/// `dir` (status port, state dir, nft table), `services` its TOML
/// `[[service]]` blocks; returns once it runs and `/healthz` says 200 (or
/// fails with what `/healthz` said). Its log goes to `dir/agent.log`.
/// Dropping it SIGTERMs it (it detaches everything and drops its table),
/// SIGKILLs it and deletes its table if it does not exit within 10 s.
pub fn start_agent(dir: &Path, services: &str) -> anyhow::Result<Agent> {
    let config = AgentConfig::in_dir(dir, services)?;
    let launch = Launch {
        binary: Some(run::agent_binary(true)),
        log_file: Some(dir.join("agent.log")),
        ..Launch::default()
    };
    let log = || format!("log: {}/agent.log", dir.display());
    let agent = Agent::start_with(&config, launch).with_context(log)?;
    wait_healthy(&agent).with_context(log)?;
    Ok(agent)
}

/// How long a started agent has to answer `/healthz` with 200.
const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

/// Waits until `/healthz` answers 200; its body. Fails with the last
/// status and body (an unhealthy agent says why there).
pub fn wait_healthy(agent: &Agent) -> anyhow::Result<String> {
    let began = std::time::Instant::now();
    loop {
        let last = match agent.api("GET", "/healthz") {
            Ok(r) if r.status == 200 => return Ok(r.text()),
            Ok(r) => format!("{} {}", r.status, r.text()),
            Err(e) => e.to_string(),
        };
        if began.elapsed() > HEALTHY_WITHIN {
            bail!("/healthz not 200 within {HEALTHY_WITHIN:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `condition` every 20 ms until it holds; fails after `timeout`.
pub fn wait_for(condition: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    if !eventually(timeout, condition) {
        bail!("timed out after {timeout:?}");
    }
    Ok(())
}

/// The `q` quantile (nearest rank) of `values`, NaN when empty.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index.min(values.len() - 1)]
}

/// The median of `values`, NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `x` rounded to `digits` decimals.
pub fn round_to(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Raises this process's open-file soft limit to its hard limit (children,
/// the agent included, inherit it); returns the new soft limit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    Ok(hard)
}

/// The directory a section keeps its files in.
pub fn section_dir(work: &Path, section: &str) -> anyhow::Result<PathBuf> {
    let dir = work.join(section);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// CPU time (utime + stime) `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: state is
    // field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("short /proc/{pid}/stat");
    }
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second = sysconf(SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .context("sysconf(_SC_CLK_TCK): no value")?;
    Ok(ticks as f64 / per_second as f64)
}

/// The CPU time of each live thread of a process, in nanoseconds, from
/// `/proc/PID/task/TID/schedstat` (the scheduler's own count, not the
/// 10 ms ticks of `/proc/PID/stat`): what the idle targets (< 0.01 % of a
/// core is 6 ms a minute) need to be read at all.
pub struct CpuSample(std::collections::BTreeMap<u32, u64>);

/// Samples every live thread of `pid` (see [`CpuSample`]).
pub fn cpu_sample(pid: u32) -> anyhow::Result<CpuSample> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = std::collections::BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| dir.clone())? {
        let entry = entry.with_context(|| dir.clone())?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{dir}/{tid}/schedstat: {text:?}"))?;
        threads.insert(tid, ns);
    }
    Ok(CpuSample(threads))
}

impl CpuSample {
    /// Seconds of CPU used since `before`: each thread's growth, all of
    /// a thread born since. A thread that ended in between takes its last
    /// moments with it (the agent's are long-lived: its runtime workers).
    pub fn seconds_since(&self, before: &CpuSample) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// The Docker daemon's process id (from its pid file).
pub fn dockerd_pid() -> anyhow::Result<u32> {
    let text = fs::read_to_string("/var/run/docker.pid").context("/var/run/docker.pid")?;
    text.trim().parse().context("dockerd's pid file")
}
