//! The warm-up redirect: while a started container's app is not listening
//! yet, new TCP connections to its published (address,) port still reach
//! the agent instead of being refused by the container.
//!
//! While a service is stopped, sk_lookup steers its port to the agent. Once
//! `docker start` runs, Docker's DNAT rules (nat priority -100) send new
//! connections to the container and past sk_lookup. Our own table
//! `inet autostop` has nat chains at prerouting and output, priority -110,
//! whose rules match a local destination and TCP port in one of three sets
//! and apply `dnat to <own daddr>`: that identity DNAT keeps address and
//! port but takes the connection's one NAT binding, so Docker's DNAT is
//! skipped and sk_lookup still sees the connection. Leaving the set sends
//! new connections to the container again; connections already held keep
//! their binding. Docker never touches our table.
//!
//! Elements are keyed as Docker publishes ([`HostPort`]): a port on every
//! local address goes to `warming` (`inet_service`), a port on one address
//! to `warming4` (`ipv4_addr . inet_service`) or `warming6`, so a port
//! published on 127.0.0.1 is redirected for 127.0.0.1 only.
//!
//! No external program runs: the table is managed over nf_tables netlink
//! and conntrack entries over ctnetlink, with the message types of
//! `netlink-packet-netfilter` (MIT, the rtnetlink family's). One worker
//! thread owns the one netlink socket for the agent's life; callers send it
//! requests and await its answer, each bounded by
//! [`WarmupOptions::timeout`], so a failure is an error value, never a
//! hang.
//!
//! Fail-open, twice over: the table carries the `owner` flag, so the kernel
//! deletes it the moment the agent's socket closes (exit, panic, SIGKILL);
//! and set elements carry a timeout (5 s by default) that the worker
//! refreshes while it runs, so even a wedged but living agent's redirect
//! expires by itself.

// Reads untrusted bytes (labels, /proc, netlink answers): no byte-offset
// slicing of strings, no unchecked indexing, no unchecked arithmetic.
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod conntrack;
mod expr;
mod nft;
mod socket;
mod worker;

use std::{
    collections::BTreeSet,
    fmt, io,
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::errno::Errno;
use tokio::sync::{oneshot, watch};

use crate::published::HostPort;

/// `at` plus `wait`, or `at` when that does not fit (never for the few
/// seconds used here).
pub(crate) fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).unwrap_or(at)
}

/// What the netfilter module was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Creating (or replacing) our table, sets, chains and rules.
    Install,
    /// Adding an element to the warm-up sets.
    Warm(HostPort),
    /// Removing an element from the warm-up sets.
    Cool(HostPort),
    /// Re-adding the warming elements with a fresh timeout.
    Refresh,
    /// Deleting SYN_SENT conntrack entries.
    ForgetSynSent(HostPort),
    /// Listing the warm-up sets.
    List,
    /// Deleting our table.
    Remove,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Install => write!(f, "installing the warm-up table"),
            Self::Warm(host) => write!(f, "warming {host}"),
            Self::Cool(host) => write!(f, "cooling {host}"),
            Self::Refresh => write!(f, "refreshing the warming elements"),
            Self::ForgetSynSent(host) => {
                write!(f, "deleting SYN_SENT conntrack entries of {host}")
            }
            Self::List => write!(f, "listing the warming elements"),
            Self::Remove => write!(f, "removing the warm-up table"),
        }
    }
}

