//! [`run_with`]: the agent over its dependencies. Starts the tasks that
//! own each part (the state file's owner, the steering worker, the
//! endpoint refresher, the memory task), adds every service, serves the
//! cold-start listener, wake events, Docker events, the status API and
//! systemd notifications, then follows reloads and label scans
//! ([`super::config_loop`]) until shutdown, and takes everything down in
//! the order that leaves the kernel as it found it.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    awake::{AwakeObserver, Planner},
    capacity,
    config_loop::{self, Following},
    control::{AgentControl, HealthFlags},
    counters::Refresher,
    deps::{AgentDeps, KernelDeps},
    handing,
    ids::IdPool,
    kernel::KernelActivity,
    labels, liveness,
    memory::MemoryTask,
    observers::{
        alerts::{AlertObserver, Webhook},
        history::HistoryObserver,
        learned::LearnedStarts,
        savings::SavingsObserver,
        timeline::TimelineObserver,
        Fanout,
    },
    port_guard::{Guard, PortGuard},
    progress::StartView,
    registry::Registry,
    reload,
    requires::RequiresRuntime,
    state_owner, steer_worker,
    steering::KernelSteering,
    table::{ServiceTable, TableParts},
    tasks, AgentError,
};
use crate::{
    api,
    coldstart::{self, ColdStart, ColdStartStats},
    metrics::Metrics,
    service::{ActivityProbe, LifecycleObserver, Ports},
    supervisor::{Supervised, Supervisor, TaskBoard},
    waitpage::ThemeSet,
};

/// How long the long-lived tasks get, all together, to end at shutdown
/// before the stragglers are aborted.
const TASK_GRACE: Duration = Duration::from_secs(3);

/// Longest the API and the "running" line wait for the first pass over
/// Docker (each Docker call has its own timeout well below it).
const FIRST_DOCKER_CHECK: Duration = Duration::from_secs(15);

