//! The whole agent ([`super::run_with`]) over fakes, without root, on
//! tokio's paused clock: a config file, a fake kernel, warm-up redirect and
//! Docker ([`fakes`]), the real status API on a loopback socket. A wake
//! event starts a stopped service, which is reported ready once its port
//! is back on the stock path and stopped again once idle; a service
//! removed by a reload hands its kernel index to the next one only after
//! both kernel parts cleared it.

mod awake;
mod events;
mod fakes;
mod history;
mod ports;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use fakes::{wake, FakeDocker, FakeKernel, FakeSockets, FakeWake, FakeWarmup};

use super::{run_with, AgentDeps, AgentError, KernelDeps};
use crate::{
    bpf::{Target, WakeEvent},
    config::{Config, Protocol, ServiceConfig, ThemeCatalog},
    published::HostPort,
    state::StateStore,
};

/// One agent over fakes.
struct Harness {
    api: SocketAddr,
    config_path: PathBuf,
    kernel: FakeKernel,
    warmup: FakeWarmup,
    docker: Arc<FakeDocker>,
    sockets: FakeSockets,
    wake: mpsc::UnboundedSender<WakeEvent>,
    shutdown: CancellationToken,
    agent: JoinHandle<Result<(), AgentError>>,
    _dir: tempfile::TempDir,
}

fn config_text(api: SocketAddr, state_dir: &Path, services: &str) -> String {
    config_text_with(api, state_dir, "", services)
}

/// The config with `agent` (extra `[agent]` keys) and `services`.
fn config_text_with(api: SocketAddr, state_dir: &Path, agent: &str, services: &str) -> String {
    format!(
        "[agent]\nstatus_listen = \"{api}\"\nstate_dir = \"{}\"\ndocker_labels = false\n{agent}\n{services}",
        state_dir.display()
    )
}

fn service(name: &str, port: u16, idle: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\ncontainers = [\"{name}\"]\nidle_timeout = \"{idle}\"\n\n"
    )
}

impl Harness {
    /// Starts the agent with `services`; `running` containers are up.
    async fn start(services: &str, running: &[&str], capacity: u32) -> Self {
        Self::start_with("", services, running, capacity, Vec::new(), |_| {}).await
    }

    /// Like [`Harness::start`], with `remember` writing the state file
    /// first.
    async fn start_remembering(
        services: &str,
        running: &[&str],
        capacity: u32,
        remember: impl FnOnce(&mut StateStore),
    ) -> Self {
        Self::start_with("", services, running, capacity, Vec::new(), remember).await
    }

