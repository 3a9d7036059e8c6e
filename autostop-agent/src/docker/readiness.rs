//! The readiness wait of [`DockerRuntime`]: every container up (health
//! included, exits judged against the start), then a TCP connect to each
//! service port at the container's own address, with a permanent
//! neighbour entry pinned meanwhile. Records the start progress as it goes
//! (each refresh, then "waiting for its port" / "port answering" for the
//! containers that own the ports).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use tracing::warn;

use super::endpoints::{container_port, primary_address};
use super::neigh::{self, NeighbourPin};
use super::ready::{self, exited, seen, started_since, try_connect};
use super::resolve::{Member, RunState};
use super::runtime::{lock, DockerRuntime, RECHECK_PERIOD};
use super::DockerError;
use crate::config::Protocol;
use crate::progress::{Book, Phase};

impl DockerRuntime {
    /// Refreshes every member (and its start progress); fails on a
    /// non-zero exit of this start. Returns whether all are up (or
    /// completed one-shots).
    async fn check(
        &self,
        service: &str,
        members: &mut [Member],
        began: SystemTime,
    ) -> Result<bool, DockerError> {
        let mut all = true;
        for m in members.iter_mut() {
            m.refresh(&self.client).await?;
            self.progress.observe(service, &m.id, seen(m, began));
            match m.run_state() {
                RunState::Up | RunState::Completed => {}
                RunState::Failed(code) if started_since(m, began) => return Err(exited(m, code)),
                _ => all = false,
            }
        }
        Ok(all)
    }

    pub(super) async fn wait_ready_inner(&self, service: &str) -> Result<(), DockerError> {
        let svc = self.config(service)?;
        let began = lock(&self.started)
            .get(service)
            .copied()
            .unwrap_or_else(SystemTime::now);
        // The start's own resolution, if this wait follows one: `check`
        // inspects every member again anyway.
        let cached = lock(&self.resolved_at_start).remove(service);
        let mut members = match cached {
            Some(members) => members,
            None => self.resolve_service(&svc).await?.members,
        };
        self.progress.ensure(service, member_keys(&members));
        while !self.check(service, &mut members, began).await? {
            tokio::time::sleep(ready::STATE_POLL).await;
        }
        lock(&self.ready_upstreams).remove(service);
        // Container address of every TCP service port.
        let mut targets = Vec::new();
        let mut upstreams = HashMap::new();
        let mut pins = Vec::new();
        for spec in svc.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            let found = members
                .iter()
                .find_map(|m| container_port(&m.inspect, *spec).map(|p| (m, p)));
            let Some((m, cport)) = found else {
                return Err(DockerError::NotFound(format!(
                    "service {service}: no container publishes host port {spec}"
                )));
            };
            let Some((net, ip, mac)) = primary_address(&m.inspect) else {
                return Err(DockerError::Api(format!(
                    "service {service}: container {} has no network address",
                    m.name
                )));
            };
            if self.pin_neighbours {
                pins.extend(self.pin(&net, ip, &mac).await);
            }
            self.progress.set(service, &m.id, Phase::PortWait);
            targets.push((m.id.clone(), SocketAddr::new(ip, cport)));
            upstreams.insert(spec.port, SocketAddr::new(ip, cport));
        }
        let mut last_check = std::time::Instant::now();
        while !targets.is_empty() {
            let mut left = Vec::new();
            for (id, t) in targets {
                if !try_connect(t).await {
                    left.push((id, t));
                }
            }
            targets = left;
            answered(&self.progress, service, &members, &targets);
            if targets.is_empty() {
                break;
            }
            if last_check.elapsed() >= RECHECK_PERIOD {
                self.check(service, &mut members, began).await?;
                last_check = std::time::Instant::now();
            }
            tokio::time::sleep(ready::CONNECT_POLL).await;
        }
        lock(&self.ready_upstreams).insert(service.to_string(), upstreams);
        for p in pins {
            match tokio::time::timeout(neigh::NETLINK_TIMEOUT, p.remove()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(service, error = %e, "removing neighbour entry"),
                Err(_) => warn!(service, "removing neighbour entry: netlink did not answer"),
            }
        }
        Ok(())
    }

    /// Adds a PERMANENT neighbour entry for `ip` on its network's bridge;
    /// failures only cost the fast path and are logged.
    async fn pin(&self, net: &str, ip: std::net::IpAddr, mac: &str) -> Option<NeighbourPin> {
        let handle = self
            .netlink
            .get_or_init(|| async {
                neigh::connect()
                    .map_err(|e| warn!(error = %e, "netlink unavailable; no neighbour pinning"))
                    .ok()
            })
            .await
            .as_ref()?;
        let bridge = self.bridge(net).await?;
        let add = NeighbourPin::add(handle, &bridge, ip, mac);
        match tokio::time::timeout(neigh::NETLINK_TIMEOUT, add).await {
            Ok(Ok(pin)) => Some(pin),
            Ok(Err(e)) => {
                warn!(%bridge, %ip, error = %e, "neighbour entry not added");
                None
            }
            Err(_) => {
                warn!(%bridge, %ip, "neighbour entry not added: netlink did not answer");
                None
            }
        }
    }
}

/// The keys a member's progress step is found by: its id, then its name.
pub(super) fn member_keys(members: &[Member]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| vec![m.id.clone(), m.name.clone()])
        .collect()
}

/// Marks the port owners with no target left to probe as answering.
fn answered(book: &Book, service: &str, members: &[Member], left: &[(String, SocketAddr)]) {
    for m in members {
        if !left.iter().any(|(id, _)| *id == m.id) {
            book.set_if(service, &m.id, Phase::PortWait, Phase::PortAnswering);
        }
    }
}
