//! Privileged: drives real containers and compose projects through the
//! agent's Docker runtime (`autostop::docker`): lifecycle, readiness at the
//! container address, dependency order, healthy dependencies, one-shot
//! containers, the event stream, and a measurement of the neighbour-entry
//! fast path.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autostop::config::ServiceConfig;
use autostop::docker::{
    spawn_event_watcher, DockerClient, DockerRuntime, EventSink, NetworkEvent, NetworkSink,
    EVENT_BACKOFF_MAX,
};
use autostop::service::{Command, ContainerEvent, ContainerRuntime, Observed};
use autostop_tests::docker::{
    compose_service, containers_service, docker, free_port, inspect, inspect_time, require_docker,
    unique, ComposeProject, DockerRelay, TestContainer, TestImage, TestNetwork,
};
use autostop_tests::require_root_and_bpf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bound on start + readiness in these tests.
const READY: Duration = Duration::from_secs(60);

fn setup() {
    require_root_and_bpf();
    require_docker();
}

async fn runtime(services: &[ServiceConfig]) -> Arc<DockerRuntime> {
    let client = DockerClient::connect().await.expect("connecting to Docker");
    Arc::new(DockerRuntime::new(client, services))
}

async fn start_ready(rt: &DockerRuntime, svc: &str) {
    tokio::time::timeout(READY, async {
        rt.start(svc).await.expect("start");
        rt.wait_ready(svc).await.expect("wait_ready");
    })
    .await
    .expect("ready within the bound");
}

fn httpd(image: &TestImage, name: &str, port: u16) -> TestContainer {
    let publish = format!("{port}:80");
    TestContainer::create(
        name,
        &["-p", &publish],
        &image.tag,
        &["/bin/busybox", "httpd", "-f", "-p", "80"],
    )
}