    /// Like [`Self::start`], with extra `[agent]` keys, the services every
    /// label scan finds and `remember` writing the state file first.
    async fn start_with(
        agent: &str,
        services: &str,
        running: &[&str],
        capacity: u32,
        labelled: Vec<ServiceConfig>,
        remember: impl FnOnce(&mut StateStore),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("api socket");
        let api = api_listener.local_addr().expect("api address");
        let steered = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("steered socket");
        let config_path = dir.path().join("autostop.toml");
        let state_dir = dir.path().join("state");
        std::fs::write(
            &config_path,
            config_text_with(api, &state_dir, agent, services),
        )
        .expect("config");
        let config = Config::load_with_own_themes(&config_path).expect("valid config");
        let (mut state, _) = StateStore::open(&state_dir).expect("state");
        remember(&mut state);
        let kernel = FakeKernel::default();
        let warmup = FakeWarmup::default();
        let docker = Arc::new(FakeDocker::default());
        *docker.labelled.lock().expect("fake") = labelled;
        for name in running {
            docker
                .running
                .lock()
                .expect("fake")
                .insert((*name).to_owned());
        }
        let (wake, events) = mpsc::unbounded_channel();
        let sockets = FakeSockets::default();
        let deps = AgentDeps {
            config_path: config_path.clone(),
            config,
            api_listener,
            token: None,
            alerts: None,
            state,
            steered: vec![steered],
            kernel: KernelDeps {
                counting: Box::new(kernel.clone()),
                activity: Arc::new(kernel.clone()),
                steering: Box::new(kernel.clone()),
                sources: Box::new(kernel.clone()),
                wake: Box::new(FakeWake(events)),
                log: None,
                capacity,
            },
            warmup: Box::new(warmup.clone()),
            docker: Arc::clone(&docker) as _,
            clock: crate::schedule::WallClock::following(
                "2026-11-30T07:00:00Z".parse().expect("a Monday morning"),
                jiff::tz::TimeZone::UTC,
            ),
            sockets: Arc::new(sockets.clone()),
            handover: Default::default(),
        };
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run_with(deps, shutdown.clone()));
        Self {
            api,
            config_path,
            kernel,
            warmup,
            docker,
            sockets,
            wake,
            shutdown,
            agent,
            _dir: dir,
        }
    }

    /// `GET path` on the status API: the body.
    async fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.api)
            .await
            .expect("connect to the API");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// The state the API shows for `name` (`None`: not managed).
    async fn state(&self, name: &str) -> Option<String> {
        let body = self.get(&format!("/api/services/{name}")).await;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["state"].as_str().map(str::to_owned)
    }

    /// Waits (on the paused clock) until `check` holds.
    async fn until(&self, what: &str, mut check: impl AsyncFnMut(&Self) -> bool) {
        for _ in 0..2000 {
            if check(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn until_state(&self, name: &str, state: &str) {
        let wanted = Some(state.to_owned());
        self.until(&format!("{name} {state}"), async |h| {
            h.state(name).await == wanted
        })
        .await;
    }

    fn steered(&self) -> Vec<(HostPort, u32)> {
        let mut steered: Vec<_> = self
            .kernel
            .maps()
            .steered
            .iter()
            .map(|(b, id)| (*b, *id))
            .collect();
        steered.sort_unstable();
        steered
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let outcome = self.agent.await.expect("agent task");
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(
            self.warmup.0.lock().expect("fake").removed,
            "the warm-up redirect is removed at shutdown"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_wakes_a_service_reports_it_ready_on_the_stock_path_and_stops_it_idle() {
    let h = Harness::start(&service("web", 18080, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    // Adopted stopped: its published port is steered to the agent.
    h.until("the port steered", async |h| {
        h.steered() == [(HostPort::any(18080), 0)]
    })
    .await;
    assert!(h.docker.running.lock().expect("fake").is_empty());

    // The first SYN's wake event starts it.
    h.wake.send(wake(0, 18080)).expect("wake");
    h.until_state("web", "ready").await;
    // Ready means the stock path: not steered, not warming, running.
    assert_eq!(h.steered(), []);
    assert!(h.warmup.0.lock().expect("fake").warming.is_empty());
    assert_eq!(*h.docker.calls.lock().expect("fake"), ["+web"]);
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("autostop_wake_events_total{service=\"web\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("autostop_starts_total{service=\"web\",trigger=\"syn\"} 1"));

    // No traffic for the idle timeout: stopped, and steered again.
    h.until_state("web", "stopped").await;
    assert_eq!(*h.docker.calls.lock().expect("fake"), ["+web", "-web"]);
    assert_eq!(h.steered(), [(HostPort::any(18080), 0)]);
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("autostop_stops_total{service=\"web\",reason=\"idle\"} 1"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reused_kernel_index_inherits_nothing_from_the_service_that_had_it() {
    // One kernel slot: the second service can only get the first's index.
    let h = Harness::start(&service("a", 18081, "1h"), &["a"], 1).await;
    h.until_state("a", "ready").await;
    let a_target = Target {
        addr: "10.0.0.3:18081".parse().expect("address"),
        protocol: Protocol::Tcp,
    };
    h.until("a's target counted", async |h| {
        h.kernel.maps().targets.get(&a_target) == Some(&0)
    })
    .await;
    {
        let mut maps = h.kernel.maps();
        maps.activity.insert(
            0,
            autostop_common::Activity {
                packets: 5,
                bytes: 500,
                last_seen_ns: 1,
            },
        );
        // A stale entry only the clear can find.
        maps.steered.insert(HostPort::any(9999), 0);
    }
    assert!(h.get("/metrics").await.contains("service=\"a\""));

    // A reload replaces a with b.
    let dir = h.config_path.parent().expect("dir").to_owned();
    std::fs::write(
        &h.config_path,
        config_text(h.api, &dir.join("state"), &service("b", 18082, "1h")),
    )
    .expect("new config");
    h.until_state("b", "stopped").await;
    assert_eq!(h.state("a").await, None, "a is no longer managed");
    {
        let maps = h.kernel.maps();
        assert!(
            maps.cleared.contains(&("steering", 0)),
            "{:?}",
            maps.cleared
        );
        assert!(
            maps.cleared.contains(&("counters", 0)),
            "{:?}",
            maps.cleared
        );
        assert!(
            maps.targets.is_empty(),
            "a's targets are gone: {:?}",
            maps.targets
        );
        assert_eq!(
            maps.activity.get(&0).copied().unwrap_or_default().packets,
            0
        );
    }
    h.until("b steered under index 0", async |h| {
        h.steered() == [(HostPort::any(18082), 0)]
    })
    .await;
    let metrics = h.get("/metrics").await;
    assert!(!metrics.contains("service=\"a\""), "{metrics}");
    h.stop().await;
}

/// Services as a label scan would describe them.
fn labelled(services: &[(&str, u16)]) -> Vec<ServiceConfig> {
    let text: String = services
        .iter()
        .map(|(name, port)| service(name, *port, "1h"))
        .collect();
    Config::parse(&text, "labels", &ThemeCatalog::builtin())
        .expect("valid services")
        .services
}

#[tokio::test(start_paused = true)]
async fn labelled_services_beyond_max_services_are_refused_with_a_problem() {
    let h = Harness::start_with(
        "max_services = 2\n",
        &service("a", 18090, "1h"),
        &[],
        8,
        labelled(&[("l1", 18091), ("l2", 18092)]),
        |_| {},
    )
    .await;
    h.until_state("a", "stopped").await;
    h.until_state("l1", "stopped").await;
    assert_eq!(h.state("l2").await, None, "l2 is over the limit");
    let problems = h.get("/api/problems").await;
    assert!(
        problems.contains("l2") && problems.contains("agent.max_services (2)"),
        "{problems}"
    );
    assert!(!problems.contains("l1"), "{problems}");
    h.stop().await;
}
