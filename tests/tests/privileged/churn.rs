//! Privileged end to end (issue #14): bounded state under label churn. The
//! agent runs with `docker_labels = true` while 2,000 labelled containers
//! with generated names are created and removed, in batches it sees come
//! and go (each batch managed, then unmanaged). That is more names than the
//! kernel has service slots (1,024), so indexes are reused: the last
//! labelled service is still steered (under a reused index), woken by a
//! client and counted. The agent's RSS and `state.json` stay bounded: a
//! few services of every batch get a run-time idle timeout (an entry in
//! the state file each), and the file keeps those of the 32 that departed
//! last. The measured figures are printed.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{
        http_get, httpd_script, local, setup, steered_any, AgentConfig, AppletImage, RunningAgent,
    },
    agent_binary,
    docker::{free_port, unique, TestContainer},
    eventually,
};

/// Labelled containers created and removed in all.
const CYCLES: usize = 2_000;
/// How many exist at once (each batch is created, managed, removed).
const BATCH: usize = 200;
/// Docker API calls in flight at once.
const WORKERS: usize = 4;
/// Services of each batch given a run-time idle timeout.
const TIMEOUTS_PER_BATCH: usize = 5;
/// The kernel's service slots (`autostop_common::MAX_SERVICES`).
const SLOTS: u32 = autostop_common::MAX_SERVICES;
/// Departed names whose state the file keeps (`agent::DEPARTED_KEPT`).
const DEPARTED_KEPT: usize = 32;

/// Docker's API over its socket: thousands of creations and removals
/// through the CLI would cost a process each.
struct Api {
    docker: bollard::Docker,
    runtime: tokio::runtime::Runtime,
}

/// Labelled containers this test made; removed on drop (a failing test
/// leaves none behind).
struct Batch<'a> {
    api: &'a Api,
    names: Vec<String>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let failures = self.api.remove_all(&std::mem::take(&mut self.names));
        if !failures.is_empty() && !std::thread::panicking() {
            panic!("removing the batch: {failures:?}");
        }
    }
}

impl Api {
    fn connect() -> Self {
        let version = bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let docker = bollard::Docker::connect_with_unix("/var/run/docker.sock", 120, &version)
            .expect("connecting to Docker");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for Docker calls");
        Self { docker, runtime }
    }