/// Errors of the warm-up redirect.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    /// The netlink socket could not be opened, written or read.
    #[error("{op}: netlink socket: {source}")]
    Socket {
        /// What we were doing.
        op: Operation,
        /// The I/O error.
        source: io::Error,
    },
    /// The kernel refused a message.
    #[error("{op}: the kernel refused {what}: {source}")]
    Kernel {
        /// What we were doing.
        op: Operation,
        /// Which message (`NEWSET warming4`, `conntrack delete`…), with a
        /// hint where the errno has a usual cause.
        what: String,
        /// The errno the kernel answered.
        source: io::Error,
    },
    /// The kernel did not answer in time (or the worker was busy that long).
    #[error("{op}: no answer within the netfilter timeout")]
    Timeout {
        /// What we were doing.
        op: Operation,
    },
    /// The kernel's answer could not be decoded.
    #[error("{op}: could not decode the kernel's answer: {message}")]
    Decode {
        /// What we were doing.
        op: Operation,
        /// The decoder's complaint.
        message: String,
    },
    /// The worker thread is gone (shut down, or it could not start).
    #[error("{op}: the netfilter worker has stopped")]
    Stopped {
        /// What we were doing.
        op: Operation,
    },
}

impl NetfilterError {
    /// A kernel refusal: `code` is the negative errno of a netlink error.
    pub(crate) fn kernel(op: Operation, what: &str, code: i32) -> Self {
        let errno = code.checked_neg().unwrap_or(i32::MAX);
        let hint = match (op, Errno::from_raw(errno)) {
            (Operation::Install, Errno::EPERM) => {
                " (the agent needs CAP_NET_ADMIN; or another running agent owns this table)"
            }
            _ => "",
        };
        Self::Kernel {
            op,
            what: format!("{what}{hint}"),
            source: io::Error::from_raw_os_error(errno),
        }
    }
}

/// Settings of the warm-up redirect; `Default` is what the agent uses.
#[derive(Debug, Clone)]
pub struct WarmupOptions {
    /// Name of our `inet` table (tests use their own so they never touch a
    /// running agent's).
    pub table: String,
    /// nat chain priority; must be below Docker's DNAT (-100) to win.
    pub priority: i32,
    /// Lifetime of a set element nobody refreshes: how long a wedged
    /// agent's redirect outlives its last refresh.
    pub element_timeout: Duration,
    /// How often the worker re-adds the warming elements; well below
    /// `element_timeout`.
    pub refresh_interval: Duration,
    /// Bound on each operation, from the request to the kernel's answer.
    pub timeout: Duration,
}

impl Default for WarmupOptions {
    fn default() -> Self {
        Self {
            table: "autostop".to_owned(),
            priority: -110,
            element_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_millis(1500),
            timeout: Duration::from_secs(3),
        }
    }
}

/// One element of our sets as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelElement {
    /// The (address,) port it redirects.
    pub host: HostPort,
    /// Its timeout, if it has one.
    pub timeout: Option<Duration>,
    /// Time left before it expires.
    pub expires: Option<Duration>,
}

/// How long a caller waits past its deadline for the worker's answer (the
/// worker itself gives up at the deadline).
const ANSWER_GRACE: Duration = Duration::from_millis(200);

