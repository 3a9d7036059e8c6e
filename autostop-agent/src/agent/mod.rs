//! `autostop run`: the agent itself. Loads the config, loads and attaches
//! the kernel programs, installs the warm-up redirect, adopts every
//! service's real state from Docker and runs, until shutdown:
//!
//! - one state machine per service ([`crate::service`]);
//! - the cold-start listener the kernel steers connections to;
//! - the wake-event loop (first SYN to a stopped service → start);
//! - Docker's event stream (containers started or stopped by hand);
//! - the endpoint refresher (container addresses → kernel counters);
//! - memory sampling and RAM-savings accounting (Docker stats);
//! - the status API, metrics and dashboard;
//! - the config reloader (SIGHUP or file change).
//!
//! On shutdown every task is joined, the netfilter table is deleted and the
//! BPF links are dropped: the kernel is back to its stock behaviour.

mod control;
mod kernel;
mod labels;
mod listeners;
mod liveness;
mod memory;
mod reload;
mod steering;
mod table;
mod tasks;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

pub use control::{FailureSink, ServiceEntry, Services};
pub use kernel::{instant_from_ktime, ConnectionCounter, KernelService, KernelServices};
pub use labels::{discover as discover_labelled, LabelScan, LabelScanError};
pub use listeners::NFT_TABLE_ENV;
pub use memory::{MemoryBook, MemorySource, SAMPLE_EVERY as MEMORY_SAMPLE_EVERY};
pub use reload::{diff, needs_restart, ConfigDiff};

use crate::{
    alerts::{AlertError, Delivery},
    api,
    bpf::{BpfError, Datapath},
    coldstart::{self, ColdStart, ColdStartStats},
    config::{Config, ConfigError},
    docker::{DockerClient, DockerRuntime},
    metrics::Metrics,
    netfilter::{NetfilterError, WarmupRedirect},
    state::{StateError, StateStore},
    supervisor::{Supervised, Supervisor, TaskBoard},
    waitpage::ThemeSet,
};

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The configuration file (also watched for changes).
    pub config_path: PathBuf,
}

