//! Docker fixtures: a `FROM scratch` busybox test image, containers, compose
//! projects, free host ports and inspect helpers. Every resource is a Drop
//! guard that removes it, so failing tests leave nothing behind. They drive
//! the Docker CLI (the code under test uses the API).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autostop::config::{Mode, PortSpec, Protocol, ServiceConfig, Target};

/// Fails the test unless the Docker daemon and docker-compose answer.
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success());
    assert!(
        ok,
        "privileged test: the Docker daemon does not answer (`docker version`): {out:?}"
    );
    let compose = Command::new("docker-compose").arg("version").output();
    assert!(
        matches!(&compose, Ok(o) if o.status.success()),
        "privileged test: docker-compose is missing: {compose:?}"
    );
}

/// Runs a command, panicking with its output on failure.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `docker ARGS…`, panicking on failure; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name unique to this process and call, lowercase for Docker/compose.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{nanos:x}x{n}", std::process::id())
}

/// A host port nobody listens on right now.
///
/// Never the same port twice in one test process: the kernel may hand a
/// just-released ephemeral port out again, and a test that asked for a
/// service port and then the agent's status port once got the same one
/// (Docker's userland proxy then failed with "address already in use").
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = TcpListener::bind("0.0.0.0:0").expect("binding an ephemeral port");
        let port = l.local_addr().expect("local_addr").port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Test image: `FROM scratch` with Debian's static busybox as /bin/busybox
/// and /bin/sh. Removed on drop.
pub struct TestImage {
    /// Unique tag.
    pub tag: String,
}

impl TestImage {
    /// Builds the image (needs /bin/busybox from busybox-static).
    pub fn build() -> Self {
        let tag = build_busybox_image(
            "autostop-test-busybox",
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\n",
        );
        Self { tag }
    }
}

/// Builds a `FROM scratch` image from `dockerfile`, with Debian's static
/// busybox copied into the build context as `busybox`; returns its unique
/// tag (`<repository>:<unique>`).
pub fn build_busybox_image(repository: &str, dockerfile: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("copying /bin/busybox (install busybox-static)");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("writing Dockerfile");
    let tag = format!("{repository}:{}", unique("t"));
    let path = dir.path().to_string_lossy().to_string();
    docker(&["build", "-q", "-t", &tag, &path]);
    tag
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// A container created with `docker create`; removed (forcibly) on drop.
pub struct TestContainer {
    /// Container name.
    pub name: String,
}

impl TestContainer {
    /// `docker create --name NAME --stop-timeout 1 OPTS… IMAGE CMD…`.
    pub fn create(name: &str, opts: &[&str], image: &str, cmd: &[&str]) -> Self {
        let mut args = vec!["create", "--name", name, "--stop-timeout", "1"];
        args.extend_from_slice(opts);
        args.push(image);
        args.extend_from_slice(cmd);
        docker(&args);
        Self {
            name: name.to_string(),
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// A compose project in a temporary directory, created with
/// `docker-compose up --no-start`; `down` plus a forced removal by label on
/// drop.
pub struct ComposeProject {
    /// Project directory (holds docker-compose.yml).
    pub dir: tempfile::TempDir,
    /// Project name.
    pub name: String,
}

impl ComposeProject {
    /// Writes `yaml` and creates the containers without starting them
    /// (`docker-compose up --no-start`).
    pub fn create(yaml: &str) -> Self {
        Self::create_with(yaml, &["up", "--no-start"])
    }

    /// Like [`create`](Self::create) with another compose subcommand:
    /// compose 1.29.2's `up --no-start` waits forever for a
    /// `service_completed_successfully` dependency, so such projects use
    /// `create` (the project's default network is then created here).
    pub fn create_with(yaml: &str, subcommand: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("docker-compose.yml"), yaml).expect("writing compose file");
        let name = unique("autostoptest");
        if subcommand.first() == Some(&"create") {
            // `create` makes no networks; make the default one as compose would.
            docker(&[
                "network",
                "create",
                "--label",
                &format!("com.docker.compose.project={name}"),
                "--label",
                "com.docker.compose.network=default",
                &format!("{name}_default"),
            ]);
        }
        run(Command::new("docker-compose")
            .current_dir(dir.path())
            .args(["-p", &name])
            .args(subcommand));
        Self { dir, name }
    }

    /// The project directory (what `compose_dir` names).
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Container name of compose service `svc` (replica 1).
    pub fn container(&self, svc: &str) -> String {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={svc}"),
        ])
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .current_dir(self.dir.path())
            .args(["-p", &self.name, "down", "-v", "-t", "1"])
            .output();
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .output();
        if let Ok(ids) = ids {
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.name)])
            .output();
    }
}

/// `docker inspect -f FORMAT NAME`.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name])
}

/// Parses an inspect timestamp (`.State.StartedAt` etc.).
pub fn inspect_time(name: &str, field: &str) -> SystemTime {
    let s = inspect(name, &format!("{{{{{field}}}}}"));
    humantime::parse_rfc3339(&s).unwrap_or_else(|e| panic!("{name} {field} = {s:?}: {e}"))
}

/// Service config for the runtime under test.
pub fn service(name: &str, port: u16, target: Target) -> ServiceConfig {
    ServiceConfig {
        name: name.to_string(),
        ports: vec![PortSpec {
            port,
            protocol: Protocol::Tcp,
        }],
        idle_timeout: Duration::from_secs(180),
        mode: Mode::Blocking,
        theme: None,
        target,
        start_timeout: Duration::from_secs(60),
        hold_while_connected: true,
        max_held_connections: 1024,
    }
}

/// Service config for a compose project directory.
pub fn compose_service(name: &str, port: u16, dir: &Path) -> ServiceConfig {
    service(name, port, Target::ComposeDir(dir.to_path_buf()))
}

/// Service config for named containers.
pub fn containers_service(name: &str, port: u16, names: &[&str]) -> ServiceConfig {
    let names = names.iter().map(|n| n.to_string()).collect();
    service(name, port, Target::Containers(names))
}

/// A user-defined bridge network; removed on drop.
pub struct TestNetwork {
    /// Network name.
    pub name: String,
    /// Network id.
    pub id: String,
}

impl TestNetwork {
    /// `docker network create NAME`.
    pub fn create(name: &str) -> Self {
        Self::create_with(name, &[])
    }

    /// `docker network create OPTS… NAME`.
    pub fn create_with(name: &str, opts: &[&str]) -> Self {
        let mut args = vec!["network", "create"];
        args.extend_from_slice(opts);
        args.push(name);
        let id = docker(&args);
        Self {
            name: name.to_string(),
            id,
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// A Unix-socket relay to the real Docker socket that a test can take down
/// and bring back, to simulate the daemon going away without touching it.
/// Taking it down also cuts the connections it relays.
pub struct DockerRelay {
    /// Socket path clients connect to.
    pub path: PathBuf,
    /// Keeps the socket's directory alive.
    _dir: tempfile::TempDir,
    /// The running relay, if up.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerRelay {
    /// A relay that is down until [`up`](Self::up).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            path: dir.path().join("docker.sock"),
            _dir: dir,
            task: None,
        }
    }

    /// Starts relaying (on the current tokio runtime).
    pub fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path).expect("binding relay socket");
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut daemon) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
            }
        }));
    }

    /// Stops relaying and cuts relayed connections.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Default for DockerRelay {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DockerRelay {
    fn drop(&mut self) {
        self.down();
    }
}
