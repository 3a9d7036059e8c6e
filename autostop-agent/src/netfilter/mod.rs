//! The warm-up redirect: while a started container's app is not listening
//! yet, new TCP connections to its published host port still reach the
//! agent instead of being refused by the container.
//!
//! While a service is stopped, sk_lookup steers its port to the agent. Once
//! `docker start` runs, Docker's DNAT rules (nat priority -100) send new
//! connections to the container and past sk_lookup. Our own table
//! `inet autostop` has nat chains at prerouting and output, priority -110,
//! with `fib daddr type local tcp dport @warming dnat to <own daddr>`: that
//! identity DNAT keeps address and port but takes the connection's one NAT
//! binding, so Docker's DNAT is skipped and sk_lookup still sees the
//! connection. Leaving the set sends new connections to the container again;
//! connections already held keep their binding. Docker never touches our
//! table.
//!
//! Fail-open: set elements carry a timeout (5 s by default) and a
//! background task refreshes them while the agent lives, so a dead agent's
//! redirect expires by itself.
//!
//! Managed through `nft -j -f -` (nft's documented JSON interface, one
//! atomic transaction per call, readable errors) rather than a libnftnl
//! binding, and conntrack entries through Debian's `conntrack` tool.

mod command;
mod conntrack;
mod ruleset;

use std::{
    collections::BTreeSet, fmt, path::PathBuf, process::ExitStatus, sync::Arc, time::Duration,
};

use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// What the netfilter module was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Creating (or replacing) our table, set, chains and rules.
    Install,
    /// Adding a port to the `warming` set.
    Warm(u16),
    /// Removing a port from the `warming` set.
    Cool(u16),
    /// Re-adding the warming ports with a fresh timeout.
    Refresh,
    /// Deleting a port's SYN_SENT conntrack entries.
    ForgetSynSent(u16),
    /// Listing the `warming` set.
    List,
    /// Deleting our table.
    Remove,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Install => write!(f, "installing the warm-up table"),
            Self::Warm(port) => write!(f, "warming port {port}"),
            Self::Cool(port) => write!(f, "cooling port {port}"),
            Self::Refresh => write!(f, "refreshing warming ports"),
            Self::ForgetSynSent(port) => {
                write!(f, "deleting SYN_SENT conntrack entries of port {port}")
            }
            Self::List => write!(f, "listing warming ports"),
            Self::Remove => write!(f, "removing the warm-up table"),
        }
    }
}

