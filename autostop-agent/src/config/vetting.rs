//! Labels are a request, not an order: the checks a service described by
//! Docker labels must pass before the agent manages (and steers) it.
//!
//! A labelled service is refused when
//! - one of its ports is not published by one of its containers (the agent
//!   steers only what Docker publishes);
//! - another program listens on one of its published host ports (anything
//!   but a docker-proxy relaying to one of the service's own containers):
//!   the agent never takes a port over from its owner;
//! - its containers or compose project are already managed by the config
//!   file (the file is the admin's word).
//!
//! (A label claiming the status API's port is refused earlier, when its
//! values are validated like a file service's.)
//!
//! Pure: the agent gathers the inputs (containers, listeners) and logs the
//! refusals; `autostop check` shows them.

use std::{collections::BTreeSet, net::IpAddr};

use super::{
    labels::{members, LabelledContainer},
    Config, Protocol, ServiceConfig, Target,
};
use crate::{procnet::HostListener, published::HostPort};

/// The command name of Docker's userland proxy.
const DOCKER_PROXY: &str = "docker-proxy";

/// What the checks know of the host.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// The config file's services (and `agent.status_listen`).
    pub file: &'a Config,
    /// Every TCP socket listening on a port some labelled container
    /// publishes.
    pub listeners: &'a [HostListener],
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
    let addresses: Vec<IpAddr> = members.iter().flat_map(|m| m.addresses.clone()).collect();
    for spec in &service.ports {
        let bindings: BTreeSet<HostPort> = members
            .iter()
            .flat_map(|m| m.published.iter())
            .filter(|(protocol, bound)| *protocol == spec.protocol && bound.port == spec.port)
            .map(|(_, bound)| *bound)
            .collect();
        if bindings.is_empty() {
            return Err(format!(
                "port {spec} is not published by its containers (the agent only steers what Docker publishes)"
            ));
        }
        if spec.protocol != Protocol::Tcp {
            continue;
        }
        for listener in host.listeners {
            let overlaps = bindings.iter().any(|b| overlap(*b, listener));
            if overlaps && !relays_to(listener, &addresses) {
                return Err(format!(
                    "port {spec}: {} listens on {}; the agent never takes over a port another program owns",
                    describe(listener),
                    listener.local
                ));
            }
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

/// Whether a listener takes connections a binding would steer.
fn overlap(binding: HostPort, listener: &HostListener) -> bool {
    if binding.port != listener.local.port() {
        return false;
    }
    let local = listener.local.ip();
    match binding.addr {
        None => true,
        Some(_) if local.is_unspecified() => true,
        Some(_) => binding.matches(local, binding.port),
    }
}

/// Whether `listener` is a docker-proxy relaying to one of `addresses`
/// (the service's own containers, running).
fn relays_to(listener: &HostListener, addresses: &[IpAddr]) -> bool {
    let Some(owner) = &listener.owner else {
        return false;
    };
    owner.command == DOCKER_PROXY
        && owner
            .container_ip()
            .is_some_and(|ip| addresses.contains(&ip))
}

fn describe(listener: &HostListener) -> String {
    match &listener.owner {
        Some(owner) => format!("{} (pid {})", owner.command, owner.pid),
        None => "a process the agent cannot see".to_owned(),
    }
}

#[cfg(test)]
#[path = "tests_vetting.rs"]
mod tests;