    /// Creates labelled containers `names`, one port each, [`WORKERS`] at
    /// a time.
    fn create_all<'a>(&'a self, image: &AppletImage, names: &[String], ports: &[u16]) -> Batch<'a> {
        let batch = Batch {
            api: self,
            names: names.to_vec(),
        };
        let jobs = names.iter().cloned().zip(ports.iter().copied());
        let failures = self.each(jobs, |docker, (name, port)| {
            let image = image.tag.clone();
            async move {
                let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(&name)
                    .build();
                let binding = bollard::models::PortBinding {
                    host_ip: None,
                    host_port: Some(port.to_string()),
                };
                let body = bollard::models::ContainerCreateBody {
                    image: Some(image),
                    cmd: Some(vec!["sh".into(), "-c".into(), "sleep 3600".into()]),
                    labels: Some(HashMap::from([
                        ("autostop.enable".to_owned(), "true".to_owned()),
                        ("autostop.port".to_owned(), port.to_string()),
                    ])),
                    exposed_ports: Some(vec!["80/tcp".to_owned()]),
                    host_config: Some(bollard::models::HostConfig {
                        port_bindings: Some(HashMap::from([(
                            "80/tcp".to_owned(),
                            Some(vec![binding]),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                docker
                    .create_container(Some(options), body)
                    .await
                    .map(drop)
                    .map_err(|e| format!("creating {name}: {e}"))
            }
        });
        assert!(failures.is_empty(), "creating the batch: {failures:?}");
        batch
    }

    /// Removes containers `names` (forcibly), [`WORKERS`] at a time; the
    /// failures.
    fn remove_all(&self, names: &[String]) -> Vec<String> {
        self.each(names.iter().cloned(), |docker, name| async move {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .build();
            match docker.remove_container(&name, Some(options)).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                Err(e) => Err(format!("removing {name}: {e}")),
            }
        })
    }

    /// Runs `call` for each job, [`WORKERS`] at a time; the failures.
    fn each<J, F, Fut>(&self, jobs: impl Iterator<Item = J>, call: F) -> Vec<String>
    where
        F: Fn(bollard::Docker, J) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(WORKERS));
        self.runtime.block_on(async {
            let mut running = tokio::task::JoinSet::new();
            for job in jobs {
                let permit = std::sync::Arc::clone(&limit)
                    .acquire_owned()
                    .await
                    .expect("semaphore");
                let call = call(self.docker.clone(), job);
                running.spawn(async move {
                    let _permit = permit;
                    call.await
                });
            }
            let mut failures = Vec::new();
            while let Some(done) = running.join_next().await {
                if let Err(e) = done.unwrap_or_else(|e| Err(e.to_string())) {
                    failures.push(e);
                }
            }
            failures
        })
    }
}

/// The names the agent manages now.
fn managed(agent: &RunningAgent) -> Vec<String> {
    agent
        .services()
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's resident set size, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The service index the agent steers each every-address port of `ports`
/// to (`None`: not steered).
fn steered_indexes(pid: i32, ports: &[u16]) -> Vec<Option<u32>> {
    let steered = steered_any(pid);
    ports
        .iter()
        .map(|port| steered.get(port).copied())
        .collect()
}

fn set_timeout(config: &AgentConfig, name: &str) {
    let out = std::process::Command::new(agent_binary())
        .args(["set-timeout", name, "7m", "--config"])
        .arg(&config.path)
        .output()
        .expect("running the CLI");
    assert!(
        out.status.success(),
        "set-timeout {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn privileged_label_churn_reuses_indexes_and_keeps_state_bounded() {
    let image = setup();
    let api = Api::connect();
    let config = AgentConfig::new("");
    config.with_labels("docker_labels = true\n", "");
    let agent = RunningAgent::start(&config);
    let pid = agent.pid();
    let rss_start = rss_kib(pid);
    let ports: Vec<u16> = (0..BATCH).map(|_| free_port()).collect();
    let prefix = unique("churn");
    // How many services each kernel index was steered for.
    let mut names_by_index: BTreeMap<u32, usize> = BTreeMap::new();
    // Services given a run-time idle timeout, in order.
    let mut timed_out: Vec<String> = Vec::new();
    let began = Instant::now();
    for batch in 0..CYCLES / BATCH {
        let names: Vec<String> = (0..BATCH)
            .map(|i| format!("{prefix}-{batch}-{i}"))
            .collect();
        let containers = api.create_all(&image, &names, &ports);
        assert!(
            eventually(Duration::from_secs(60), || {
                let now = managed(&agent);
                names.iter().all(|n| now.contains(n))
            }),
            "batch {batch}: the agent did not manage all {BATCH} labelled containers"
        );
        // Stopped, so steered: each port to its own service's index.
        let mut indexes = Vec::new();
        assert!(
            eventually(Duration::from_secs(30), || {
                indexes = steered_indexes(pid, &ports);
                indexes.iter().all(Option::is_some)
            }),
            "batch {batch}: not every port is steered: {indexes:?}"
        );
        let distinct: std::collections::BTreeSet<_> = indexes.iter().flatten().collect();
        assert_eq!(distinct.len(), BATCH, "batch {batch}: shared indexes");
        for index in indexes.into_iter().flatten() {
            assert!(index < SLOTS, "index {index} beyond the kernel's slots");
            *names_by_index.entry(index).or_default() += 1;
        }
        for name in names.iter().take(TIMEOUTS_PER_BATCH) {
            set_timeout(&config, name);
            timed_out.push(name.clone());
        }
        drop(containers);
        assert!(
            eventually(Duration::from_secs(60), || {
                let now = managed(&agent);
                !names.iter().any(|n| now.contains(n))
            }),
            "batch {batch}: the agent still manages removed containers"
        );
        eprintln!(
            "batch {batch}: {} cycles in {:?}, RSS {} KiB",
            (batch + 1) * BATCH,
            began.elapsed(),
            rss_kib(pid)
        );
    }
    let churn = began.elapsed();
    let rss_end = rss_kib(pid);

    // The last one: a real app, under a reused index.
    let last_port = free_port();
    let last_name = unique("churn-last");
    let _last = TestContainer::create(
        &last_name,
        &[
            "-p",
            &format!("{last_port}:80"),
            "--label",
            "autostop.enable=true",
            "--label",
            &format!("autostop.port={last_port}"),
        ],
        &image.tag,
        &["sh", "-c", &httpd_script("churn-last-ok", 0)],
    );
    assert!(
        eventually(Duration::from_secs(60), || managed(&agent)
            .contains(&last_name)),
        "the last labelled container is not managed"
    );
    agent.wait_state(&last_name, "stopped", Duration::from_secs(30));
    let reused = names_by_index.values().filter(|n| **n > 1).count();
    assert!(reused > 0, "no index was ever reused");
    let mut last_index = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            last_index = steered_indexes(pid, &[last_port])[0];
            last_index.is_some()
        }),
        "port {last_port} of the last service is not steered"
    );
    let last_index = last_index.unwrap_or(SLOTS);
    assert!(
        names_by_index.contains_key(&last_index),
        "the last service's index {last_index} is not a reused one"
    );

    // Woken by a client, then counted.
    let (status, body) = http_get(local(last_port), "/").expect("GET through the agent");
    assert_eq!((status, body.trim()), (200, "churn-last-ok"));
    agent.wait_state(&last_name, "ready", Duration::from_secs(10));
    for _ in 0..5 {
        let _ = http_get(local(last_port), "/");
    }
    assert!(
        eventually(Duration::from_secs(15), || packets(&agent, &last_name) > 0),
        "no packet of the last service was counted"
    );

    // Bounded: the state file and the RSS.
    let state_path = config.dir().join("state").join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap_or_default();
    let remembered: Vec<String> = serde_json::from_str::<serde_json::Value>(&state)
        .ok()
        .and_then(|doc| {
            doc["services"]
                .as_object()
                .map(|s| s.keys().cloned().collect())
        })
        .unwrap_or_default();
    let entries = remembered.len();
    eprintln!(
        "churn: {CYCLES} labelled containers in {churn:?}; {} indexes used, {reused} of them reused; \
         RSS {rss_start} KiB at start, {rss_end} KiB after; state.json {} bytes, {entries} services",
        names_by_index.len(),
        state.len(),
    );
    assert!(
        entries <= DEPARTED_KEPT + 1,
        "state.json remembers {entries} services (at most {DEPARTED_KEPT} departed + the live one)"
    );
    // The most recently departed are the ones kept.
    for name in timed_out.iter().rev().take(DEPARTED_KEPT) {
        assert!(
            remembered.contains(name),
            "{name} was forgotten: {remembered:?}"
        );
    }
    assert!(
        state.len() < 64 * 1024,
        "state.json is {} bytes",
        state.len()
    );
    assert!(
        rss_end < rss_start + 64 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB over {CYCLES} services"
    );
}

/// `autostop_activity_packets_total` of `service`.
fn packets(agent: &RunningAgent, service: &str) -> u64 {
    autostop_tests::agent::metric_sum(
        &agent.metrics(),
        "autostop_activity_packets_total",
        service,
        |_| true,
    )
}