/// Why the agent could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid; the message names file, line and field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory is unusable.
    #[error("agent.state_dir: {0}")]
    State(#[from] StateError),
    /// The status API cannot be served as configured.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// The alert webhook cannot be delivered to as configured.
    #[error(transparent)]
    Alerts(#[from] AlertError),
    /// The kernel programs could not be loaded or attached.
    #[error("datapath: {0}")]
    Bpf(#[from] BpfError),
    /// The warm-up redirect table could not be installed.
    #[error("warm-up redirect: {0}")]
    Netfilter(#[from] NetfilterError),
    /// A socket could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// Which socket, by its config field or role.
        what: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A task panicked or ended on its own: the agent cleaned up and stops
    /// with a failure status (see [`crate::supervisor`]).
    #[error("{0}")]
    Fatal(String),
}

/// How long the long-lived tasks get, all together, to end at shutdown
/// before the stragglers are aborted.
const TASK_GRACE: Duration = Duration::from_secs(3);

/// Gives the heap pages freed so far back to the kernel. Loading the
/// kernel programs parses the kernel's BTF (about 5 MB of it, some 30 MB of
/// short-lived allocations); glibc keeps those pages once freed, which was
/// more than half of the settled agent's RSS (27.5 MiB before, measured by
/// `cargo xtask bench agent`).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only returns unused pages of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the agent until `shutdown` is cancelled (by a signal, or by the
/// supervisor when a task fails; then the result is [`AgentError::Fatal`],
/// after the same clean-up).
pub async fn run(options: AgentOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let config = Config::load_with_own_themes(&options.config_path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    crate::test_hooks::announce();
    let token = api::load_token(
        config.agent.status_listen,
        config.agent.token_file.as_deref(),
    )?;
    // Checked before anything is attached: a bad CA file refuses the start.
    let delivery = config
        .agent
        .alert_webhook
        .as_deref()
        .map(|url| Delivery::new(url, config.agent.alert_ca_file.as_deref()))
        .transpose()?;
    let api_listener = tokio::net::TcpListener::bind(config.agent.status_listen)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("agent.status_listen = {}", config.agent.status_listen),
            source,
        })?;
    let (store, note) = StateStore::open(&config.agent.state_dir)?;
    if let Some(note) = note {
        tracing::warn!("{note}");
    }

    // Kernel side: classifier, sk_lookup, listeners, wake events.
    let mut datapath = Datapath::load()?;
    release_freed_heap();
    datapath.attach_steering()?;
    datapath.set_ignored_sources(&config.agent.ignore_sources)?;
    let listeners = listeners::steered_listeners()?;
    for listener in &listeners {
        datapath.register_listener(listener)?;
    }
    let wake_events = datapath.wake_events()?;
    let datapath = Arc::new(Mutex::new(datapath));
    let warmup = Arc::new(WarmupRedirect::install(listeners::warmup_options()).await?);

    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(Mutex::new(store));
    let supervisor = Supervisor::new(shutdown.clone(), TaskBoard::default());
    let mut background: Vec<Supervised> = Vec::new();
    let alerts = match delivery {
        Some(delivery) => {
            tracing::info!(endpoint = %delivery.endpoint(), "alerts go to the webhook");
            let (webhook, task) = tasks::Webhook::start(delivery, &supervisor, shutdown.clone());
            background.push(task);
            Some(Arc::new(webhook) as Arc<dyn FailureSink>)
        }
        None => None,
    };
    let services = Arc::new(Services::new(metrics, state, alerts).with_tasks(supervisor.board()));
    services
        .datapath_attached
        .store(true, std::sync::atomic::Ordering::Relaxed);

    // Lazy: the agent starts (and steers) even while Docker is down.
    let client = DockerClient::lazy(&config.agent.docker_socket.to_string_lossy());
    let file_config = config;
    let mut labelled = match labels::discover(&client, &file_config).await {
        Ok(scan) => {
            services.set_label_refusals(scan.refusals);
            scan.services
        }
        Err(e) => {
            tracing::warn!(error = %e, "no services from Docker labels yet; the next scan retries");
            Vec::new()
        }
    };
    let config = labels::effective(&file_config, &labelled);
    let runtime = Arc::new(DockerRuntime::new(client.clone(), &config.services));
    let stats = Arc::new(ColdStartStats::default());

    let ignored_sources: coldstart::IgnoredSources =
        Arc::new(std::sync::RwLock::new(config.agent.ignore_sources.clone()));
    let mut table = table::ServiceTable::new(table::Deps {
        datapath: Arc::clone(&datapath),
        ignored_sources: Arc::clone(&ignored_sources),
        warmup: Arc::clone(&warmup),
        runtime: Arc::clone(&runtime),
        services: Arc::clone(&services),
        shutdown: shutdown.clone(),
        supervisor: supervisor.clone(),
    });
    table.add_all(&config.services).await;

    let (themes, problems) = ThemeSet::load(Some(&config.agent.themes_dir));
    for problem in problems {
        tracing::warn!(
            "theme {}: {} (falling back to a built-in theme)",
            problem.theme,
            problem.error
        );
    }
    let coldstart = Arc::new(ColdStart {
        routes: table.routes(),
        upstreams: Arc::new(tasks::DockerUpstreams(Arc::clone(&runtime))),
        stats: Arc::clone(&stats),
        themes: Arc::new(themes),
        metrics: Arc::clone(&services.metrics),
        ignored_sources,
    });
    let mut steered = Vec::new();
    for listener in listeners {
        steered.push(
            tokio::net::TcpListener::from_std(listener).map_err(|source| AgentError::Io {
                what: "steered listener".to_owned(),
                source,
            })?,
        );
    }
    background.push(supervisor.spawn(
        "coldstart",
        coldstart::serve(steered, coldstart, shutdown.clone()),
    ));
    background.push(supervisor.spawn(
        "wake-events",
        tasks::wake_loop(
            wake_events,
            table.kernel_services(),
            Arc::clone(&services),
            shutdown.clone(),
        ),
    ));
    background.push(supervisor.adopt(
        "docker-events",
        tasks::docker_events(
            Arc::clone(&runtime),
            Arc::clone(&services),
            table.refresh_signal(),
            shutdown.clone(),
        ),
    ));
    background.push(supervisor.spawn(
        "refresher",
        tasks::refresher(
            tasks::Refresher {
                runtime: Arc::clone(&runtime),
                connections: table.connections(),
                datapath: Arc::clone(&datapath),
                kernel: table.kernel_services(),
                steering: table.steering(),
                services: Arc::clone(&services),
            },
            table.refresh_signal(),
            shutdown.clone(),
        ),
    ));
    background.push(supervisor.spawn(
        "memory",
        memory::run(
            Arc::clone(&runtime) as Arc<dyn memory::MemorySource>,
            Arc::clone(&services),
            shutdown.clone(),
        ),
    ));
    let router = api::router(
        Arc::clone(&services) as Arc<dyn api::Control>,
        token,
        api::HostPolicy::new(config.agent.status_listen, &config.agent.api_hosts),
    );
    let api_shutdown = shutdown.clone();
    background.push(supervisor.spawn("api", async move {
        if let Err(e) = api::serve(api_listener, router, api_shutdown).await {
            tracing::error!(error = %e, "status API stopped");
        }
    }));
    let (mut reloads, reload_task) = reload::watch(options.config_path.clone(), shutdown.clone())
        .map_err(|source| AgentError::Io {
        what: "SIGHUP handler".to_owned(),
        source,
    })?;
    background.push(supervisor.adopt("reload", reload_task));
    background.extend(liveness::spawn_notify(
        &supervisor,
        Arc::clone(&services),
        shutdown.clone(),
    ));
    tracing::info!(
        event = "started",
        services = config.services.len(),
        status = %config.agent.status_listen,
        "autostop is running"
    );

    let mut file_config = file_config;
    let mut current = config;
    let mut label_scan = tokio::time::interval(labels::SCAN_EVERY);
    label_scan.tick().await;
    loop {
        let new = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reloads.recv() => {
                match Config::load_with_own_themes(&options.config_path) {
                    Err(e) => {
                        tracing::error!(event = "reload_rejected", "keeping the running config:\n{e}");
                        continue;
                    }
                    Ok(new_file) => {
                        file_config = new_file;
                        labels::effective(&file_config, &labelled)
                    }
                }
            }
            _ = label_scan.tick() => {
                let scan = tokio::select! {
                    () = shutdown.cancelled() => break,
                    scan = labels::discover(&client, &file_config) => scan,
                };
                let scanned = match scan {
                    Ok(scan) => {
                        services.set_label_refusals(scan.refusals);
                        scan.services
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, kept = labelled.len(), "label scan failed; the labelled services stay as they are");
                        continue;
                    }
                };
                if scanned == labelled {
                    continue;
                }
                labelled = scanned;
                labels::effective(&file_config, &labelled)
            }
        };
        let changes = diff(&current, &new);
        if changes.is_empty() {
            tracing::info!(event = "reload", "no change");
            continue;
        }
        table.apply(&current, &new, &changes).await;
        runtime.set_services(&new.services);
        current = new;
    }

    // Shutdown: stop accepting, end every task, then undo the kernel state.
    tracing::info!(event = "stopping", "shutting down");
    Supervisor::join_all(background, TASK_GRACE).await;
    crate::test_hooks::cleanup_hang_point();
    table.shutdown().await;
    match Arc::try_unwrap(warmup) {
        Ok(warmup) => {
            if let Err(e) = warmup.shutdown().await {
                tracing::error!(error = %e, "removing the warm-up redirect table");
            }
        }
        Err(_) => tracing::error!(
            "warm-up redirect still shared at exit; the kernel deletes its table when the agent exits"
        ),
    }
    drop(datapath);
    tracing::info!(
        event = "stopped",
        "autostop stopped; kernel programs detached"
    );
    liveness::outcome(&supervisor)
}
