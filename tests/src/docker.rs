//! Docker fixtures: a `FROM scratch` busybox test image, containers, compose
//! projects, free host ports and inspect helpers. Every resource is a Drop
//! guard that removes it, so failing tests leave nothing behind. They drive
//! the Docker CLI (the code under test uses the API). The image builder,
//! containers, names and ports are `autostop_fixtures`', failing the test
//! on error here.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use autostop::config::{Mode, PortSpec, Protocol, ServiceConfig, Target};
pub use autostop_fixtures::unique;
use autostop_fixtures::{
    compose::Compose,
    docker::{Container, Image},
};

use crate::OrFail as _;

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

/// `docker ARGS…`, failing the test on failure; returns trimmed stdout.
#[track_caller]
pub fn docker(args: &[&str]) -> String {
    autostop_fixtures::docker::docker(args).or_fail()
}

/// A host port nobody listens on right now, never the same one twice in
/// this process ([`autostop_fixtures::free_port`]).
#[track_caller]
pub fn free_port() -> u16 {
    autostop_fixtures::free_port().or_fail()
}

/// Test image: `FROM scratch` with Debian's static busybox as /bin/busybox
/// and /bin/sh. Removed on drop.
pub struct TestImage(Image);

impl TestImage {
    /// Builds the image (needs /bin/busybox from busybox-static).
    pub fn build() -> Self {
        Self(build_busybox_image(
            "autostop-test-busybox",
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\n",
        ))
    }
}

impl Deref for TestImage {
    type Target = Image;
    fn deref(&self) -> &Image {
        &self.0
    }
}

/// Builds a `FROM scratch` image from `dockerfile`, with Debian's static
/// busybox copied into the build context as `busybox`, tagged
/// `<repository>:<unique>`; removed on drop.
#[track_caller]
pub fn build_busybox_image(repository: &str, dockerfile: &str) -> Image {
    let tag = format!("{repository}:{}", unique("t"));
    Image::build_busybox(&tag, dockerfile, &[]).or_fail()
}

/// A container created with `docker create`; removed (forcibly) on drop.
pub struct TestContainer(Container);

impl TestContainer {
    /// `docker create --name NAME --stop-timeout 1 OPTS… IMAGE CMD…`.
    #[track_caller]
    pub fn create(name: &str, opts: &[&str], image: &str, cmd: &[&str]) -> Self {
        Self(Container::create(name, opts, image, cmd).or_fail())
    }
}

impl Deref for TestContainer {
    type Target = Container;
    fn deref(&self) -> &Container {
        &self.0
    }
}

/// A compose project in a temporary directory, created with
/// `docker-compose up --no-start`; `down` plus a forced removal by label on
/// drop ([`Compose`], failing the test on error here).
pub struct ComposeProject(Compose);

impl ComposeProject {
    /// Writes `yaml` and creates the containers without starting them
    /// (`docker-compose up --no-start`).
    #[track_caller]
    pub fn create(yaml: &str) -> Self {
        Self(Compose::create(yaml).or_fail())
    }

    /// Like [`create`](Self::create) with another compose subcommand
    /// ([`Compose::create_with`]: `create` for projects with a
    /// `service_completed_successfully` dependency).
    #[track_caller]
    pub fn create_with(yaml: &str, subcommand: &[&str]) -> Self {
        Self(Compose::create_with(yaml, subcommand).or_fail())
    }

    /// Container name of compose service `svc` (replica 1).
    #[track_caller]
    pub fn container(&self, svc: &str) -> String {
        self.0.container(svc).or_fail()
    }
}

impl Deref for ComposeProject {
    type Target = Compose;
    fn deref(&self) -> &Compose {
        &self.0
    }
}

/// `docker inspect -f FORMAT NAME`.
#[track_caller]
pub fn inspect(name: &str, format: &str) -> String {
    autostop_fixtures::docker::inspect(name, format).or_fail()
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
        wake: Default::default(),
        sleep: Default::default(),
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
