//! The port guard: a non-agent listener always wins its port. A binding
//! (the address and port Docker publishes) on which another program
//! listens is yielded: never steered nor warmed, and a connection the
//! kernel had already steered to the agent for it is not held for a start
//! but closed at once with a reset (below), until that program stops
//! listening. Each yielded binding is a problem of its service
//! (`GET /api/problems`, `autostop status`, a warning in the log).
//!
//! It is checked when Docker's bindings of a service are learned or change
//! (the endpoint refresher sends them through the guard, which passes them
//! on to the steering worker only after the check, so a binding is never
//! steered before it was looked at), when a steered connection arrives (the
//! wake loop and the cold-start listener ask before they wake or hold), and,
//! while some binding is yielded, every [`RECHECK_EVERY`]: the only periodic
//! work, and only in that state. When the program is gone the binding is
//! steered again as the service's mode asks.
//!
//! "Another program" is any socket listening on an overlapping address and
//! port, except Docker's own docker-proxy relaying to the service's
//! containers: it is theirs while they run (its `-container-ip` is one of
//! their addresses, or the service is starting, ready, stopping or
//! hibernated, or failed a start a moment ago: Docker removes a dead
//! container's proxy a little after the agent hears of the death). A
//! stopped service has no docker-proxy, so one on its port is another
//! container's.
//!
//! Why a connection already steered is closed rather than relayed to the
//! program: the handshake is done with the agent's socket and cannot be
//! moved to another; relaying would present every client to that program
//! as coming from the host itself (defeating its own address checks and
//! logs) and make the agent carry traffic for a program it does not
//! manage. The reset comes at once, and the client's next attempt reaches
//! the program on the stock path.
//!
//! Requests are answered in batches: every request waiting when a check
//! begins is answered by that check (one `/proc` read for all), and a
//! request that arrives during a check waits for the next, so an answer
//! always comes from a read made after the request.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{deps::HostSockets, registry::DirectoryReader, steering::KernelSteering};
use crate::{
    procnet::{Listening, Owner},
    published::HostPort,
    service::ServiceState,
};

/// How often yielded bindings are looked at again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest one `/proc` read may take; past it the check changes nothing.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The command name of Docker's userland proxy.
const DOCKER_PROXY: &str = "docker-proxy";
/// Owners remembered by socket inode (a long-lived listener's owner is
/// looked up once); the memory is emptied past this many.
const OWNER_MEMORY: usize = 256;

/// A request to the guard.
#[derive(Debug)]
pub(super) enum GuardRequest {
    /// Docker publishes `service`'s TCP ports at `bindings`; its running
    /// containers have `addresses` (what its docker-proxy relays to).
    Bindings {
        service: String,
        bindings: Vec<HostPort>,
        addresses: Vec<IpAddr>,
    },
    /// `service` is no longer managed.
    Remove { service: String },
    /// A steered connection to `local` (or a SYN to `port` on any
    /// address, when the address is not known) arrived for `service`:
    /// may it be held and wake the service?
    Knock {
        service: String,
        local: Option<IpAddr>,
        port: u16,
        reply: oneshot::Sender<bool>,
    },
}

/// The guard's mailbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PortGuard {
    requests: mpsc::UnboundedSender<GuardRequest>,
}

impl PortGuard {
    /// A mailbox and the receiving end the guard reads.
    pub(super) fn channel() -> (Self, mpsc::UnboundedReceiver<GuardRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        (Self { requests }, rx)
    }

    /// Where Docker publishes `service`'s TCP ports, and its containers'
    /// addresses; passed on to the steering worker once checked.
    pub(super) fn bindings(&self, service: &str, bindings: Vec<HostPort>, addresses: Vec<IpAddr>) {
        // The guard outlives every sender; a send error means shutdown.
        let _ = self.requests.send(GuardRequest::Bindings {
            service: service.to_owned(),
            bindings,
            addresses,
        });
    }

    /// Forgets `service`.
    pub(super) fn remove(&self, service: &str) {
        let _ = self.requests.send(GuardRequest::Remove {
            service: service.to_owned(),
        });
    }

    /// Resolves once every request sent before is checked and its bindings
    /// passed on to the steering worker (a knock is answered after the
    /// bindings of its batch).
    pub(super) async fn settled(&self) {
        let _ = self.may_hold("", None, 0).await;
    }

    /// Whether a steered connection of `service` to `local`:`port` may be
    /// held (and wake it): false when another program listens there. When
    /// the guard cannot tell (shutting down) the answer is yes, as before
    /// the guard existed.
    pub async fn may_hold(&self, service: &str, local: Option<IpAddr>, port: u16) -> bool {
        let (reply, answer) = oneshot::channel();
        let knock = GuardRequest::Knock {
            service: service.to_owned(),
            local,
            port,
            reply,
        };
        if self.requests.send(knock).is_err() {
            return true;
        }
        answer.await.unwrap_or(true)
    }
}