/// Our installed table and the worker thread that owns it. Dropping it
/// (or [`WarmupRedirect::shutdown`]) closes the socket, and the kernel
/// deletes the table.
pub struct WarmupRedirect {
    options: WarmupOptions,
    /// Requests to the worker; dropped first on drop, which stops it.
    requests: Option<mpsc::Sender<worker::Request>>,
    /// What is warming, as the worker last applied it.
    warming: watch::Receiver<BTreeSet<HostPort>>,
    /// The worker, joined on shutdown or drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WarmupRedirect {
    /// Starts the worker, which replaces any table of ours left behind with
    /// a fresh, empty, owned one (one atomic batch).
    pub async fn install(options: WarmupOptions) -> Result<Self, NetfilterError> {
        let op = Operation::Install;
        let (requests, inbox) = mpsc::channel();
        let (published, warming) = watch::channel(BTreeSet::new());
        let (installed, answer) = oneshot::channel();
        let worker_options = options.clone();
        let thread = std::thread::Builder::new()
            .name("autostop-netfilter".to_owned())
            .spawn(move || worker::run(worker_options, inbox, published, installed))
            .map_err(|source| NetfilterError::Socket { op, source })?;
        let redirect = Self {
            options,
            requests: Some(requests),
            warming,
            thread: Some(thread),
        };
        let wait = redirect.options.timeout.saturating_add(ANSWER_GRACE);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(Ok(()))) => Ok(redirect),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(NetfilterError::Stopped { op }),
            Err(_) => Err(NetfilterError::Timeout { op }),
        }
    }

    /// The options this redirect was installed with.
    pub fn options(&self) -> &WarmupOptions {
        &self.options
    }

    /// Sends the command `make` builds to the worker and awaits its answer
    /// until the operation's deadline.
    async fn ask<T>(
        &self,
        op: Operation,
        make: impl FnOnce(worker::Reply<T>) -> worker::Command,
    ) -> Result<T, NetfilterError> {
        let (reply, answer) = oneshot::channel();
        let deadline = later(Instant::now(), self.options.timeout);
        let request = worker::Request {
            command: make(reply),
            deadline,
        };
        let sent = self.requests.as_ref().map(|r| r.send(request));
        if !matches!(sent, Some(Ok(()))) {
            return Err(NetfilterError::Stopped { op });
        }
        let until = tokio::time::Instant::from_std(later(deadline, ANSWER_GRACE));
        match tokio::time::timeout_at(until, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetfilterError::Stopped { op }),
            Err(_) => Err(NetfilterError::Timeout { op }),
        }
    }

    /// Starts warm-up for `host`: new TCP connections to it (to any local
    /// address on its port when it has no address) skip Docker's DNAT.
    /// Call it before `docker start`; when the containers may already run
    /// (started by someone else), follow it with
    /// [`forget_syn_sent`](Self::forget_syn_sent) so SYNs already DNATed to
    /// a container that does not answer yet are redirected on retransmit.
    pub async fn warm(&self, host: HostPort) -> Result<(), NetfilterError> {
        self.ask(Operation::Warm(host), |r| worker::Command::Warm(host, r))
            .await
    }

    /// Ends warm-up for `host`: new connections go to the container again
    /// (connections accepted meanwhile keep going to the agent), then its
    /// SYN_SENT entries are deleted so SYNs that got the no-DNAT decision
    /// but no socket yet are DNATed on retransmit. Call it when the
    /// container is ready, before un-steering sk_lookup.
    pub async fn cool(&self, host: HostPort) -> Result<(), NetfilterError> {
        self.ask(Operation::Cool(host), |r| worker::Command::Cool(host, r))
            .await
    }

    /// Deletes the TCP conntrack entries in SYN_SENT whose original
    /// destination is `host` (IPv4 and IPv6 for every address) and returns
    /// how many there were. `cool` calls it; the caller of `warm` does when
    /// the containers may already run.
    pub async fn forget_syn_sent(&self, host: HostPort) -> Result<u64, NetfilterError> {
        self.ask(Operation::ForgetSynSent(host), |r| {
            worker::Command::ForgetSynSent(host, r)
        })
        .await
    }

    /// What this redirect has in warm-up (the worker's record).
    pub fn warming(&self) -> Vec<HostPort> {
        self.warming.borrow().iter().copied().collect()
    }

    /// The kernel's view of our sets: each element with its timeout and
    /// the time left before it expires.
    pub async fn kernel_elements(&self) -> Result<Vec<KernelElement>, NetfilterError> {
        self.ask(Operation::List, worker::Command::List).await
    }

    /// Deletes the table, stops the worker and joins it.
    pub async fn shutdown(mut self) -> Result<(), NetfilterError> {
        let result = self.ask(Operation::Remove, worker::Command::Shutdown).await;
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::warn!("the netfilter worker ended abnormally"),
            }
        }
        result
    }
}

impl Drop for WarmupRedirect {
    fn drop(&mut self) {
        // Disconnecting the channel ends the worker at once (or after the
        // operation in progress, bounded by its deadline); its socket
        // closes and the kernel deletes the table.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the netfilter worker panicked");
            }
        }
    }
}
