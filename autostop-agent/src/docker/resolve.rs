//! Which containers make up a service, resolved afresh at each call
//! (compose may recreate containers): a compose project's containers (those
//! with its working-dir label that Docker's labels say are the project's:
//! see [`super::project`]), or the configured names. Also reads the
//! project's `depends_on` so callers can order them; a cycle in it is a
//! problem, and the project then starts without an order.

// Reads untrusted bytes (labels, /proc, netlink answers): no byte-offset
// slicing of strings, no unchecked indexing, no unchecked arithmetic.
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use super::client::DockerClient;
use super::order::{load_compose_depends, parse_depends_label, start_order, DependsOn};
use super::project::{self, ProjectId};
use super::DockerError;
use crate::config::{ServiceConfig, Target};

pub use super::project::{LABEL_CONFIG_FILES, LABEL_SERVICE, LABEL_WORKING_DIR};
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
    /// `depends_on` per compose service (empty for container lists, and
    /// when it has a cycle).
    pub deps: HashMap<String, Vec<DependsOn>>,
    /// The compose project the members belong to (compose services only).
    pub project: Option<ProjectId>,
    /// What keeps the service from being exactly what it is configured
    /// to be: containers left out of its project, a `depends_on` cycle.
    pub notes: Vec<String>,
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

pub(super) fn member(inspect: ContainerInspectResponse, fallback: &str) -> Member {
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
/// `last` is the compose project the service was resolved to before, if
/// any (kept while its containers exist, see [`super::project`]).
pub async fn resolve(
    client: &DockerClient,
    svc: &ServiceConfig,
    last: Option<&str>,
) -> Result<Resolved, DockerError> {
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
                ..Resolved::default()
            })
        }
        Target::ComposeDir(dir) => resolve_compose(client, &svc.name, dir, last).await,
    }
}

async fn resolve_compose(
    client: &DockerClient,
    service: &str,
    dir: &Path,
    last: Option<&str>,
) -> Result<Resolved, DockerError> {
    let wd = dir.display().to_string();
    let wd = project::trim_dir(&wd);
    let listed = client.list_labelled(LABEL_WORKING_DIR, wd).await?;
    let mut candidates: Vec<(String, String, HashMap<String, String>)> = Vec::new();
    for c in listed {
        let labels = c.labels.unwrap_or_default();
        if labels.get(LABEL_ONEOFF).map(String::as_str) == Some("True") {
            continue;
        }
        let Some(id) = c.id else { continue };
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
        candidates.push((id, name, labels));
    }
    let (chosen, ignored) = project::choose(
        wd,
        last,
        candidates
            .iter()
            .map(|(_, name, labels)| (name.as_str(), labels)),
    );
    let mut notes: Vec<String> = ignored.iter().map(|i| i.message(wd)).collect();
    let mut members = Vec::new();
    if let Some(chosen) = &chosen {
        for (id, _, labels) in &candidates {
            if project::ProjectId::of(labels).is_ok_and(|p| chosen.differs(&p).is_none()) {
                match client.inspect(id).await {
                    Ok(inspect) => members.push(member(inspect, id)),
                    // Removed between list and inspect: it is not part of it.
                    Err(DockerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if members.is_empty() {
        let mut message = format!(
            "service {service}: no containers of a compose project with label {LABEL_WORKING_DIR}={wd} (run `docker-compose up --no-start` in it?)"
        );
        for note in &notes {
            message.push_str("; ");
            message.push_str(note);
        }
        return Err(DockerError::NotFound(message));
    }
    let mut deps = compose_deps(&members, Path::new(wd)).await;
    if let Some(note) = order_members(&mut members, &mut deps) {
        notes.push(note);
    }
    for note in &notes {
        tracing::debug!(service, "{note}");
    }
    Ok(Resolved {
        members,
        deps,
        project: chosen,
        notes,
    })
}

/// Sorts `members` into start order (dependencies first, then replica
/// number, then name). A cycle in `deps` is returned as a problem entry,
/// and the members are then in name order with `deps` emptied: waiting on
/// a dependency that waits on its dependent would never end, so every
/// container starts without order or waits.
pub(super) fn order_members(
    members: &mut [Member],
    deps: &mut HashMap<String, Vec<DependsOn>>,
) -> Option<String> {
    let mut services: Vec<String> = members
        .iter()
        .filter_map(|m| m.compose_service.clone())
        .collect();
    services.sort();
    services.dedup();
    let (order, note) = match start_order(&services, deps) {
        Ok(order) => (order, None),
        Err(e) => {
            let note = cycle_note(&e, members);
            deps.clear();
            (services, Some(note))
        }
    };
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
    note
}

/// The problem entry for a `depends_on` cycle: the compose services in it
/// and their containers.
fn cycle_note(e: &DockerError, members: &[Member]) -> String {
    let cycle = match e {
        DockerError::Cycle(c) => c.as_str(),
        _ => "",
    };
    let in_cycle: std::collections::BTreeSet<&str> = cycle.split(" -> ").collect();
    let containers: Vec<&str> = members
        .iter()
        .filter(|m| {
            m.compose_service
                .as_deref()
                .is_some_and(|s| in_cycle.contains(s))
        })
        .map(|m| m.name.as_str())
        .collect();
    format!(
        "depends_on has a cycle ({cycle}; containers {}): the project starts without a dependency order",
        containers.join(", ")
    )
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
    let paths = project::config_file_paths(files, working_dir);
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