#[async_trait::async_trait]
impl crate::coldstart::PortOwners for PortGuard {
    async fn may_hold(&self, service: &str, local: std::net::SocketAddr) -> bool {
        PortGuard::may_hold(self, service, Some(local.ip()), local.port()).await
    }
}

/// What the guard knows of one service.
#[derive(Debug, Default)]
struct Guarded {
    bindings: Vec<HostPort>,
    addresses: Vec<IpAddr>,
    /// Yielded bindings, with the problem entry of each.
    yielded: BTreeMap<HostPort, String>,
}

/// The requests of one check.
#[derive(Debug, Default)]
struct Batch {
    removed: Vec<String>,
    bindings: Vec<(String, Vec<HostPort>, Vec<IpAddr>)>,
    knocks: Vec<(String, Option<IpAddr>, u16, oneshot::Sender<bool>)>,
    recheck: bool,
}

impl Batch {
    fn add(&mut self, request: GuardRequest) {
        match request {
            GuardRequest::Bindings {
                service,
                bindings,
                addresses,
            } => self.bindings.push((service, bindings, addresses)),
            GuardRequest::Remove { service } => self.removed.push(service),
            GuardRequest::Knock {
                service,
                local,
                port,
                reply,
            } => self.knocks.push((service, local, port, reply)),
        }
    }
}

/// The guard's parts.
pub(super) struct Guard {
    /// The host's sockets.
    pub sockets: Arc<dyn HostSockets>,
    /// Where checked bindings and yielded sets go.
    pub steering: KernelSteering,
    /// The services' states and problem cells.
    pub directory: DirectoryReader,
}

/// What the guard keeps between checks.
#[derive(Default)]
struct Books {
    services: HashMap<String, Guarded>,
    owners: HashMap<u64, Option<Owner>>,
}

impl Guard {
    /// Runs the guard until `shutdown` or until every mailbox is dropped.
    pub(super) async fn run(
        self,
        mut requests: mpsc::UnboundedReceiver<GuardRequest>,
        shutdown: CancellationToken,
    ) {
        let mut books = Books::default();
        let mut next_recheck = Instant::now();
        loop {
            let yielded = books.services.values().any(|g| !g.yielded.is_empty());
            let mut batch = Batch::default();
            tokio::select! {
                () = shutdown.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => batch.add(request),
                    None => return,
                },
                () = tokio::time::sleep_until(next_recheck), if yielded => {}
            }
            while let Ok(request) = requests.try_recv() {
                batch.add(request);
            }
            if Instant::now() >= next_recheck {
                batch.recheck = true;
                next_recheck = Instant::now() + RECHECK_EVERY;
            }
            self.check(&mut books, batch).await;
        }
    }

    async fn check(&self, books: &mut Books, batch: Batch) {
        for service in &batch.removed {
            books.services.remove(service);
        }
        let mut to_check: BTreeSet<String> = BTreeSet::new();
        for (service, bindings, addresses) in &batch.bindings {
            let guarded = books.services.entry(service.clone()).or_default();
            guarded.bindings.clone_from(bindings);
            guarded.addresses.clone_from(addresses);
            to_check.insert(service.clone());
        }
        to_check.extend(batch.knocks.iter().map(|k| k.0.clone()));
        if batch.recheck {
            to_check.extend(
                books
                    .services
                    .iter()
                    .filter(|(_, g)| !g.yielded.is_empty())
                    .map(|(name, _)| name.clone()),
            );
        }
        let ports: BTreeSet<u16> = to_check
            .iter()
            .filter_map(|name| books.services.get(name))
            .flat_map(|g| g.bindings.iter().map(|b| b.port))
            .collect();
        let found = if ports.is_empty() {
            Some(Vec::new())
        } else {
            self.read(ports, &mut books.owners).await
        };
        if let Some(found) = found {
            for name in &to_check {
                self.judge(books, name, &found);
            }
        }
        // Bindings go on only now, after their yielded set.
        for (service, bindings, _) in batch.bindings {
            self.steering.set_bindings(&service, bindings);
        }
        for (service, local, port, reply) in batch.knocks {
            let clear = books.services.get(&service).is_none_or(|g| {
                !g.yielded
                    .keys()
                    .any(|b| b.port == port && local.is_none_or(|ip| b.overlaps((ip, port).into())))
            });
            let _ = reply.send(clear);
        }
    }

    /// The listeners on `ports` with their owners (looked up for sockets
    /// not seen before); `None` when `/proc` could not be read in time.
    async fn read(
        &self,
        ports: BTreeSet<u16>,
        owners: &mut HashMap<u64, Option<Owner>>,
    ) -> Option<Vec<(Listening, Option<Owner>)>> {
        let sockets = Arc::clone(&self.sockets);
        let known: BTreeSet<u64> = owners.keys().copied().collect();
        let read = tokio::task::spawn_blocking(move || {
            let found = sockets.listening(&ports)?;
            let unknown: BTreeSet<u64> = found
                .iter()
                .map(|l| l.inode)
                .filter(|i| !known.contains(i))
                .collect();
            let looked_up = if unknown.is_empty() {
                Vec::new()
            } else {
                sockets.owners(&unknown)
            };
            Ok::<_, crate::procnet::ProcnetError>((found, unknown, looked_up))
        });
        let (found, unknown, looked_up) = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(Ok(read))) => read,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "cannot read the host's listening sockets; ports stay as they were");
                return None;
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("reading the host's listening sockets failed or took too long; ports stay as they were");
                return None;
            }
        };
        if owners.len() > OWNER_MEMORY {
            owners.clear();
        }
        for inode in unknown {
            let owner = looked_up
                .iter()
                .find(|(i, _)| *i == inode)
                .map(|(_, o)| o.clone());
            owners.insert(inode, owner);
        }
        Some(
            found
                .into_iter()
                .map(|l| (l, owners.get(&l.inode).cloned().flatten()))
                .collect(),
        )
    }

    /// Decides which of `name`'s bindings are yielded now, and tells the
    /// steering worker and the service's problem cell when that changed.
    fn judge(&self, books: &mut Books, name: &str, found: &[(Listening, Option<Owner>)]) {
        let Some(guarded) = books.services.get_mut(name) else {
            return;
        };
        let record = self.directory.get(name);
        let awake = record.as_ref().is_some_and(|r| {
            let status = r.handle.status();
            containers_run(&status.state) || just_failed(&status.state, status.since)
        });
        let now: BTreeMap<HostPort, String> = guarded
            .bindings
            .iter()
            .filter_map(|binding| {
                foreign(*binding, found, &guarded.addresses, awake)
                    .map(|problem| (*binding, problem))
            })
            .collect();
        if now == guarded.yielded && now.is_empty() {
            return;
        }
        // A yielded set is sent again at each look (the steering worker may
        // have begun tracking the service afresh since); the log only says
        // what changed.
        for (binding, problem) in &now {
            if !guarded.yielded.contains_key(binding) {
                tracing::warn!(service = name, %binding, event = "port_yielded", "{problem}");
            }
        }
        for binding in guarded.yielded.keys().filter(|b| !now.contains_key(b)) {
            tracing::info!(service = name, %binding, event = "port_reclaimed", "no other program listens on {binding} any more; it is steered again");
        }
        self.steering
            .set_yielded(name, now.keys().copied().collect());
        if let Some(record) = record {
            let problems: Vec<String> = now.values().cloned().collect();
            record.cells.ports.send_if_modified(|known| {
                let changed = *known != problems;
                if changed {
                    known.clone_from(&problems);
                }
                changed
            });
        }
        guarded.yielded = now;
    }
}

