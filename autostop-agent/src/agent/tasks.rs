//! Two small adapters between modules: the wake loop (kernel wake events →
//! the right state machine, found by its kernel index in the directory,
//! unless the port guard says another program listens on the port)
//! and the sinks of Docker's event stream (container events → state
//! machines and the endpoint refresher, new networks → the refresher,
//! labelled containers created, removed or renamed, and the daemon lost or
//! back → a label rescan).

use std::sync::{atomic::Ordering, Arc};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    control::HealthFlags, counters::Counters, deps::EventSinks, deps::WakeSource, ids::ServiceId,
    port_guard::PortGuard, registry::DirectoryReader,
};
use crate::{
    docker::NetworkEvent,
    metrics::Metrics,
    service::{Command, Trigger},
};

/// Turns kernel wake events into wakes of the right state machine.
pub(super) async fn wake_loop(
    mut events: Box<dyn WakeSource>,
    directory: DirectoryReader,
    guard: PortGuard,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "reading wake events failed; steered connections still wake services");
                return;
            }
        };
        let snapshot = directory.snapshot();
        let Some(record) = snapshot.by_id(ServiceId(event.service)) else {
            continue;
        };
        // An event sent for a departed service whose index was reused
        // names a port the new one may not have.
        if !record.config.ports.iter().any(|p| p.port == event.port) {
            tracing::debug!(service = %record.name(), port = event.port, "wake event for a port the service does not have");
            continue;
        }
        if event.ignored_source {
            tracing::debug!(service = %record.name(), source = %event.source, "wake from an ignored source");
            continue;
        }
        // Another program listening on the port wins it: no start (the
        // guard un-steers it; the connection is reset by the listener).
        let may_hold = tokio::select! {
            () = shutdown.cancelled() => return,
            may = guard.may_hold(record.name(), None, event.port) => may,
        };
        if !may_hold {
            tracing::debug!(service = %record.name(), port = event.port, "wake for a port another program listens on: ignored");
            continue;
        }
        metrics.wake_event(record.name());
        let _ = record.handle.try_send(Command::Wake {
            trigger: Trigger::Syn,
        });
    }
}

/// Where Docker's events go: container starts and stops to the state
/// machines (and a refresh), daemon loss and return to the health flags
/// and every state machine, new networks to a refresh, labelled
/// containers created, removed or renamed (and the daemon lost or back)
/// to `rescan`.
pub(super) fn event_sinks(
    directory: DirectoryReader,
    health: Arc<HealthFlags>,
    counters: Counters,
    rescan: Arc<Notify>,
) -> EventSinks {
    let refresh = counters.clone();
    let commands = Arc::new(move |name: &str, command: Command| {
        match &command {
            Command::DockerUnreachable => health.docker_reachable.store(false, Ordering::Relaxed),
            Command::DockerBack => health.docker_reachable.store(true, Ordering::Relaxed),
            Command::ContainerEvent(_) => refresh.refresh_one(name),
            _ => {}
        }
        if let Some(record) = directory.get(name) {
            let _ = record.handle.try_send(command);
        }
    });
    let networks = Arc::new(move |event: NetworkEvent| {
        if matches!(event, NetworkEvent::Created { .. }) {
            counters.refresh();
        }
    });
    let labelled = Arc::new(move || rescan.notify_one());
    EventSinks {
        commands,
        networks,
        labelled,
    }
}
