//! Which containers make up a service, resolved afresh at each call
//! (compose may recreate containers): a compose project's containers by its
//! working-dir label, or the configured names. Also reads the project's
//! `depends_on` so callers can order them.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use super::client::DockerClient;
use super::order::{
    config_file_paths, load_compose_depends, parse_depends_label, start_order, DependsOn,
};
use super::DockerError;
use crate::config::{ServiceConfig, Target};

/// Label docker-compose puts on every container of a project.
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// Label listing the compose files of the project.
pub const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
/// Label naming the compose service of a container.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
/// Compose v2's dependency label (`svc:condition:restart,...`).
pub const LABEL_DEPENDS_ON: &str = "com.docker.compose.depends_on";
/// Label marking `docker-compose run` containers, which are not part of
/// the service.
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
/// Label with the replica number, to order replicas.
const LABEL_NUMBER: &str = "com.docker.compose.container-number";

/// One container of a service with its latest inspect.
#[derive(Debug, Clone)]
pub struct Member {
    /// Container id (stable for this container's lifetime).
    pub id: String,
    /// Container name without the leading `/`, for messages.
    pub name: String,
    /// Compose service the container belongs to, if any.
    pub compose_service: Option<String>,
    /// Latest inspect result.
    pub inspect: ContainerInspectResponse,
}

/// A service's containers in start order plus their dependency edges.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Containers, dependencies first.
    pub members: Vec<Member>,
    /// `depends_on` per compose service (empty for container lists).
    pub deps: HashMap<String, Vec<DependsOn>>,
}

/// Coarse run state of a container, as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running and healthy (or without healthcheck).
    Up,
    /// Running, healthcheck still starting (or unhealthy).
    Unhealthy,
    /// Exited with code 0: a completed one-shot.
    Completed,
    /// Exited with this non-zero code.
    Failed(i64),
    /// Created, restarting, paused, ...: not up yet.
    Down,
}

impl Member {
    /// Classifies the latest inspect.
    pub fn run_state(&self) -> RunState {
        let Some(state) = &self.inspect.state else {
            return RunState::Down;
        };
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => {
                let health = state.health.as_ref().and_then(|h| h.status);
                match health {
                    None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => RunState::Up,
                    Some(HealthStatusEnum::HEALTHY) => RunState::Up,
                    Some(_) => RunState::Unhealthy,
                }
            }
            Some(ContainerStateStatusEnum::EXITED) => match state.exit_code.unwrap_or(0) {
                0 => RunState::Completed,
                code => RunState::Failed(code),
            },
            _ => RunState::Down,
        }
    }

    /// When the container last started, if it ever did.
    pub fn started_at(&self) -> Option<SystemTime> {
        let s = self.inspect.state.as_ref()?.started_at.as_deref()?;
        humantime::parse_rfc3339(s).ok()
    }

    /// Re-inspects the container.
    pub async fn refresh(&mut self, client: &DockerClient) -> Result<(), DockerError> {
        self.inspect = client.inspect(&self.id).await?;
        Ok(())
    }
}

fn member(inspect: ContainerInspectResponse, fallback: &str) -> Member {
    let labels = inspect.config.as_ref().and_then(|c| c.labels.as_ref());
    let compose_service = labels.and_then(|l| l.get(LABEL_SERVICE)).cloned();
    Member {
        id: inspect.id.clone().unwrap_or_else(|| fallback.to_string()),
        name: inspect
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| fallback.to_string()),
        compose_service,
        inspect,
    }
}

fn label<'a>(m: &'a Member, key: &str) -> Option<&'a String> {
    m.inspect.config.as_ref()?.labels.as_ref()?.get(key)
}

/// Resolves the containers of `svc`, in start order.
pub async fn resolve(client: &DockerClient, svc: &ServiceConfig) -> Result<Resolved, DockerError> {
    match &svc.target {
        Target::Containers(names) => {
            let mut members = Vec::with_capacity(names.len());
            for n in names {
                let inspect = client.inspect(n).await.map_err(|e| match e {
                    DockerError::NotFound(_) => DockerError::NotFound(format!(
                        "service {}: container {n:?} not found",
                        svc.name
                    )),
                    other => other,
                })?;
                members.push(member(inspect, n));
            }
            Ok(Resolved {
                members,
                deps: HashMap::new(),
            })
        }
        Target::ComposeDir(dir) => resolve_compose(client, &svc.name, dir).await,
    }
}

async fn resolve_compose(
    client: &DockerClient,
    service: &str,
    dir: &Path,
) -> Result<Resolved, DockerError> {
    let wd = dir.display().to_string();
    let wd = if wd.len() > 1 {
        wd.trim_end_matches('/')
    } else {
        &wd
    };
    let listed = client.list_labelled(LABEL_WORKING_DIR, wd).await?;
    let mut members = Vec::new();
    for c in listed {
        let labels = c.labels.clone().unwrap_or_default();
        if labels.get(LABEL_ONEOFF).map(String::as_str) == Some("True") {
            continue;
        }
        let Some(id) = c.id else { continue };
        match client.inspect(&id).await {
            Ok(inspect) => members.push(member(inspect, &id)),
            // Removed between list and inspect: it is not part of it.
            Err(DockerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if members.is_empty() {
        return Err(DockerError::NotFound(format!(
            "service {service}: no containers with label {LABEL_WORKING_DIR}={wd} (run `docker-compose up --no-start` in it?)"
        )));
    }
    let deps = compose_deps(&members, Path::new(wd)).await;
    let mut services: Vec<String> = members
        .iter()
        .filter_map(|m| m.compose_service.clone())
        .collect();
    services.sort();
    services.dedup();
    let order = start_order(&services, &deps)?;
    let rank = |m: &Member| {
        let svc = m
            .compose_service
            .as_ref()
            .and_then(|s| order.iter().position(|o| o == s))
            .unwrap_or(usize::MAX);
        let num: u32 = label(m, LABEL_NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (svc, num, m.name.clone())
    };
    members.sort_by_key(rank);
    Ok(Resolved { members, deps })
}

/// `depends_on` from the v2 label when any container has it, else from the
/// compose files named by the config-files label (read on a blocking
/// thread). A file that cannot be read is a warning, and the project then
/// starts without dependency order.
async fn compose_deps(members: &[Member], working_dir: &Path) -> HashMap<String, Vec<DependsOn>> {
    let mut deps: HashMap<String, Vec<DependsOn>> = HashMap::new();
    let mut labelled = false;
    for m in members {
        if let (Some(svc), Some(l)) = (&m.compose_service, label(m, LABEL_DEPENDS_ON)) {
            labelled = true;
            deps.insert(svc.clone(), parse_depends_label(l));
        }
    }
    if labelled {
        return deps;
    }
    let Some(files) = members.iter().find_map(|m| label(m, LABEL_CONFIG_FILES)) else {
        return deps;
    };
    let paths = config_file_paths(files, working_dir);
    let loaded = tokio::task::spawn_blocking(move || load_compose_depends(&paths)).await;
    match loaded {
        Ok(Ok(deps)) => deps,
        Ok(Err(e)) => {
            tracing::warn!(project = %working_dir.display(), error = %e, "compose file not read; starting without depends_on order");
            deps
        }
        Err(e) => {
            tracing::warn!(project = %working_dir.display(), error = %e, "reading the compose files failed; starting without depends_on order");
            deps
        }
    }
}