/// Errors of the warm-up redirect.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    /// The tool could not be started or fed (missing binary, pipe error).
    #[error("{op}: could not run {}: {source}", program.display())]
    Spawn {
        /// What we were doing.
        op: Operation,
        /// The tool we tried to run.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The tool ran and refused; `stderr` says why.
    #[error("{op}: {} exited with {status}: {stderr}", program.display())]
    Failed {
        /// What we were doing.
        op: Operation,
        /// The tool that failed.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// nft answered with JSON we could not parse.
    #[error("{op}: could not parse nft's answer: {source}")]
    Parse {
        /// What we were doing.
        op: Operation,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Settings of the warm-up redirect; `Default` is what the agent uses.
#[derive(Debug, Clone)]
pub struct WarmupOptions {
    /// Name of our `inet` table (tests use their own so they never touch a
    /// running agent's).
    pub table: String,
    /// nat chain priority; must be below Docker's DNAT (-100) to win.
    pub priority: i32,
    /// Lifetime of a set element nobody refreshes: how long a dead agent's
    /// redirect outlives it. Whole seconds, at least 1.
    pub element_timeout: Duration,
    /// How often the refresher re-adds the warming ports; well below
    /// `element_timeout`.
    pub refresh_interval: Duration,
    /// The `nft` binary.
    pub nft: PathBuf,
    /// The `conntrack` binary (conntrack-tools).
    pub conntrack: PathBuf,
}

impl Default for WarmupOptions {
    fn default() -> Self {
        Self {
            table: "autostop".to_owned(),
            priority: -110,
            element_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_millis(1500),
            nft: PathBuf::from("nft"),
            conntrack: PathBuf::from("conntrack"),
        }
    }
}

/// State shared with the refresher task.
struct Shared {
    /// Settings, fixed at install.
    options: WarmupOptions,
    /// Ports in warm-up. The lock is held across each nft call, so a
    /// refresh can never re-add a port that `cool` has just removed.
    warming: Mutex<BTreeSet<u16>>,
}

/// Our installed `inet autostop` table and its element refresher. Dropping
/// it (or [`WarmupRedirect::shutdown`]) deletes the table.
pub struct WarmupRedirect {
    /// Options and warming ports, shared with the refresher.
    shared: Arc<Shared>,
    /// Stops the refresher.
    cancel: CancellationToken,
    /// The refresher task, joined by `shutdown`.
    refresher: Option<JoinHandle<()>>,
    /// Whether the table is still ours to delete.
    installed: bool,
}

impl WarmupRedirect {
    /// Replaces any table left by an earlier agent with a fresh, empty one
    /// (one atomic batch) and starts the refresher. Must be called inside a
    /// tokio runtime.
    pub async fn install(options: WarmupOptions) -> Result<Self, NetfilterError> {
        command::nft_apply(
            Operation::Install,
            &options.nft,
            &ruleset::install(&options),
        )
        .await?;
        let shared = Arc::new(Shared {
            options,
            warming: Mutex::new(BTreeSet::new()),
        });
        let cancel = CancellationToken::new();
        let refresher = tokio::spawn(refresh_loop(Arc::clone(&shared), cancel.clone()));
        Ok(Self {
            shared,
            cancel,
            refresher: Some(refresher),
            installed: true,
        })
    }

    /// The options this redirect was installed with.
    pub fn options(&self) -> &WarmupOptions {
        &self.shared.options
    }

    /// Starts warm-up for `port`: new connections to any local address on
    /// that TCP port skip Docker's DNAT. Call it before `docker start`; when
    /// the containers may already run (started by someone else), follow it
    /// with [`forget_syn_sent`](Self::forget_syn_sent) so SYNs already
    /// DNATed to a container that does not answer yet are redirected on
    /// retransmit.
    pub async fn warm(&self, port: u16) -> Result<(), NetfilterError> {
        let mut warming = self.shared.warming.lock().await;
        // A port not warming has no element: the table is created empty at
        // install and `cool` deletes elements (if a failed `cool` left one,
        // still ticking, the refresher renews it within one interval).
        let doc = if warming.contains(&port) {
            ruleset::add_fresh(&self.shared.options, &[port])
        } else {
            ruleset::add_new(&self.shared.options, &[port])
        };
        command::nft_apply(Operation::Warm(port), &self.shared.options.nft, &doc).await?;
        warming.insert(port);
        Ok(())
    }

    /// Ends warm-up for `port`: new connections go to the container again
    /// (connections accepted meanwhile keep going to the agent), then the
    /// port's SYN_SENT entries are deleted so SYNs that got the no-DNAT
    /// decision but no socket yet are DNATed on retransmit. Call it when
    /// the container is ready, before un-steering sk_lookup.
    pub async fn cool(&self, port: u16) -> Result<(), NetfilterError> {
        {
            let mut warming = self.shared.warming.lock().await;
            warming.remove(&port);
            let doc = ruleset::remove_elements(&self.shared.options, &[port]);
            command::nft_apply(Operation::Cool(port), &self.shared.options.nft, &doc).await?;
        }
        self.forget_syn_sent(port).await.map(|_| ())
    }

    /// Deletes `port`'s TCP conntrack entries in SYN_SENT (IPv4 and IPv6)
    /// and returns how many there were. `cool` calls it; the caller of
    /// `warm` does when the containers may already run.
    pub async fn forget_syn_sent(&self, port: u16) -> Result<u64, NetfilterError> {
        conntrack::forget_syn_sent(&self.shared.options.conntrack, port).await
    }

    /// Ports this redirect has in warm-up (its own record).
    pub async fn warming_ports(&self) -> Vec<u16> {
        self.shared.warming.lock().await.iter().copied().collect()
    }

    /// The kernel's view of the `warming` set: each port with the seconds
    /// left before it expires, as `nft -j list set` reports them.
    pub async fn kernel_elements(&self) -> Result<Vec<(u16, Option<u64>)>, NetfilterError> {
        let options = &self.shared.options;
        let args = ["list", "set", ruleset::FAMILY, &options.table, ruleset::SET];
        let listing = command::nft_list(Operation::List, &options.nft, &args).await?;
        Ok(ruleset::parse_elements(&listing))
    }

    /// Stops and joins the refresher, then deletes the table.
    pub async fn shutdown(mut self) -> Result<(), NetfilterError> {
        self.cancel.cancel();
        if let Some(refresher) = self.refresher.take() {
            if let Err(error) = refresher.await {
                tracing::warn!(%error, "warm-up refresher ended abnormally");
            }
        }
        self.installed = false;
        let options = &self.shared.options;
        command::nft_apply(Operation::Remove, &options.nft, &ruleset::remove(options)).await
    }

    /// Deletes the table now, blocking; used by `Drop`.
    fn remove_blocking(&mut self) -> Result<(), NetfilterError> {
        self.cancel.cancel();
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        self.installed = false;
        let options = &self.shared.options;
        command::nft_apply_blocking(Operation::Remove, &options.nft, &ruleset::remove(options))
    }
}

impl Drop for WarmupRedirect {
    fn drop(&mut self) {
        if self.installed {
            if let Err(error) = self.remove_blocking() {
                tracing::warn!(%error, "could not remove the warm-up table");
            }
        }
    }
}

/// Every `refresh_interval`, re-adds all warming ports with a fresh timeout
/// until `cancel` fires. A failed refresh is logged and retried next tick;
/// the elements' own timeout is the safety net.
async fn refresh_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.options.refresh_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let warming = shared.warming.lock().await;
        if warming.is_empty() {
            continue;
        }
        let ports: Vec<u16> = warming.iter().copied().collect();
        let doc = ruleset::add_fresh(&shared.options, &ports);
        if let Err(error) = command::nft_apply(Operation::Refresh, &shared.options.nft, &doc).await
        {
            tracing::warn!(%error, "could not refresh warming ports");
        }
    }
}
