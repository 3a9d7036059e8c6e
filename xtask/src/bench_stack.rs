//! The stack every end-to-end section of `cargo xtask bench` stands on:
//! a busybox image `FROM scratch`, bench containers, nginx from Debian in
//! front and the real agent beside, each behind a Drop guard so a failing
//! section still leaves no container, image, nginx, agent or nft table.
//! Also the small HTTP and statistics helpers the sections share.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::run;

/// Docker label on every bench container, so leftovers of an interrupted
/// run can be found and removed.
pub const LABEL: &str = "autostop.bench=1";

/// Names unique to this run (another worker may bench at the same time).
pub fn unique(what: &str) -> String {
    format!("autostop-bench-{}-{what}", std::process::id())
}

/// The bench image (busybox-static `FROM scratch`), untagged when dropped.
pub struct Image {
    /// Image reference (`repository:tag`).
    pub name: String,
}

impl Image {
    /// Builds the image from `/bin/busybox` in `work/image`; its httpd serves
    /// `/www/index.html` = `cold bench`.
    pub fn build(work: &Path) -> anyhow::Result<Self> {
        let context = work.join("image");
        fs::create_dir_all(context.join("www"))?;
        fs::copy("/bin/busybox", context.join("busybox")).context("copying /bin/busybox")?;
        fs::write(context.join("www/index.html"), "cold bench\n")?;
        fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY busybox /bin/sleep\nCOPY busybox /bin/httpd\nCOPY www /www\n",
        )?;
        let name = format!("autostop-bench:{}", std::process::id());
        let status = Command::new("docker")
            .args(["build", "-q", "-t", &name])
            .arg(&context)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("docker build failed");
        }
        Ok(Self { name })
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.name]);
    }
}

/// Removes bench containers left by an interrupted earlier run.
pub fn remove_leftovers() {
    if let Ok(ids) = docker_out(&["ps", "-aq", "--filter", &format!("label={LABEL}")]) {
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
        &image.name,
        "/bin/sh",
        "-c",
        script,
    ])
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

pub use crate::run::{docker, docker_out};

/// The address of a running container on its Docker network.
pub fn container_ip(name: &str) -> anyhow::Result<String> {
    let ip = docker_out(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])?;
    Ok(ip.trim().to_owned())
}

/// nginx from Debian in front of the service, like users run it (the
/// README's server block: `proxy_pass` to the published port, no upstream
/// keep-alive). One worker process, the Debian default.
pub struct Nginx(Child);

impl Nginx {
    /// Starts nginx on `127.0.0.1:listen` proxying to `127.0.0.1:upstream`,
    /// with its files in `dir`; returns once it accepts connections.
    pub fn start(dir: &Path, listen: u16, upstream: u16) -> anyhow::Result<Self> {
        let d = dir.display();
        let conf = format!(
            "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n\
             proxy_http_version 1.1;\n      proxy_read_timeout 300s;\n    }}\n  }}\n}}\n"
        );
        fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let guard = Self(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        wait_for(|| TcpStream::connect(addr).is_ok(), Duration::from_secs(10))?;
        Ok(guard)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGQUIT) };
        let _ = self.0.wait();
    }
}

/// The real agent (`autostop run`, release build) with its own config,
/// state dir, status port and nft table; SIGTERMed (it detaches everything
/// and drops its table) when dropped, SIGKILLed and its table deleted if it
/// does not exit within 10 s.
pub struct Agent {
    child: Child,
    /// The status API's address.
    pub api: SocketAddr,
    table: String,
}

impl Agent {
    /// Writes `dir/autostop.toml` with an `[agent]` section and `services`
    /// (TOML `[[service]]` blocks), starts the agent and waits for its API.
    /// Its log goes to `dir/agent.log`.
    pub fn start(dir: &Path, services: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let status_port = free_port()?;
        let d = dir.display();
        let config = dir.join("autostop.toml");
        fs::write(
            &config,
            format!(
                "[agent]\nstatus_listen = \"127.0.0.1:{status_port}\"\nstate_dir = \"{d}/state\"\n\
                 themes_dir = \"{d}/themes\"\ndocker_labels = false\n\n{services}"
            ),
        )?;
        let table = format!("autostop_bench_{}", std::process::id());
        let log = fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(run::agent_binary(true))
            .args(["run", "--config"])
            .arg(&config)
            .env("AUTOSTOP_NFT_TABLE", &table)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the agent")?;
        let mut agent = Self {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], status_port)),
            table,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(agent.api, "/healthz").is_none() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                let log = fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                bail!("the agent exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("the agent's API did not answer within 30 s (log: {d}/agent.log)");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The state of service `name` from the status API.
    pub fn state(&self, name: &str) -> Option<String> {
        let body = http_get(self.api, &format!("/api/services/{name}"))?;
        serde_json::from_str::<Value>(&body).ok()?["state"]
            .as_str()
            .map(str::to_owned)
    }

    /// Waits until service `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(|| self.state(name).as_deref() == Some(state), timeout)
            .with_context(|| format!("waiting for {name} to be {state}"))
    }

    /// Sum of every sample of the Prometheus metric `metric` labelled
    /// `service="name"`.
    pub fn metric(&self, metric: &str, name: &str) -> anyhow::Result<f64> {
        let text = http_get(self.api, "/metrics").context("GET /metrics")?;
        let label = format!("service=\"{name}\"");
        Ok(text
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Stops the agent now (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Gone already after a clean exit; this only matters after a kill.
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .stderr(Stdio::null())
            .status();
    }
}

/// The body of `GET path` at `addr` (HTTP/1.0), `None` on any failure.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    // The status API answers only Host values naming it (loopback here).
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.1 200") && !answer.starts_with("HTTP/1.0 200") {
        return None;
    }
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(mut condition: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A free TCP port on loopback, never the same one twice in a run (the
/// kernel may hand a just-released port out again, and a service, nginx
/// and the agent's API must not share one).
pub fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
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
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit(2) reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(limit.rlim_cur)
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
    // SAFETY: sysconf(3) has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_second as f64)
}

/// The Docker daemon's process id (from its pid file).
pub fn dockerd_pid() -> anyhow::Result<u32> {
    let text = fs::read_to_string("/var/run/docker.pid").context("/var/run/docker.pid")?;
    text.trim().parse().context("dockerd's pid file")
}