/// Runs the agent over `deps` until `shutdown` is cancelled (by a signal,
/// or by the supervisor when a task fails; then the result is
/// [`AgentError::Fatal`], after the same clean-up).
pub async fn run_with(deps: AgentDeps, shutdown: CancellationToken) -> Result<(), AgentError> {
    let AgentDeps {
        config_path,
        config: file_config,
        api_listener,
        token,
        alerts,
        state,
        steered,
        kernel,
        warmup,
        docker,
        clock,
        sockets,
        handover,
    } = deps;
    let super::handing::HandoverDeps {
        control: control_setup,
        taken: mut taken_over,
    } = handover;
    let KernelDeps {
        counting,
        activity,
        steering: steer_maps,
        sources,
        wake,
        log: kernel_log,
        capacity,
    } = kernel;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthFlags::default());
    health.datapath_attached.store(true, Ordering::Relaxed);
    let supervisor = Supervisor::new(shutdown.clone(), TaskBoard::default());
    let mut background: Vec<Supervised> = Vec::new();
    // First, so the kernel's lines about what follows are read.
    if let Some(log) = kernel_log {
        background.push(supervisor.spawn("kernel-log", log.run(shutdown.clone())));
    }

    // The owners: the state file, the steering maps, the classifier.
    let closing = CancellationToken::new();
    let (state, state_task) = state_owner::start(state, closing.clone());
    let state_task = supervisor.spawn("state", state_task);
    docker.set_limit_journal(Arc::new(state.clone()));
    let (registry, directory, routes) = Registry::new();
    let (steering, requests) = KernelSteering::channel();
    let steering_task =
        supervisor.spawn("steering", steer_worker::run(requests, steer_maps, warmup));
    let (guard, guard_requests) = PortGuard::channel();
    let settle = (guard.clone(), steering.clone());
    background.push(
        supervisor.spawn(
            "port-guard",
            Guard {
                sockets,
                steering: steering.clone(),
                directory: directory.clone(),
            }
            .run(guard_requests, shutdown.clone()),
        ),
    );
    let (kept, classifier) = tokio::sync::oneshot::channel();
    let (counters, refresher) = Refresher {
        docker: Arc::clone(&docker),
        kernel: counting,
        directory: directory.clone(),
        guard: guard.clone(),
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
    }
    .start(kept, shutdown.clone());
    background.push(supervisor.spawn("refresher", refresher));

    // Who hears the lifecycle steps.
    let (savings, savings_rx) = mpsc::unbounded_channel();
    let (awake, awake_rx) = mpsc::unbounded_channel();
    let (events, event_hub, events_task) = crate::events::start(shutdown.clone());
    background.push(supervisor.spawn("events", events_task));
    let mut observers: Vec<Arc<dyn LifecycleObserver>> = vec![
        Arc::clone(&metrics) as Arc<dyn LifecycleObserver>,
        Arc::new(HistoryObserver::new(directory.clone())),
        Arc::new(LearnedStarts::new(state.clone())),
        Arc::new(TimelineObserver::new(state.clone())),
        Arc::new(SavingsObserver::new(savings)),
        Arc::new(AwakeObserver::new(awake)),
        Arc::new(events.clone()),
    ];
    if let Some(delivery) = alerts {
        tracing::info!(endpoint = %delivery.endpoint(), "alerts go to the webhook");
        let (webhook, task) = Webhook::start(delivery, &supervisor, shutdown.clone());
        background.push(task);
        observers.push(Arc::new(AlertObserver::new(Arc::new(webhook))));
    }
    let memory = MemoryTask::new(
        Arc::clone(&docker) as _,
        directory.clone(),
        state.clone(),
        Arc::clone(&metrics),
    );
    background.push(supervisor.spawn("memory", memory.run(savings_rx, shutdown.clone())));

    // The services: the file's, and those Docker labels describe.
    let (refusals, refusals_rx) = watch::channel(Vec::new());
    let mut label_cache = labels::LabelCache::default();
    let (labelled, label_refusals) = match docker.scan_labels(&file_config, &mut label_cache).await
    {
        Ok(scan) => (scan.services, scan.refusals),
        Err(e) => {
            tracing::warn!(error = %e, "no services from Docker labels yet; the next scan retries");
            (Vec::new(), Vec::new())
        }
    };
    let (config, left_out) = capacity::within(
        labels::effective(&file_config, &labelled),
        file_config.services.len(),
        &file_config,
    );
    docker.set_services(&config.services);
    let (ignored, ignored_rx) = watch::channel(config.agent.ignore_sources.clone());
    let probe: Arc<dyn ActivityProbe> = Arc::new(KernelActivity::new(activity, directory.clone()));
    let ports = Ports {
        runtime: Arc::new(RequiresRuntime::new(
            Arc::clone(&docker) as _,
            directory.clone(),
        )),
        steering: Arc::new(steering.clone()),
        probe: Arc::clone(&probe),
        observer: Arc::new(Fanout::new(observers)),
    };
    let mut table = ServiceTable::new(TableParts {
        registry,
        ids: IdPool::new(capacity),
        ports,
        steering,
        guard: guard.clone(),
        counters: counters.clone(),
        docker: Arc::clone(&docker),
        state: state.clone(),
        metrics: Arc::clone(&metrics),
        sources,
        ignored,
        shutdown: shutdown.clone(),
        supervisor: supervisor.clone(),
        events: events.clone(),
    });
    if let Some(taken) = &taken_over {
        table.resume(handing::resumed(taken));
    }
    let refused = table.add_all(&config.services).await;
    table.resume(Vec::new());
    // One full pass now: every service's bindings and counters, and
    // whether Docker answers (`/healthz`); later passes follow events,
    // plus a slow resync.
    counters.refresh();
    state.send(state_owner::StateUpdate::Settled);
    let planner = Planner {
        directory: directory.clone(),
        state: state.clone(),
        metrics: Arc::clone(&metrics),
        tz: clock.time_zone(),
        clock,
    };
    background.push(supervisor.spawn("keep-awake", planner.run(awake_rx, shutdown.clone())));

    let (themes, problems) = ThemeSet::load(Some(&config.agent.themes_dir));
    for problem in problems {
        tracing::warn!(
            "theme {}: {} (falling back to a built-in theme)",
            problem.theme,
            problem.error
        );
    }
    let (handoff, mut handoff_take) = coldstart::Handoff::channel();
    let passed = taken_over
        .as_mut()
        .map(|taken| std::mem::take(&mut taken.passed))
        .unwrap_or_default();
    let coldstart = Arc::new(ColdStart {
        routes,
        upstreams: Arc::new(StartView::new(Arc::clone(&docker), directory.clone())),
        stats: Arc::new(ColdStartStats::default()),
        themes: Arc::new(themes),
        metrics: Arc::clone(&metrics),
        ignored_sources: ignored_rx,
        owners: Arc::new(guard.clone()),
        handoff,
    });
    background.push(supervisor.spawn(
        "coldstart",
        coldstart::serve(steered, passed, coldstart, shutdown.clone()),
    ));
    background.push(supervisor.spawn(
        "wake-events",
        tasks::wake_loop(
            wake,
            directory.clone(),
            guard,
            Arc::clone(&metrics),
            shutdown.clone(),
        ),
    ));
    let rescan = Arc::new(Notify::new());
    let sinks = tasks::event_sinks(
        directory.clone(),
        Arc::clone(&health),
        counters,
        Arc::clone(&rescan),
    );
    background.push(supervisor.adopt(
        "docker-events",
        docker.watch_events(sinks, shutdown.clone()),
    ));
    let control = AgentControl {
        directory: directory.clone(),
        state: state.clone(),
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
        refusals: refusals_rx,
        tasks: supervisor.board(),
        events: (events.clone(), event_hub),
        activity: probe,
    };
    // The API's first answer and the "running" line say what is true:
    // Docker asked once (bounded: a Docker that hangs is reported by
    // `/healthz` as unreachable, and the agent starts all the same).
    if !health.first_check(FIRST_DOCKER_CHECK).await {
        tracing::warn!(
            waited = ?FIRST_DOCKER_CHECK,
            "Docker not asked yet; /healthz reports it unreachable until it is"
        );
    }
    // ... and the bindings that pass found are steered (through the port
    // guard), so a client that connects once the agent says it runs is
    // never refused.
    settle.0.settled().await;
    let _ = settle.1.flushed().await;
    // Their mailboxes must not outlive the run: the worker ends when the
    // last sender is gone.
    drop(settle);
    let router = api::router(
        Arc::new(control) as Arc<dyn api::Control>,
        token,
        api::HostPolicy::new(config.agent.status_listen, &config.agent.api_hosts),
    );
    let api_shutdown = shutdown.clone();
    let api_limits = api::ServeLimits {
        max_event_streams: config.agent.max_event_streams as usize,
        ..api::ServeLimits::default()
    };
    background.push(supervisor.spawn("api", async move {
        if let Err(e) = api::serve_with(api_listener, router, api_limits, api_shutdown).await {
            tracing::error!(error = %e, "status API stopped");
        }
    }));
    let (reloads, reload_task) =
        reload::watch(config_path.clone(), shutdown.clone()).map_err(|source| AgentError::Io {
            what: "SIGHUP handler".to_owned(),
            source,
        })?;
    background.push(supervisor.adopt("reload", reload_task));
    background.extend(liveness::spawn_notify(
        &supervisor,
        directory.clone(),
        Arc::clone(&health),
        shutdown.clone(),
    ));
    // A new agent may take over from this one from now on.
    let (point, control_task) =
        handing::serve_control(control_setup, config_path.clone(), &supervisor, &shutdown);
    background.extend(control_task);
    tracing::info!(
        event = "started",
        services = config.services.len(),
        status = %config.agent.status_listen,
        "autostop is running"
    );

    if let Some(taken) = taken_over {
        handing::took_over(taken, directory.clone(), Arc::clone(&health)).await;
    }

    config_loop::follow(
        Following {
            table: &mut table,
            docker: docker.as_ref(),
            config_path: &config_path,
            file: file_config,
            labelled,
            label_cache,
            current: config,
            refused,
            label_refusals,
            over_capacity: left_out.iter().map(ToString::to_string).collect(),
            refusals,
            reloads,
            rescan,
        },
        &shutdown,
    )
    .await;

    // Shutdown: stop accepting, end every task, then undo the kernel state.
    tracing::info!(event = "stopping", "shutting down");
    Supervisor::join_all(background, TASK_GRACE).await;
    let services = handing::snapshot(&directory);
    // The programs stay attached until the warm-up table is gone (an
    // aborted refresher dropped them already).
    let classifier = classifier.await.ok();
    crate::test_hooks::cleanup_hang_point();
    // The actors, the table and the refresher held the steering worker's
    // last mailboxes: it finishes its queue, removes the warm-up table and
    // ends. The state file's owner goes last, after everyone who writes.
    table.shutdown().await;
    // A hibernation's reclaim still under way: cancelled, its limits put
    // back (and its record cleared) while the state owner still runs.
    docker.settle_reclaims(TASK_GRACE).await;
    let mut state_parts = Some((state, state_task));
    // Handing over: this agent's last state write comes before the new
    // agent reads the file, and its programs, steering and warm-up table
    // stay until the new agent runs.
    let handed_over = if point.armed() {
        state_owner::close(&closing, state_parts.take(), TASK_GRACE).await;
        Some(handing::pass(point, &mut handoff_take, services).await)
    } else {
        None
    };
    Supervisor::join_all(vec![steering_task], TASK_GRACE).await;
    drop(classifier);
    state_owner::close(&closing, state_parts.take(), TASK_GRACE).await;
    tracing::info!(
        event = "stopped",
        "autostop stopped; kernel programs detached"
    );
    match handed_over {
        Some(outcome) => {
            handing::drain(&mut handoff_take).await;
            liveness::outcome(&supervisor).and(handing::outcome(&outcome))
        }
        None => liveness::outcome(&supervisor),
    }
}