/// Whether the service's containers run (so its own docker-proxy may
/// listen on its ports).
fn containers_run(state: &ServiceState) -> bool {
    matches!(
        state,
        ServiceState::Starting
            | ServiceState::Ready
            | ServiceState::Stopping
            | ServiceState::Hibernating
            | ServiceState::Hibernated
    )
}

/// How long after a failed start a docker-proxy on the service's port is
/// still taken for its own: Docker tears a dead container's proxy down a
/// moment after the container exits, later than the agent hears of the
/// death (seen: 150 ms).
const PROXY_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the service failed a start within [`PROXY_LINGER`] (its
/// containers may have run a moment ago, their proxy with them).
fn just_failed(state: &ServiceState, since: tokio::time::Instant) -> bool {
    matches!(state, ServiceState::Failed { .. }) && since.elapsed() < PROXY_LINGER
}

/// The problem entry when a listener other than the service's own
/// docker-proxy takes connections `binding` would steer; `None` if none
/// does. `addresses` are its containers' addresses, `awake` whether they
/// run.
pub(super) fn foreign(
    binding: HostPort,
    found: &[(Listening, Option<Owner>)],
    addresses: &[IpAddr],
    awake: bool,
) -> Option<String> {
    let (listener, owner) = found.iter().find(|(listener, owner)| {
        binding.overlaps(listener.local) && !own_proxy(owner.as_ref(), addresses, awake)
    })?;
    let who = match owner {
        Some(owner) => format!("{} (pid {})", owner.command, owner.pid),
        None => "a process the agent cannot see".to_owned(),
    };
    Some(format!(
        "port {binding}: {who} listens on {}; the agent does not steer it, and holds or starts nothing for its connections, while that program listens (looked at again every {} s)",
        listener.local,
        RECHECK_EVERY.as_secs()
    ))
}

/// Whether `owner` is Docker's proxy for the service's own containers. A
/// listener whose process cannot be seen (it exited between the socket
/// table and its `/proc` entry, as a dead container's proxy does) is taken
/// for the proxy while the containers run or just failed.
fn own_proxy(owner: Option<&Owner>, addresses: &[IpAddr], awake: bool) -> bool {
    let Some(owner) = owner else {
        return awake;
    };
    if owner.command != DOCKER_PROXY {
        return false;
    }
    awake
        || owner
            .container_ip()
            .is_some_and(|ip| addresses.contains(&ip))
}

#[cfg(test)]
#[path = "tests_port_guard.rs"]
mod tests;
