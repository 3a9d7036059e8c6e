//! The new agent's side: [`Taking`] (the offer received, nothing stopped
//! yet) and [`Taken`] (the old agent stopped; its held connections are
//! here), and `autostop upgrade`'s request ([`request_upgrade`]).

use std::{
    net::TcpStream,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    channel::Channel, socket_path, HandoverError, Message, ServiceSnapshot, STEP_TIMEOUT, VERSION,
};
use crate::coldstart::Passed;

/// How long the old agent gets to answer `hello`.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each message the new agent sends.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A hand-over offered: the old agent's sockets, before it stops.
#[derive(Debug)]
pub struct Taking {
    channel: Channel,
    /// The old agent's PID.
    pub old_pid: u32,
    /// Its warm-up table's name.
    pub old_table: String,
    /// The steered listeners, inherited.
    pub steered: Vec<std::net::TcpListener>,
    /// The status API's listener, inherited.
    pub api: Option<std::net::TcpListener>,
}

/// A hand-over after the old agent stopped.
#[derive(Debug)]
pub struct Taken {
    channel: Channel,
    /// The old agent's PID.
    pub old_pid: u32,
    /// The connections it held, to serve now.
    pub passed: Vec<Passed>,
    /// Its services' states when it stopped.
    pub services: Vec<ServiceSnapshot>,
}

fn listener(fd: OwnedFd) -> std::net::TcpListener {
    std::net::TcpListener::from(fd)
}

impl Taking {
    /// Asks the agent whose state directory is `state_dir` for its
    /// sockets (blocking).
    pub fn connect(state_dir: &Path) -> Result<Self, HandoverError> {
        let channel = Channel::connect(&socket_path(state_dir))?;
        channel.send(
            &Message::Hello {
                version: VERSION,
                pid: std::process::id(),
            },
            &[],
            &[],
            SEND_TIMEOUT,
        )?;
        let offer = channel.recv(OFFER_TIMEOUT)?;
        let (version, old_pid, old_table, steered, api) = match offer.message {
            Message::Offer {
                version,
                pid,
                nft_table,
                steered,
                api,
            } => (version, pid, nft_table, steered, api),
            Message::Refused { reason } => return Err(HandoverError::Refused(reason)),
            other => {
                return Err(HandoverError::Protocol(format!(
                    "expected an offer, got {other:?}"
                )))
            }
        };
        if version != VERSION {
            return Err(HandoverError::Refused(format!(
                "the running agent speaks format {version}, this one {VERSION}"
            )));
        }
        let expected = steered.saturating_add(usize::from(api));
        if offer.fds.len() != expected {
            return Err(HandoverError::Protocol(format!(
                "offer announced {expected} sockets and passed {}",
                offer.fds.len()
            )));
        }
        let mut fds = offer.fds.into_iter();
        let steered: Vec<_> = fds.by_ref().take(steered).map(listener).collect();
        let api = fds.next().map(listener);
        Ok(Self {
            channel,
            old_pid,
            old_table,
            steered,
            api,
        })
    }

    /// Tells the old agent to stop and receives what it held (blocking).
    pub fn stop(self) -> Result<Taken, HandoverError> {
        self.channel.send(&Message::Stop, &[], &[], SEND_TIMEOUT)?;
        let mut passed = Vec::new();
        loop {
            let received = self.channel.recv(STEP_TIMEOUT)?;
            match received.message {
                Message::Held {
                    service,
                    port,
                    eof,
                    waited_ms,
                } => {
                    let Some(fd) = received.fds.into_iter().next() else {
                        return Err(HandoverError::Protocol(
                            "a held connection came without its socket".to_owned(),
                        ));
                    };
                    passed.push(Passed {
                        service,
                        port,
                        stream: TcpStream::from(fd),
                        received: received.payload,
                        eof,
                        waited: Duration::from_millis(waited_ms),
                    });
                }
                Message::Stopped { version, services } => {
                    if version != VERSION {
                        return Err(HandoverError::Refused(format!(
                            "snapshot format {version}, this agent reads {VERSION}"
                        )));
                    }
                    return Ok(Taken {
                        channel: self.channel,
                        old_pid: self.old_pid,
                        passed,
                        services,
                    });
                }
                other => {
                    return Err(HandoverError::Protocol(format!(
                        "expected held connections, got {other:?}"
                    )))
                }
            }
        }
    }
}

impl Taken {
    /// Tells the old agent this one runs (blocking).
    pub fn running(&self) -> Result<(), HandoverError> {
        self.channel.send(
            &Message::Running {
                pid: std::process::id(),
            },
            &[],
            &[],
            SEND_TIMEOUT,
        )
    }
}

/// What `autostop upgrade` heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeResult {
    /// The new agent (its PID) took over.
    Upgraded(u32),
    /// It did not (why), and the running agent goes on.
    Failed(String),
}

/// Asks the agent of `state_dir` to start `binary` (default: its own) as
/// a new agent that takes over, and waits for the outcome (blocking).
/// `on_spawned` hears the new agent's PID.
pub fn request_upgrade(
    state_dir: &Path,
    binary: Option<PathBuf>,
    on_spawned: impl FnOnce(u32),
) -> Result<UpgradeResult, HandoverError> {
    let channel = Channel::connect(&socket_path(state_dir))?;
    channel.send(&Message::Upgrade { binary }, &[], &[], SEND_TIMEOUT)?;
    let mut on_spawned = Some(on_spawned);
    // The start, `stop`, the old agent's stop and the new one's start.
    let whole = STEP_TIMEOUT.saturating_mul(3);
    loop {
        match channel.recv(whole)?.message {
            Message::Spawned { pid } => {
                if let Some(f) = on_spawned.take() {
                    f(pid);
                }
            }
            Message::Upgraded { pid } => return Ok(UpgradeResult::Upgraded(pid)),
            Message::Failed { reason } | Message::Refused { reason } => {
                return Ok(UpgradeResult::Failed(reason))
            }
            other => {
                return Err(HandoverError::Protocol(format!(
                    "unexpected answer {other:?}"
                )))
            }
        }
    }
}
