//! End-to-end fixtures: the real agent binary running from a config file
//! ([`AgentRun`]), Debian's nginx proxying to a published port ([`Nginx`]),
//! a minimal HTTP/1.1 client over `std::net::TcpStream` ([`http_get`]) and a
//! headless Chromium driven over WebDriver ([`webdriver::Browser`]). Each
//! fixture is a Drop guard that stops what it started.

pub mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::free_port;
use crate::{agent_binary, eventually};

/// How long the agent gets to attach and answer its status API.
const AGENT_UP: Duration = Duration::from_secs(30);

/// The agent (`autostop run --config FILE`) with its own tempdir holding the
/// config, `state_dir`, `themes_dir`, and its own status port. Killed on drop.
pub struct AgentRun {
    child: Child,
    /// Holds config, state and themes; removed on drop.
    pub dir: tempfile::TempDir,
    /// The status API address.
    pub status: SocketAddr,
}

impl AgentRun {
    /// Writes `[agent]` plus `services` (raw `[[service]]` TOML) and starts
    /// the agent; `themes` are user themes written first as `NAME.html`.
    /// Returns once `GET /api/services` answers 200.
    pub fn start(services: &str, themes: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let themes_dir = dir.path().join("themes");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&themes_dir).expect("themes dir");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        for (name, html) in themes {
            std::fs::write(themes_dir.join(format!("{name}.html")), html).expect("theme");
        }
        let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = format!(
            "[agent]\nstatus_listen = \"{status}\"\nthemes_dir = \"{}\"\nstate_dir = \"{}\"\ndocker_labels = false\n\n{services}",
            themes_dir.display(),
            state_dir.display()
        );
        let path = dir.path().join("autostop.toml");
        std::fs::write(&path, config).expect("writing config");
        let child = Command::new(agent_binary())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the agent");
        let mut run = Self { child, dir, status };
        let up = eventually(AGENT_UP, || {
            assert!(
                matches!(run.child.try_wait(), Ok(None)),
                "the agent exited during start-up"
            );
            matches!(http_get(status, "/api/services", &[], Duration::from_secs(2)), Ok(r) if r.status == 200)
        });
        assert!(
            up,
            "agent status API {status} did not answer within {AGENT_UP:?}"
        );
        // A service's ports are steered (synchronously) before its state
        // leaves `unknown`, which needs a first look at Docker: until then
        // its port is still closed.
        let adopted = eventually(AGENT_UP, || {
            let Ok(r) = http_get(status, "/api/services", &[], Duration::from_secs(2)) else {
                return false;
            };
            let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            list.as_array()
                .is_some_and(|l| l.iter().all(|s| s["state"] != "unknown"))
        });
        assert!(adopted, "services still `unknown` after {AGENT_UP:?}");
        run
    }

    /// `GET /api/services/NAME` as JSON.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let r = http_get(
            self.status,
            &format!("/api/services/{name}"),
            &[],
            Duration::from_secs(5),
        )
        .expect("status API");
        serde_json::from_slice(&r.body).expect("status JSON")
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        // SIGTERM first so the agent detaches its programs cleanly.
        // SAFETY: kill(2) on our own unreaped child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let exited = eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Debian's nginx with one server block on a free loopback port that
/// proxies to `127.0.0.1:SERVICE_PORT`, everything inside a tempdir. Stopped
/// on drop.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    /// Where nginx listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx in the foreground and waits until it accepts.
    pub fn start(service_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen {addr};\n    location / {{\n\
             proxy_pass http://127.0.0.1:{service_port};\n      proxy_http_version 1.1;\n\
             proxy_set_header Host $host;\n      proxy_set_header X-Real-IP $remote_addr;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_connect_timeout 300s;\n\
             proxy_read_timeout 300s;\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("writing nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx (install nginx-light: `cargo xtask setup`)");
        let nginx = Self {
            child,
            _dir: dir,
            addr,
        };
        let up = eventually(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "nginx did not listen on {addr} within 10 s");
        nginx
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; the master takes its worker down.
        // SAFETY: kill(2) on our own unreaped child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let exited = eventually(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP response read to the end of the connection.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines as (lowercased name, value).
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Connection: close` and `extra` headers, everything
/// (connect, write, read to EOF) bounded by `timeout`.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Response> {
    http_request(addr, "GET", path, extra, None, timeout)
}

/// One request (`Connection: close`; a JSON `body` gets its
/// `Content-Type`/`Content-Length`), bounded by `timeout` as a whole.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&bytes)?;
    let raw = read_to_end_by(&mut stream, deadline)?;
    parse_response(&raw)
}

/// Reads until EOF or `deadline` (then `TimedOut`).
pub fn read_to_end_by(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("response not complete after {} bytes", raw.len()),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if complete_by_length(&raw) {
                    return Ok(raw);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `raw` holds a whole response with a `Content-Length` (some
/// servers, chromedriver among them, keep the connection open regardless of
/// `Connection: close`).
fn complete_by_length(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let length = head.split("\r\n").skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|len| raw.len() >= end + 4 + len)
}

/// Parses a whole HTTP/1 response (status line, headers, body, chunked or not).
pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
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
