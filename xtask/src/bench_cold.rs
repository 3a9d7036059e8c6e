//! `cold` section of `cargo xtask bench`: what a cold start costs on top of
//! the app's own start. Each round measures, for the same stopped container,
//! (A) `docker start` then polling the container address until the app's
//! first response byte, and (B) one request through nginx to the sleeping
//! service with the agent running, start to first response byte. The
//! overhead of a round is B − A; rounds alternate A and B.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::run;

const IMAGE: &str = "autostop-bench:latest";
const ROUNDS: usize = 7;
/// The app listens this long after its container starts.
const APP_DELAY: &str = "1";

/// Runs the section; `None` results are reported as errors in the JSON.
pub fn cold(work: &Path) -> anyhow::Result<Value> {
    build_image(work)?;
    let mut modes = serde_json::Map::new();
    for mode in ["blocking", "dynamic"] {
        modes.insert(
            mode.to_owned(),
            measure(work, mode).with_context(|| format!("{mode} mode"))?,
        );
    }
    Ok(Value::Object(modes))
}

fn measure(work: &Path, mode: &str) -> anyhow::Result<Value> {
    let name = format!("autostop-bench-{mode}");
    let port = free_port()?;
    let _ = docker(&["rm", "-f", &name]);
    let script =
        format!("trap 'exit 0' TERM; (sleep {APP_DELAY}; exec httpd -f -p 80 -h /www) & wait");
    docker(&[
        "create",
        "--name",
        &name,
        "--stop-timeout",
        "1",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        IMAGE,
        "/bin/sh",
        "-c",
        &script,
    ])?;
    let _container = Removal(name.clone());
    let dir = work.join(format!("cold-{mode}"));
    fs::create_dir_all(&dir)?;
    let status_port = free_port()?;
    fs::write(
        dir.join("autostop.toml"),
        format!(
            "[agent]\nstatus_listen = \"127.0.0.1:{status_port}\"\nstate_dir = \"{}/state\"\nthemes_dir = \"{}/themes\"\n\n\
             [[service]]\nname = \"bench\"\nport = {port}\nmode = \"{mode}\"\ncontainers = [\"{name}\"]\n\
             idle_timeout = \"1h\"\nstart_timeout = \"60s\"\n",
            dir.display(),
            dir.display()
        ),
    )?;
    let nginx_port = free_port()?;
    let _nginx = Nginx::start(&dir, nginx_port, port)?;
    let agent = Killed(
        Command::new(run::agent_binary(true))
            .args(["run", "--config"])
            .arg(dir.join("autostop.toml"))
            .env("AUTOSTOP_NFT_TABLE", "autostop_bench")
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let api = SocketAddr::from(([127, 0, 0, 1], status_port));
    wait_for(
        || state(api).as_deref() == Some("stopped"),
        Duration::from_secs(30),
    )?;

    let mut overhead = Vec::new();
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut pair = [0.0f64; 2];
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for via_agent in order {
            docker(&["stop", &name])?;
            wait_for(
                || state(api).as_deref() == Some("stopped"),
                Duration::from_secs(30),
            )?;
            let took = if via_agent {
                first_byte(
                    SocketAddr::from(([127, 0, 0, 1], nginx_port)),
                    Duration::from_secs(60),
                )?
            } else {
                let started = Instant::now();
                start_via_api(&name)?;
                let ip = docker_out(&[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    &name,
                ])?;
                let addr: SocketAddr = format!("{}:80", ip.trim())
                    .parse()
                    .context("container address")?;
                loop {
                    if first_byte(addr, Duration::from_millis(500)).is_ok() {
                        break started.elapsed().as_secs_f64() * 1000.0;
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        bail!("the app never answered directly");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            };
            pair[usize::from(via_agent)] = took;
        }
        direct.push(pair[0]);
        through.push(pair[1]);
        overhead.push(pair[1] - pair[0]);
    }
    drop(agent);
    let p50 = percentile(&mut overhead.clone(), 0.5);
    let p99 = percentile(&mut overhead, 0.99);
    Ok(json!({
        "overhead_ms_p50": round1(p50),
        "overhead_ms_p99": round1(p99),
        "direct_first_byte_ms_p50": round1(percentile(&mut direct, 0.5)),
        "through_agent_first_byte_ms_p50": round1(percentile(&mut through, 0.5)),
        "rounds": ROUNDS,
        "app_listen_delay_s": APP_DELAY,
    }))
}

/// Milliseconds from now to the first response byte of `GET /` at `addr`.
fn first_byte(addr: SocketAddr, timeout: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(
        b"GET / HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )?;
    let mut byte = [0u8; 1];
    if stream.read(&mut byte)? == 0 {
        bail!("closed without a byte");
    }
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    if !String::from_utf8_lossy(&rest).contains("cold bench") {
        bail!("unexpected answer");
    }
    Ok(took)
}

/// `docker start` through the Engine API socket, as the agent does (no
/// CLI process start-up in the measurement).
fn start_via_api(name: &str) -> anyhow::Result<()> {
    let mut socket =
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").context("docker socket")?;
    write!(
        socket,
        "POST /v1.41/containers/{name}/start HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    if !(answer.starts_with("HTTP/1.0 204") || answer.starts_with("HTTP/1.1 204")) {
        bail!("starting {name}: {}", answer.lines().next().unwrap_or(""));
    }
    Ok(())
}

fn state(api: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(2)).ok()?;
    stream
        .write_all(b"GET /api/services/bench HTTP/1.0\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<Value>(json).ok()?["state"]
        .as_str()
        .map(str::to_owned)
}

fn wait_for(mut condition: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index.min(values.len() - 1)]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn build_image(work: &Path) -> anyhow::Result<()> {
    let context = work.join("cold-image");
    fs::create_dir_all(context.join("www"))?;
    fs::copy("/bin/busybox", context.join("busybox")).context("copying /bin/busybox")?;
    fs::write(context.join("www/index.html"), "cold bench\n")?;
    fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY busybox /bin/sleep\nCOPY busybox /bin/httpd\nCOPY www /www\n",
    )?;
    let status = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(&context)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("docker build failed");
    }
    Ok(())
}

fn docker(args: &[&str]) -> anyhow::Result<()> {
    docker_out(args).map(drop)
}

fn docker_out(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// nginx from Debian in front of the service, like users run it.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, listen: u16, upstream: u16) -> anyhow::Result<Self> {
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
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        wait_for(|| TcpStream::connect(addr).is_ok(), Duration::from_secs(10))?;
        Ok(Self(child))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGQUIT) };
        let _ = self.0.wait();
    }
}

/// The agent, stopped with SIGTERM (it cleans up) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Removes a bench container when dropped.
struct Removal(String);

impl Drop for Removal {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}
