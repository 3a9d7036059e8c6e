//! Finds services described by Docker labels and merges them with the
//! config file's (see [`crate::config::labels`]): at start, then every
//! [`SCAN_EVERY`], so a `docker-compose up` of a labelled project is picked
//! up without a reload.

use std::time::Duration;

use crate::{
    config::{
        labels::{merge, services_from_labels, LabelledContainer, LABEL_ENABLE},
        Config, ServiceConfig, ThemeCatalog,
    },
    docker::DockerClient,
};

/// How often labelled containers are listed.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(10);

/// The services Docker labels describe right now (empty while Docker is
/// unreachable: the file's services are managed regardless).
pub(super) async fn discover(client: &DockerClient, file: &Config) -> Vec<ServiceConfig> {
    let containers = match client.list_labelled(LABEL_ENABLE, "true").await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list labelled containers");
            return Vec::new();
        }
    };
    let containers: Vec<LabelledContainer> = containers
        .into_iter()
        .map(|c| LabelledContainer {
            name: c
                .names
                .and_then(|names| names.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_owned())
                .or(c.id)
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default().into_iter().collect(),
        })
        .collect();
    let themes = ThemeCatalog::with_user_dir(&file.agent.themes_dir)
        .unwrap_or_else(|_| ThemeCatalog::builtin());
    let (services, problems) = services_from_labels(&containers, &themes);
    for problem in problems {
        tracing::warn!(event = "label_rejected", "{problem}");
    }
    services
}

/// The file's config plus the labelled services it does not override.
pub(super) fn effective(file: &Config, labelled: &[ServiceConfig]) -> Config {
    let (merged, warnings) = merge(file, labelled.to_vec());
    for warning in warnings {
        tracing::warn!(event = "label_conflict", "{warning}");
    }
    merged
}
