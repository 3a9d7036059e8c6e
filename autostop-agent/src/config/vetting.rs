//! Labels are a request, not an order: the checks a service described by
//! Docker labels must pass before the agent manages (and steers) it.
//!
//! A labelled service is refused when
//! - one of its ports is not published by one of its containers (the agent
//!   steers only what Docker publishes);
//! - its containers or compose project are already managed by the config
//!   file (the file is the admin's word).
//!
//! A port another program listens on is not a refusal: the agent manages
//! the service but never steers that port while the program listens (the
//! port guard, `agent::port_guard`, for file and labelled services alike),
//! and steers it once the program is gone.
//!
//! (A label claiming the status API's port is refused earlier, when its
//! values are validated like a file service's.)
//!
//! Pure: the agent gathers the inputs (containers) and logs the refusals;
//! `autostop check` shows them.

use super::{
    labels::{members, LabelledContainer},
    Config, ServiceConfig, Target,
};

/// What the checks know of the host.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// The config file's services (and `agent.status_listen`).
    pub file: &'a Config,
}

/// Splits labelled `services` (built from `containers`) into those the
/// agent may manage and one refusal message per other.
pub fn vet(
    services: Vec<ServiceConfig>,
    containers: &[LabelledContainer],
    host: HostFacts<'_>,
) -> (Vec<ServiceConfig>, Vec<String>) {
    let mut accepted = Vec::new();
    let mut refusals = Vec::new();
    for service in services {
        match check(&service, &members(&service, containers), host) {
            Ok(()) => accepted.push(service),
            Err(why) => refusals.push(format!(
                "service {:?} from Docker labels is not managed: {why}",
                service.name
            )),
        }
    }
    (accepted, refusals)
}

fn check(
    service: &ServiceConfig,
    members: &[&LabelledContainer],
    host: HostFacts<'_>,
) -> Result<(), String> {
    if let Some(owner) = file_owner(service, members, host.file) {
        return Err(format!(
            "its containers are already managed by service {owner:?} of the config file"
        ));
    }
    for spec in &service.ports {
        let published = members
            .iter()
            .flat_map(|m| m.published.iter())
            .any(|(protocol, bound)| *protocol == spec.protocol && bound.port == spec.port);
        if !published {
            return Err(format!(
                "port {spec} is not published by its containers (the agent only steers what Docker publishes)"
            ));
        }
    }
    Ok(())
}

/// The file service that already manages some of `members`, if any.
fn file_owner<'a>(
    service: &ServiceConfig,
    members: &[&LabelledContainer],
    file: &'a Config,
) -> Option<&'a str> {
    file.services
        .iter()
        .find(|theirs| match (&theirs.target, &service.target) {
            (Target::ComposeDir(a), Target::ComposeDir(b)) => a == b,
            (Target::Containers(names), _) => members.iter().any(|m| names.contains(&m.name)),
            (Target::ComposeDir(dir), Target::Containers(_)) => {
                members.iter().any(|m| m.working_dir() == dir.to_str())
            }
        })
        .map(|s| s.name.as_str())
}

#[cfg(test)]
#[path = "tests_vetting.rs"]
mod tests;
