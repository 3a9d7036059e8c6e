//! Finds services described by Docker labels, checks them
//! ([`crate::config::vetting`]: labels are a request, not an order) and
//! merges the accepted ones with the config file's
//! ([`crate::config::labels`]): at start, shortly after Docker's event
//! stream says a labelled container was created, removed or renamed (so a
//! `docker-compose up` of a labelled project is picked up without a
//! reload) or the daemon went away or came back, and every [`SCAN_EVERY`]
//! as a safety resync. A scan that fails or times out changes nothing: the services
//! labels described before stay managed. Containers that do not run are
//! inspected once ([`LabelCache`]), so a scan of many labelled containers
//! costs one list and an inspect of each running one.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use bollard::models::ContainerSummaryStateEnum;

use crate::{
    config::{
        labels::{merge, services_from_labels, LabelledContainer, LABEL_ENABLE},
        vetting::{vet, HostFacts},
        Config, ServiceConfig, ThemeCatalog,
    },
    docker::{endpoints, DockerClient, DockerError},
};

/// How often labelled containers are listed without an event asking for
/// it (a safety resync: the events say when they change).
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(300);
/// A scan that takes longer than this is abandoned (and changes nothing).
const SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a scan gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LabelScanError {
    /// Docker could not list or inspect the labelled containers.
    #[error("listing labelled containers: {0}")]
    Docker(#[from] DockerError),
    /// The scan took longer than [`SCAN_TIMEOUT`].
    #[error("the label scan took longer than {}s", SCAN_TIMEOUT.as_secs())]
    Timeout,
}

/// What one scan found.
#[derive(Debug, Default, PartialEq)]
pub struct LabelScan {
    /// Labelled services the agent may manage.
    pub services: Vec<ServiceConfig>,
    /// One message per labelled group that is not managed, and why.
    pub refusals: Vec<String>,
}

/// What a scan learned of the labelled containers that do not run, by
/// id: a container's labels and port bindings never change, and one that
/// does not run has no live bindings or addresses, so it is inspected once,
/// not at every scan. Only ids the last list showed are kept.
#[derive(Debug, Default)]
pub struct LabelCache {
    stopped: HashMap<String, LabelledContainer>,
}

/// The services Docker labels describe right now, checked against the
/// host and the config file `file`. `cache` carries what earlier scans
/// inspected (a fresh one inspects everything).
pub async fn discover(
    client: &DockerClient,
    file: &Config,
    cache: &mut LabelCache,
) -> Result<LabelScan, LabelScanError> {
    if !file.agent.docker_labels {
        return Ok(LabelScan::default());
    }
    tokio::time::timeout(SCAN_TIMEOUT, scan(client, file, cache))
        .await
        .map_err(|_| LabelScanError::Timeout)?
}

async fn scan(
    client: &DockerClient,
    file: &Config,
    cache: &mut LabelCache,
) -> Result<LabelScan, LabelScanError> {
    let listed = client.list_labelled(LABEL_ENABLE, "true").await?;
    let mut containers: Vec<LabelledContainer> = Vec::new();
    let mut seen = HashSet::new();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        seen.insert(id.clone());
        let running = summary.state == Some(ContainerSummaryStateEnum::RUNNING);
        if let (false, Some(known)) = (running, cache.stopped.get(&id)) {
            let mut container = known.clone();
            // `docker rename` is the one change a stopped container allows.
            if let Some(name) = summary.names.as_ref().and_then(|n| n.first()) {
                container.name = name.trim_start_matches('/').to_owned();
            }
            containers.push(container);
            continue;
        }
        if let Some(container) = inspect(client, &id, cache).await? {
            containers.push(container);
        }
    }
    cache.stopped.retain(|id, _| seen.contains(id));
    let themes = ThemeCatalog::with_user_dir(&file.agent.themes_dir)
        .unwrap_or_else(|_| ThemeCatalog::builtin());
    let (services, mut refusals) =
        services_from_labels(&containers, &themes, file.agent.status_listen);
    let host = HostFacts { file };
    let (services, refused) = vet(services, &containers, host);
    refusals.extend(refused);
    Ok(LabelScan { services, refusals })
}

/// Inspects labelled container `id` (`None`: it is gone), remembering it
/// in `cache` when it does not run.
async fn inspect(
    client: &DockerClient,
    id: &str,
    cache: &mut LabelCache,
) -> Result<Option<LabelledContainer>, LabelScanError> {
    let inspect = match client.inspect(id).await {
        Ok(inspect) => inspect,
        // Removed between the list and the inspect.
        Err(DockerError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let container = LabelledContainer {
        name: inspect
            .name
            .as_deref()
            .map_or_else(|| id.to_owned(), |n| n.trim_start_matches('/').to_owned()),
        labels: inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        published: endpoints::all_bindings(&inspect),
        addresses: endpoints::addresses(&inspect),
    };
    if inspect.state.as_ref().and_then(|s| s.running) == Some(true) {
        cache.stopped.remove(id);
    } else {
        cache.stopped.insert(id.to_owned(), container.clone());
    }
    Ok(Some(container))
}

/// The file's config plus the labelled services it does not override.
pub(super) fn effective(file: &Config, labelled: &[ServiceConfig]) -> Config {
    let (merged, warnings) = merge(file, labelled.to_vec());
    for warning in warnings {
        tracing::warn!(event = "label_conflict", "{warning}");
    }
    merged
}
