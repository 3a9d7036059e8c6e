//! Hand-over: a new agent process takes over from the running one without
//! refusing a connection (as nginx's binary upgrade and HAProxy's
//! `expose-fd listeners` do).
//!
//! The running agent listens on `control.sock` in its state directory
//! (0600, in the 0700 directory; peers must be root or its user). A new
//! agent (`autostop run --takeover`, which `autostop upgrade` or SIGUSR2
//! makes the running agent start) speaks to it:
//!
//! 1. `hello` (format version) → `offer`, with the steered listening
//!    sockets and the status API's socket passed by `SCM_RIGHTS`: their
//!    backlogs keep every queued connection. A different version is
//!    refused (`refused`), and the running agent goes on.
//! 2. The new agent loads and attaches its own kernel programs beside the
//!    running ones (sk_lookup and tcx both run several programs; both
//!    steer to the same inherited sockets) and installs its own warm-up
//!    table under the other of two names. Anything that fails so far ends
//!    the new agent; the running one never noticed.
//! 3. `stop`: the running agent stops its services' state machines, the
//!    API and its accept loops, puts back any hibernation's memory limits
//!    and writes its state file for the last time; it passes every
//!    connection still held for a cold start (`held`, the socket plus the
//!    bytes read so far) and says `stopped`, with each service's state,
//!    idle timer, hold and crash-loop guard ([`ServiceSnapshot`]). Its kernel programs, steering
//!    maps and warm-up table stay in force meanwhile, so new connections
//!    are steered and queue in the shared backlog.
//! 4. The new agent opens the state file, adopts every service from
//!    Docker, steers what sleeps, starts accepting, serves the connections
//!    it was passed, tells systemd `MAINPID=` + `READY=1`, then `running`.
//! 5. The old agent detaches its programs, deletes its warm-up table,
//!    lets the connections it already forwards finish (bounded by
//!    [`DRAIN`]) and exits 0.
//!
//! After `stop`, a failure on either side is a crash, and crashes fail
//! open: an old agent that does not hear `running` detaches and exits
//! non-zero (systemd restarts it); a new agent's programs die with it.

mod channel;
mod client;
mod server;
mod spawn;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use channel::{Channel, Received};
pub use client::{request_upgrade, Taken, Taking, UpgradeResult};
pub use server::{finish, ControlServer, HandoverPoint, Listeners, Outcome, ServerContext};

/// The format of the messages and of the snapshot. Agents hand over only
/// to an agent of the same version; another is refused before anything
/// changes.
pub const VERSION: u32 = 1;

/// The control socket's file name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";

/// How long the new agent gets from `offer` to `stop` (loading its
/// programs) and from `stopped` to `running` (adopting every service).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an old agent lets the connections it already forwards finish
/// after the hand-over before it exits anyway.
pub const DRAIN: Duration = Duration::from_secs(30);

/// The control socket for `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// The warm-up table name a new agent uses beside an old agent's `old`:
/// the two alternate, so both tables exist for the moment of the
/// hand-over and the old one's deletion never touches the new one's.
pub fn next_table(base: &str, old: &str) -> String {
    if old == base {
        format!("{base}_b")
    } else {
        base.to_owned()
    }
}

/// Set once this process hands its work over: it must not tell systemd
/// it stops (the unit goes on under the new main PID).
static HANDING_OVER: AtomicBool = AtomicBool::new(false);

/// Whether this agent is handing over to a new one.
pub fn handing_over() -> bool {
    HANDING_OVER.load(Ordering::Relaxed)
}

/// A message on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// New → old: a new agent of format `version` wants to take over.
    Hello {
        /// Its format version.
        version: u32,
        /// Its PID.
        pid: u32,
    },
    /// Old → new: the sockets (steered listeners, then the API's).
    Offer {
        /// The old agent's format version.
        version: u32,
        /// Its PID.
        pid: u32,
        /// Its warm-up table.
        nft_table: String,
        /// How many steered listeners come first among the descriptors.
        steered: usize,
        /// Whether the API's listener follows them.
        api: bool,
    },
    /// Old → new: no hand-over (why).
    Refused {
        /// Why not.
        reason: String,
    },
    /// New → old: ready to take over; stop.
    Stop,
    /// Old → new: one held connection (its socket; its bytes as payload).
    Held {
        /// The service it waits for.
        service: String,
        /// The published port it arrived on.
        port: u16,
        /// The client's end of stream was read.
        eof: bool,
        /// How long it has waited already, in milliseconds.
        waited_ms: u64,
    },
    /// Old → new: everything held was passed; the snapshot.
    Stopped {
        /// Format version of the snapshot.
        version: u32,
        /// Each service's state when the old agent stopped.
        services: Vec<ServiceSnapshot>,
    },
    /// New → old: the new agent runs (after telling systemd).
    Running {
        /// Its PID.
        pid: u32,
    },
    /// Client → running agent: start a new agent that takes over.
    Upgrade {
        /// The binary to start (default: this agent's own path).
        binary: Option<PathBuf>,
    },
    /// Running agent → client: the new agent's PID.
    Spawned {
        /// Its PID.
        pid: u32,
    },
    /// Running agent → client: the new agent took over.
    Upgraded {
        /// Its PID.
        pid: u32,
    },
    /// Running agent → client: the hand-over failed (why).
    Failed {
        /// Why.
        reason: String,
    },
}

/// One service in the hand-over snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    /// Its name.
    pub name: String,
    /// Its state's name as the API shows it.
    pub state: String,
    /// Milliseconds since its last activity (or since it became ready),
    /// while ready: its idle timer goes on from there.
    #[serde(default)]
    pub idle_for_ms: Option<u64>,
    /// The operator's hold.
    #[serde(default)]
    pub hold: bool,
    /// The crash-loop guard is latched, after this failure.
    #[serde(default)]
    pub crash_loop: Option<String>,
    /// A retry backoff is pending for this many more milliseconds.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
}

/// Why a hand-over could not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// No agent answers on the control socket.
    #[error("no running agent to take over from ({0})")]
    NoAgent(String),
    /// A socket call failed.
    #[error("control socket: {0}")]
    Socket(String),
    /// The peer sent something unexpected or malformed.
    #[error("control protocol: {0}")]
    Protocol(String),
    /// The peer refused (version, a hand-over already under way, …).
    #[error("hand-over refused: {0}")]
    Refused(String),
    /// The peer closed the connection.
    #[error("the other agent closed the control connection")]
    Closed,
    /// The peer did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

#[cfg(test)]
mod tests;