fn container_addr(name: &str) -> SocketAddr {
    let ip: IpAddr = inspect(
        name,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    )
    .parse()
    .expect("container IP");
    SocketAddr::new(ip, 80)
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_named_container_lifecycle() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("autostop-web-");
    let _c = httpd(&image, &name, port);
    let rt = runtime(&[containers_service("web", port, &[&name])]).await;

    assert_eq!(rt.observe("web").await.unwrap(), Observed::AllStopped);
    start_ready(&rt, "web").await;
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
    assert_eq!(rt.observe("web").await.unwrap(), Observed::AllRunning);
    TcpStream::connect_timeout(&container_addr(&name), Duration::from_secs(2))
        .expect("the container port accepts after wait_ready");

    let eps = rt.endpoints("web").await.expect("endpoints");
    assert_eq!(eps.endpoints.len(), 1);
    let ep = &eps.endpoints[0];
    assert_eq!(ep.container_port, 80);
    assert_eq!(ep.published.port, port);
    assert_eq!(ep.ip, Some(container_addr(&name).ip()));
    assert_eq!(ep.bridge.as_deref(), Some("docker0"));
    assert_eq!(eps.bridges, vec!["docker0".to_string()]);

    rt.stop("web").await.expect("stop");
    assert_eq!(inspect(&name, "{{.State.Running}}"), "false");
    assert_eq!(rt.observe("web").await.unwrap(), Observed::AllStopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_missing_container_is_not_found() {
    setup();
    let name = unique("autostop-missing-");
    let rt = runtime(&[containers_service("ghost", free_port(), &[&name])]).await;
    let err = rt.start("ghost").await.expect_err("no such container");
    let msg = err.to_string();
    assert!(
        matches!(err, autostop::service::ServiceError::NotFound(_)),
        "{err:?}"
    );
    assert!(msg.contains("ghost") && msg.contains(&name), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_wait_ready_waits_for_late_listener() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("autostop-late-");
    let publish = format!("{port}:80");
    let _c = TestContainer::create(
        &name,
        &["-p", &publish],
        &image.tag,
        &["/bin/sh", "-c", "sleep 2; exec /bin/busybox httpd -f -p 80"],
    );
    let rt = runtime(&[containers_service("late", port, &[&name])]).await;
    let t0 = Instant::now();
    start_ready(&rt, "late").await;
    let elapsed = t0.elapsed();
    TcpStream::connect_timeout(&container_addr(&name), Duration::from_secs(2))
        .expect("listening once wait_ready returned");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "wait_ready returned after {elapsed:?}, before the app listened (2 s)"
    );
    rt.stop("late").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_compose_starts_in_dependency_order() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let yaml = format!(
        r#"version: "2.4"
services:
  web:
    image: {tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "80"]
    ports: ["{port}:80"]
    stop_grace_period: 1s
    depends_on: [db]
  db:
    image: {tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "5432"]
    stop_grace_period: 1s
"#,
        tag = image.tag
    );
    let project = ComposeProject::create(&yaml);
    let (web, db) = (project.container("web"), project.container("db"));
    let rt = runtime(&[compose_service("app", port, &project.path())]).await;

    assert_eq!(rt.observe("app").await.unwrap(), Observed::AllStopped);
    start_ready(&rt, "app").await;
    assert_eq!(rt.observe("app").await.unwrap(), Observed::AllRunning);
    let (db_start, web_start) = (
        inspect_time(&db, ".State.StartedAt"),
        inspect_time(&web, ".State.StartedAt"),
    );
    assert!(
        db_start < web_start,
        "db {db_start:?} must start before web {web_start:?}"
    );

    let eps = rt.endpoints("app").await.expect("endpoints");
    let bridge = eps.endpoints[0]
        .bridge
        .clone()
        .expect("bridge of the project network");
    assert!(bridge.starts_with("br-") && bridge.len() == 15, "{bridge}");

    rt.stop("app").await.expect("stop");
    assert_eq!(rt.observe("app").await.unwrap(), Observed::AllStopped);
    let (db_end, web_end) = (
        inspect_time(&db, ".State.FinishedAt"),
        inspect_time(&web, ".State.FinishedAt"),
    );
    assert!(
        web_end < db_end,
        "web {web_end:?} must stop before db {db_end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_healthy_dependency_is_healthy_before_dependent_starts() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    // db becomes healthy only after its marker file exists (1.5 s in).
    let yaml = format!(
        r#"version: "2.4"
services:
  db:
    image: {tag}
    command: ["/bin/sh", "-c", "/bin/busybox sleep 1.5; /bin/busybox touch /ok; exec /bin/busybox httpd -f -p 5432"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "/bin/busybox", "test", "-f", "/ok"]
      interval: 200ms
      timeout: 1s
      retries: 50
  web:
    image: {tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "80"]
    ports: ["{port}:80"]
    stop_grace_period: 1s
    depends_on:
      db:
        condition: service_healthy
"#,
        tag = image.tag
    );
    let project = ComposeProject::create(&yaml);
    let (web, db) = (project.container("web"), project.container("db"));
    let rt = runtime(&[compose_service("app", port, &project.path())]).await;
    start_ready(&rt, "app").await;
    assert_eq!(inspect(&db, "{{.State.Health.Status}}"), "healthy");
    let db_start = inspect_time(&db, ".State.StartedAt");
    let web_start = inspect_time(&web, ".State.StartedAt");
    let gap = web_start
        .duration_since(db_start)
        .expect("web started after db");
    assert!(
        gap >= Duration::from_millis(1500),
        "web started {gap:?} after db, before db could be healthy (1.5 s)"
    );
    rt.stop("app").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_oneshot_exit_zero_is_completed() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let job = unique("autostop-job-");
    let web = unique("autostop-web-");
    let _j = TestContainer::create(&job, &[], &image.tag, &["/bin/busybox", "true"]);
    let _w = httpd(&image, &web, port);
    let rt = runtime(&[containers_service("app", port, &[&job, &web])]).await;
    start_ready(&rt, "app").await;
    assert_eq!(
        inspect(&job, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    let first_run = inspect(&job, "{{.State.StartedAt}}");
    assert_eq!(rt.observe("app").await.unwrap(), Observed::AllRunning);
    // wait_ready again (as an adoption would) neither fails nor reruns it.
    tokio::time::timeout(READY, rt.wait_ready("app"))
        .await
        .expect("bounded")
        .expect("still ready");
    assert_eq!(inspect(&job, "{{.State.StartedAt}}"), first_run);
    rt.stop("app").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_compose_completed_dependency_runs_once_then_dependent() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let yaml = format!(
        r#"version: "2.4"
services:
  migrate:
    image: {tag}
    command: ["/bin/sh", "-c", "/bin/busybox sleep 1; exit 0"]
  web:
    image: {tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "80"]
    ports: ["{port}:80"]
    stop_grace_period: 1s
    depends_on:
      migrate:
        condition: service_completed_successfully
"#,
        tag = image.tag
    );
    let project = ComposeProject::create_with(&yaml, &["create"]);
    let (web, migrate) = (project.container("web"), project.container("migrate"));
    let rt = runtime(&[compose_service("app", port, &project.path())]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: EventSink = Arc::new(move |svc: &str, cmd: Command| {
        let _ = tx.send((svc.to_string(), cmd));
    });
    let stop = CancellationToken::new();
    let task = spawn_event_watcher(Arc::clone(&rt), sink, None, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    start_ready(&rt, "app").await;
    assert_eq!(
        inspect(&migrate, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    let finished = inspect_time(&migrate, ".State.FinishedAt");
    let web_start = inspect_time(&web, ".State.StartedAt");
    assert!(
        finished <= web_start,
        "web started before migrate completed"
    );
    assert_eq!(rt.observe("app").await.unwrap(), Observed::AllRunning);
    // The completion is not reported as a death (the actor would fail).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    task.await.expect("watcher ends");
    let mut started = 0;
    while let Ok((svc, cmd)) = rx.try_recv() {
        assert_eq!(svc, "app");
        match cmd {
            Command::ContainerEvent(ContainerEvent::Started) => started += 1,
            other => panic!("unexpected {other:?} while the one-shot completed"),
        }
    }
    assert_eq!(started, 2, "migrate and web each started exactly once");
    rt.stop("app").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_exit_one_during_start_fails_naming_container() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let bad = unique("autostop-bad-");
    let web = unique("autostop-web-");
    let _b = TestContainer::create(&bad, &[], &image.tag, &["/bin/busybox", "false"]);
    let _w = httpd(&image, &web, port);
    let rt = runtime(&[containers_service("app", port, &[&bad, &web])]).await;
    let res = tokio::time::timeout(READY, async {
        rt.start("app").await?;
        rt.wait_ready("app").await
    })
    .await
    .expect("the failure is reported, not waited out");
    let msg = res.expect_err("exit 1 is a failure").to_string();
    assert!(msg.contains(&bad) && msg.contains("code 1"), "{msg}");
    rt.stop("app").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_manual_start_sends_started_event() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("autostop-ev-");
    let _c = httpd(&image, &name, port);
    let rt = runtime(&[containers_service("web", port, &[&name])]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: EventSink = Arc::new(move |svc: &str, cmd: Command| {
        let _ = tx.send((svc.to_string(), cmd));
    });
    let stop = CancellationToken::new();
    let task = spawn_event_watcher(Arc::clone(&rt), sink, None, stop.clone());
    // Let the watcher subscribe before acting.
    tokio::time::sleep(Duration::from_millis(500)).await;

    docker(&["start", &name]);
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("Started event within 1 s")
        .expect("watcher alive");
    assert_eq!(
        got,
        (
            "web".to_string(),
            Command::ContainerEvent(ContainerEvent::Started)
        )
    );
    docker(&["stop", "-t", "1", &name]);
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("Died event")
        .expect("watcher alive");
    assert!(
        matches!(got.1, Command::ContainerEvent(ContainerEvent::Died { .. })),
        "{got:?}"
    );
    stop.cancel();
    task.await.expect("watcher ends on cancel");
}

/// Probes `addr` every 10 ms (100 ms per attempt) for up to 10 s, like a
/// proxy retrying its upstream; returns the time of the first success.
fn spawn_prober(addr: SocketAddr, t0: Instant) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        while t0.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// Not a performance assertion: prints, with and without the permanent
/// neighbour entry, docker start → ready (runtime) and docker start → first
/// connect of a client that already probes the container address while
/// Docker starts it (its first SYN leaves before the veth is bridged: the
/// stall case). Checks both paths reach readiness.
#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_measure_neighbour_pinning() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("autostop-pin-");
    let _c = httpd(&image, &name, port);
    let services = [containers_service("web", port, &[&name])];
    let client = DockerClient::connect().await.expect("connect");
    // Learn the address Docker hands this container.
    let rt = DockerRuntime::new(client.clone(), &services);
    start_ready(&rt, "web").await;
    let mut addr = container_addr(&name);
    rt.stop("web").await.expect("stop");
    for pin in [false, true, false, true, false, true] {
        // Forget the address like a brand-new container would.
        let _ = std::process::Command::new("ip")
            .args(["neigh", "del", &addr.ip().to_string(), "dev", "docker0"])
            .output();
        let rt = DockerRuntime::new(client.clone(), &services).with_neighbour_pinning(pin);
        let t0 = Instant::now();
        let prober = spawn_prober(addr, t0);
        start_ready(&rt, "web").await;
        let ready = t0.elapsed();
        let first = prober.join().expect("prober thread");
        eprintln!(
            "MEASURE neighbour_pinning={pin} start_to_ready_ms={} concurrent_client_first_connect_ms={:?}",
            ready.as_millis(),
            first.map(|d| d.as_millis())
        );
        addr = container_addr(&name);
        rt.stop("web").await.expect("stop");
    }
}

/// Next command for `svc` within `within`, skipping other services' ones.
async fn next_for(
    rx: &mut mpsc::UnboundedReceiver<(String, Command)>,
    within: Duration,
) -> Command {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no command within {within:?}"))
        .expect("watcher alive")
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_docker_events_report_daemon_loss_and_return() {
    setup();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("autostop-relay-");
    let _c = httpd(&image, &name, port);
    let mut relay = DockerRelay::new();
    let socket = format!("unix://{}", relay.path.display());
    let client = DockerClient::lazy(&socket);
    let rt = Arc::new(DockerRuntime::new(
        client,
        &[containers_service("web", port, &[&name])],
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: EventSink = Arc::new(move |svc: &str, cmd: Command| {
        let _ = tx.send((svc.to_string(), cmd));
    });
    let (ntx, mut nrx) = mpsc::unbounded_channel();
    let nets: NetworkSink = Arc::new(move |ev: NetworkEvent| {
        let _ = ntx.send(ev);
    });
    let stop = CancellationToken::new();
    let task = spawn_event_watcher(Arc::clone(&rt), sink, Some(nets), stop.clone());

    // Daemon "down" from the start.
    assert_eq!(
        next_for(&mut rx, Duration::from_secs(3)).await,
        Command::DockerUnreachable
    );
    relay.up();
    let back = EVENT_BACKOFF_MAX + Duration::from_secs(3);
    assert_eq!(next_for(&mut rx, back).await, Command::DockerBack);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Events flow through the relay.
    docker(&["start", &name]);
    assert_eq!(
        next_for(&mut rx, Duration::from_secs(1)).await,
        Command::ContainerEvent(ContainerEvent::Started)
    );
    let net = TestNetwork::create(&unique("autostop-net-"));
    let ev = tokio::time::timeout(Duration::from_secs(2), nrx.recv())
        .await
        .expect("network event")
        .expect("watcher alive");
    let want_bridge = format!("br-{}", &net.id[..12]);
    assert_eq!(
        ev,
        NetworkEvent::Created {
            id: net.id.clone(),
            name: net.name.clone(),
            bridge: Some(want_bridge),
        }
    );

    // Loss while following the stream, then return again.
    relay.down();
    assert_eq!(
        next_for(&mut rx, Duration::from_secs(3)).await,
        Command::DockerUnreachable
    );
    relay.up();
    assert_eq!(next_for(&mut rx, back).await, Command::DockerBack);
    stop.cancel();
    task.await.expect("watcher ends on cancel");
    docker(&["stop", "-t", "1", &name]);
}
