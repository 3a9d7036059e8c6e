//! The netfilter worker: one thread that owns the netlink socket (and with
//! it the warm-up table), the record of what is warming, and the element
//! refresher. The rest of the agent sends it requests by message and awaits
//! the answer; nothing else touches the socket.
//!
//! A thread rather than a tokio task: netlink answers are read with a
//! blocking, deadline-bounded `recv`, a conntrack dump of a large table
//! never occupies a runtime worker, and dropping the handle can join it
//! (closing the socket, so the kernel deletes the table) without a runtime.

use std::{
    collections::BTreeSet,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Instant,
};

use tokio::sync::{oneshot, watch};

use super::{
    conntrack, nft, socket::NfSocket, KernelElement, NetfilterError, Operation, WarmupOptions,
};
use crate::published::HostPort;

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NetfilterError>>;

/// What the worker is asked to do.
pub(crate) enum Command {
    /// Add to the warm-up redirect.
    Warm(HostPort, Reply<()>),
    /// Remove from the warm-up redirect, then forget its SYN_SENT entries.
    Cool(HostPort, Reply<()>),
    /// Delete SYN_SENT conntrack entries; answers how many.
    ForgetSynSent(HostPort, Reply<u64>),
    /// The kernel's listing of our sets.
    List(Reply<Vec<KernelElement>>),
    /// Delete the table and stop.
    Shutdown(Reply<()>),
}

/// A command with the time its sender stops waiting.
pub(crate) struct Request {
    /// The work.
    pub command: Command,
    /// After this the caller has given up (a warm-up not started by then is
    /// not started at all).
    pub deadline: Instant,
}

/// State owned by the worker thread.
struct Worker {
    options: WarmupOptions,
    socket: NfSocket,
    /// What is warming, as the worker applied it.
    warming: BTreeSet<HostPort>,
    /// Publishes `warming` to [`super::WarmupRedirect::warming`].
    published: watch::Sender<BTreeSet<HostPort>>,
}

/// The thread's body: opens the socket, installs the table (answering on
/// `installed`), then serves `requests` and refreshes elements until the
/// handle is dropped or asks for shutdown. Returning closes the socket.
pub(crate) fn run(
    options: WarmupOptions,
    requests: Receiver<Request>,
    published: watch::Sender<BTreeSet<HostPort>>,
    installed: Reply<()>,
) {
    let op = Operation::Install;
    let deadline = super::later(Instant::now(), options.timeout);
    let mut socket = match NfSocket::open() {
        Ok(socket) => socket,
        Err(source) => {
            let _ = installed.send(Err(NetfilterError::Socket { op, source }));
            return;
        }
    };
    if let Err(e) = socket.batch(op, &nft::install(&options), deadline) {
        let _ = installed.send(Err(e));
        return;
    }
    if installed.send(Ok(())).is_err() {
        // The installer gave up waiting: nobody will use this table.
        return;
    }
    let mut worker = Worker {
        options,
        socket,
        warming: BTreeSet::new(),
        published,
    };
    let interval = worker.options.refresh_interval;
    // Only while something is warming: an idle worker sleeps until asked.
    let mut next_refresh: Option<Instant> = None;
    loop {
        let received = match next_refresh {
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => requests.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(Request {
                command: Command::Shutdown(reply),
                deadline,
            }) => {
                let result = worker.socket.batch(
                    Operation::Remove,
                    &nft::remove_table(&worker.options),
                    deadline,
                );
                drop(worker);
                let _ = reply.send(result);
                return;
            }
            Ok(request) => worker.handle(request),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Also under a steady stream of requests.
        let now = Instant::now();
        next_refresh = match next_refresh {
            _ if worker.warming.is_empty() => None,
            None => Some(super::later(now, interval)),
            Some(at) if now >= at => {
                worker.refresh();
                Some(super::later(now, interval))
            }
            keep => keep,
        };
    }
}

impl Worker {
    fn fresh_deadline(&self) -> Instant {
        super::later(Instant::now(), self.options.timeout)
    }

    fn publish(&self) {
        self.published.send_replace(self.warming.clone());
    }

    fn handle(&mut self, request: Request) {
        let Request { command, deadline } = request;
        let late = Instant::now() >= deadline;
        match command {
            Command::Warm(host, reply) => {
                let op = Operation::Warm(host);
                let result = if late {
                    // Its caller reported a failure already; warming now
                    // would redirect with nobody expecting it.
                    Err(NetfilterError::Timeout { op })
                } else {
                    // A host not warming has no element (the table starts
                    // empty and cool deletes them), so one add will do.
                    let fresh = self.warming.contains(&host);
                    let batch = nft::add_elements(&self.options, &[host], fresh);
                    self.socket.batch(op, &batch, deadline).map(|()| {
                        self.warming.insert(host);
                        self.publish();
                    })
                };
                let _ = reply.send(result);
            }
            Command::Cool(host, reply) => {
                // Always done, even late: ending a redirect fails open.
                let deadline = if late {
                    self.fresh_deadline()
                } else {
                    deadline
                };
                self.warming.remove(&host);
                self.publish();
                let batch = nft::remove_elements(&self.options, &[host]);
                // Timed: the hand-back's parts (issue #29's profile).
                let began = Instant::now();
                let removed = self.socket.batch(Operation::Cool(host), &batch, deadline);
                let nft_done = Instant::now();
                let result = removed
                    .and_then(|()| conntrack::forget_syn_sent(&mut self.socket, host, deadline));
                tracing::debug!(
                    %host,
                    nft_us = nft_done.saturating_duration_since(began).as_micros() as u64,
                    conntrack_us = nft_done.elapsed().as_micros() as u64,
                    forgotten = result.as_ref().ok(),
                    "cooled"
                );
                let _ = reply.send(result.map(|_| ()));
            }
            Command::ForgetSynSent(host, reply) => {
                let result = if late {
                    Err(NetfilterError::Timeout {
                        op: Operation::ForgetSynSent(host),
                    })
                } else {
                    conntrack::forget_syn_sent(&mut self.socket, host, deadline)
                };
                let _ = reply.send(result);
            }
            Command::List(reply) => {
                let _ = reply.send(self.list(deadline));
            }
            Command::Shutdown(reply) => {
                // Handled by `run`, which owns the loop.
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn list(&mut self, deadline: Instant) -> Result<Vec<KernelElement>, NetfilterError> {
        let mut out = Vec::new();
        for kind in nft::SetKind::ALL {
            let request = nft::list_request(&self.options, kind);
            let messages = self.socket.dump(Operation::List, request, deadline)?;
            out.extend(nft::parse_elements(kind, &messages));
        }
        Ok(out)
    }

    /// Re-adds every warming element with a fresh timeout. A failure is
    /// logged and retried next time; the elements' own timeout is the
    /// safety net.
    fn refresh(&mut self) {
        if self.warming.is_empty() {
            return;
        }
        let hosts: Vec<HostPort> = self.warming.iter().copied().collect();
        let batch = nft::add_elements(&self.options, &hosts, true);
        let deadline = self.fresh_deadline();
        if let Err(error) = self.socket.batch(Operation::Refresh, &batch, deadline) {
            tracing::warn!(%error, "could not refresh the warm-up elements");
        }
    }
}
