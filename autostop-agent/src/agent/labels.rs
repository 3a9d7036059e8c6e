//! Finds services described by Docker labels, checks them
//! ([`crate::config::vetting`]: labels are a request, not an order) and
//! merges the accepted ones with the config file's
//! ([`crate::config::labels`]): at start, then every [`SCAN_EVERY`], so a
//! `docker-compose up` of a labelled project is picked up without a
//! reload. A scan that fails or times out changes nothing: the services
//! labels described before stay managed.

use std::{collections::BTreeSet, time::Duration};

use crate::{
    config::{
        labels::{merge, services_from_labels, LabelledContainer, LABEL_ENABLE},
        vetting::{vet, HostFacts},
        Config, Protocol, ServiceConfig, ThemeCatalog,
    },
    docker::{endpoints, DockerClient, DockerError},
    procnet::{self, ProcnetError},
};

/// How often labelled containers are listed.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(10);
/// A scan that takes longer than this is abandoned (and changes nothing).
const SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a scan gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LabelScanError {
    /// Docker could not list or inspect the labelled containers.
    #[error("listing labelled containers: {0}")]
    Docker(#[from] DockerError),
    /// The host's listening sockets could not be read.
    #[error("reading the host's listening sockets: {0}")]
    Procnet(#[from] ProcnetError),
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

/// The services Docker labels describe right now, checked against the
/// host and the config file `file`.
pub async fn discover(client: &DockerClient, file: &Config) -> Result<LabelScan, LabelScanError> {
    if !file.agent.docker_labels {
        return Ok(LabelScan::default());
    }
    tokio::time::timeout(SCAN_TIMEOUT, scan(client, file))
        .await
        .map_err(|_| LabelScanError::Timeout)?
}

async fn scan(client: &DockerClient, file: &Config) -> Result<LabelScan, LabelScanError> {
    let listed = client.list_labelled(LABEL_ENABLE, "true").await?;
    let mut containers = Vec::new();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        let inspect = match client.inspect(&id).await {
            Ok(inspect) => inspect,
            // Removed between the list and the inspect.
            Err(DockerError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        containers.push(LabelledContainer {
            name: inspect
                .name
                .as_deref()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or(id),
            labels: inspect
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .collect(),
            published: endpoints::all_bindings(&inspect),
            addresses: endpoints::addresses(&inspect),
        });
    }
    let ports: BTreeSet<u16> = containers
        .iter()
        .flat_map(|c| &c.published)
        .filter(|(protocol, _)| *protocol == Protocol::Tcp)
        .map(|(_, bound)| bound.port)
        .collect();
    let listeners = tokio::task::spawn_blocking(move || procnet::host_listeners(&ports))
        .await
        .map_err(|_| LabelScanError::Timeout)??;
    let themes = ThemeCatalog::with_user_dir(&file.agent.themes_dir)
        .unwrap_or_else(|_| ThemeCatalog::builtin());
    let (services, mut refusals) =
        services_from_labels(&containers, &themes, file.agent.status_listen);
    let host = HostFacts {
        file,
        listeners: &listeners,
    };
    let (services, refused) = vet(services, &containers, host);
    refusals.extend(refused);
    Ok(LabelScan { services, refusals })
}

/// The file's config plus the labelled services it does not override.
pub(super) fn effective(file: &Config, labelled: &[ServiceConfig]) -> Config {
    let (merged, warnings) = merge(file, labelled.to_vec());
    for warning in warnings {
        tracing::warn!(event = "label_conflict", "{warning}");
    }
    merged
}
