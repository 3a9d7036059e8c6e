//! The agent's main loop after start: follows the configuration file
//! (SIGHUP or a change: [`super::reload`]) and the Docker labels (a scan
//! shortly after a labelled container is created, removed or renamed or
//! the daemon went away or came back, and a safety resync every
//! [`labels::SCAN_EVERY`]), and applies the difference to the
//! service table. An invalid file (a token file the agent would refuse at
//! start included), or a scan that fails, changes nothing.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{capacity, deps::AgentDocker, labels, reload::diff, table::ServiceTable};
use crate::config::{Config, ServiceConfig};

/// How long a label event waits for others before the rescan (a
/// `docker-compose up` creates its containers in a burst).
const RESCAN_SETTLE: Duration = Duration::from_millis(250);

/// What the loop follows and changes.
pub(super) struct Following<'a> {
    pub table: &'a mut ServiceTable,
    pub docker: &'a dyn AgentDocker,
    pub config_path: &'a Path,
    /// The configuration file as last loaded.
    pub file: Config,
    /// The labelled services the last successful scan accepted.
    pub labelled: Vec<ServiceConfig>,
    /// What the scans learned of stopped labelled containers.
    pub label_cache: labels::LabelCache,
    /// The configuration in force (file and labels, without the services
    /// that could not be added).
    pub current: Config,
    /// Services the last change could not add (retried at the next one).
    pub refused: Vec<String>,
    /// Why the last scan refused labelled services.
    pub label_refusals: Vec<String>,
    /// Services left out by the service limit, or for want of an index.
    pub over_capacity: Vec<String>,
    /// Every refusal above, for the status API.
    pub refusals: watch::Sender<Vec<String>>,
    /// Reload requests.
    pub reloads: mpsc::Receiver<()>,
    /// Labelled containers were created or removed.
    pub rescan: Arc<Notify>,
}

/// Records the labelled services the last scan refused; a new refusal is
/// logged once.
pub(super) fn log_refusals(known: &watch::Sender<Vec<String>>, refusals: Vec<String>) {
    known.send_modify(|known| {
        for refusal in refusals.iter().filter(|r| !known.contains(r)) {
            tracing::warn!(event = "label_rejected", "{refusal}");
        }
        *known = refusals;
    });
}

/// Publishes the label scan's refusals and the services left out for
/// capacity together.
fn publish_refusals(f: &Following<'_>) {
    let mut all = f.label_refusals.clone();
    all.extend(f.over_capacity.iter().cloned());
    log_refusals(&f.refusals, all);
}

/// Follows reloads and label scans until `shutdown`.
pub(super) async fn follow(mut f: Following<'_>, shutdown: &CancellationToken) {
    f.current.services.retain(|s| !f.refused.contains(&s.name));
    f.over_capacity.extend(
        capacity::unindexed(&f.refused)
            .iter()
            .map(ToString::to_string),
    );
    publish_refusals(&f);
    let mut label_scan = tokio::time::interval(labels::SCAN_EVERY);
    label_scan.tick().await;
    loop {
        let new = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = f.reloads.recv() => {
                match load_checked(f.config_path) {
                    Err(e) => {
                        tracing::error!(event = "reload_rejected", "keeping the running config:\n{e}");
                        continue;
                    }
                    Ok(new_file) => {
                        f.file = new_file;
                        labels::effective(&f.file, &f.labelled)
                    }
                }
            }
            _ = label_scan.tick() => match scan(&mut f, shutdown).await {
                Some(new) => new,
                None => continue,
            },
            () = f.rescan.notified() => {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RESCAN_SETTLE) => {}
                }
                match scan(&mut f, shutdown).await {
                    Some(new) => new,
                    None => continue,
                }
            }
        };
        let (new, left_out) = capacity::within(new, f.file.services.len(), &f.current);
        let changes = diff(&f.current, &new);
        if changes.is_empty() {
            f.over_capacity = left_out
                .iter()
                .chain(&capacity::unindexed(&f.refused))
                .map(ToString::to_string)
                .collect();
            publish_refusals(&f);
            tracing::info!(event = "reload", "no change");
            continue;
        }
        // Docker knows the new services before their state machines ask
        // about them, and the departing ones until they are gone.
        let mut known = new.services.clone();
        known.extend(
            f.current
                .services
                .iter()
                .filter(|s| new.service(&s.name).is_none())
                .cloned(),
        );
        f.docker.set_services(&known);
        f.refused = f.table.apply(&f.current, &new, &changes).await;
        f.current = new;
        f.current.services.retain(|s| !f.refused.contains(&s.name));
        f.docker.set_services(&f.current.services);
        f.over_capacity = left_out
            .iter()
            .chain(&capacity::unindexed(&f.refused))
            .map(ToString::to_string)
            .collect();
        publish_refusals(&f);
    }
}

/// The configuration file, refused like at start when its token file is
/// not the agent's (the token in force stays the one read at start).
fn load_checked(path: &Path) -> Result<Config, String> {
    let config = Config::load_with_own_themes(path).map_err(|e| e.to_string())?;
    crate::api::load_token(
        config.agent.status_listen,
        config.agent.token_file.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    Ok(config)
}

/// Scans the labels; the new effective config when something changed (or
/// a service is waiting to be added again).
async fn scan(f: &mut Following<'_>, shutdown: &CancellationToken) -> Option<Config> {
    let scan = tokio::select! {
        () = shutdown.cancelled() => return None,
        scan = f.docker.scan_labels(&f.file, &mut f.label_cache) => scan,
    };
    let scanned = match scan {
        Ok(scan) => {
            f.label_refusals = scan.refusals;
            publish_refusals(f);
            scan.services
        }
        Err(e) => {
            tracing::warn!(error = %e, kept = f.labelled.len(), "label scan failed; the labelled services stay as they are");
            return None;
        }
    };
    if scanned == f.labelled && f.refused.is_empty() {
        return None;
    }
    f.labelled = scanned;
    Some(labels::effective(&f.file, &f.labelled))
}
