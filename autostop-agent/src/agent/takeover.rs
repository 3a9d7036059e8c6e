//! The sockets of `autostop run` ([`super::real`]): made here, or, with
//! `--takeover`, inherited from the running agent ([`crate::handover`]),
//! and the control socket a later agent takes them over through.

use std::path::Path;

use super::{
    handing::{self, ControlSetup},
    listeners, AgentError,
};
use crate::{
    config::Config,
    handover::{self, ControlServer, HandoverError, Listeners, Taken, Taking},
    netfilter::WarmupOptions,
    test_hooks::{takeover_pause_point, Takeover},
};

fn thread_failed(e: tokio::task::JoinError) -> AgentError {
    AgentError::Fatal(format!("take-over thread: {e}"))
}

/// Asks the agent running with `state_dir` for its sockets.
pub(super) async fn offered(state_dir: &Path) -> Result<Taking, AgentError> {
    let dir = state_dir.to_owned();
    let taking = tokio::task::spawn_blocking(move || {
        let taking = Taking::connect(&dir)?;
        takeover_pause_point(Takeover::Offered);
        Ok::<_, HandoverError>(taking)
    })
    .await
    .map_err(thread_failed)??;
    tracing::info!(
        event = "taking_over",
        old_pid = taking.old_pid,
        "the running agent offered its sockets"
    );
    Ok(taking)
}

/// Tells the old agent to stop; what it held comes back (its last state
/// write is done by then).
pub(super) async fn stop_old(taking: Taking) -> Result<Taken, AgentError> {
    let taken = tokio::task::spawn_blocking(move || {
        let taken = taking.stop()?;
        takeover_pause_point(Takeover::Stopped);
        Ok::<_, HandoverError>(taken)
    })
    .await
    .map_err(thread_failed)??;
    Ok(taken)
}

/// The steered listeners and the warm-up table's settings: the running
/// agent's listeners and the other table name when taking over.
pub(super) fn steered(
    taking: Option<&Taking>,
) -> Result<(Vec<std::net::TcpListener>, WarmupOptions), AgentError> {
    let Some(taking) = taking else {
        return Ok((listeners::steered_listeners()?, listeners::warmup_options()));
    };
    let mut options = listeners::warmup_options();
    options.table = handover::next_table(&options.table, &taking.old_table);
    let sockets = taking
        .steered
        .iter()
        .map(std::net::TcpListener::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| AgentError::Io {
            what: "inherited steered listener".to_owned(),
            source,
        })?;
    Ok((sockets, options))
}

/// The steered listeners on the runtime.
pub(super) fn on_runtime(
    sockets: Vec<std::net::TcpListener>,
) -> Result<Vec<tokio::net::TcpListener>, AgentError> {
    let io = |source| AgentError::Io {
        what: "steered listener".to_owned(),
        source,
    };
    sockets
        .into_iter()
        .map(|socket| {
            socket.set_nonblocking(true).map_err(io)?;
            tokio::net::TcpListener::from_std(socket).map_err(io)
        })
        .collect()
}

/// The status API's socket: the running agent's when taking over and it
/// listens where this config says, else bound here.
pub(super) async fn api_listener(
    config: &Config,
    taking: Option<&Taking>,
) -> Result<tokio::net::TcpListener, AgentError> {
    let want = config.agent.status_listen;
    let io = |source| AgentError::Io {
        what: format!("agent.status_listen = {want}"),
        source,
    };
    if let Some(inherited) = taking.and_then(|t| t.api.as_ref()) {
        if inherited.local_addr().ok() == Some(want) {
            let listener = inherited.try_clone().map_err(io)?;
            listener.set_nonblocking(true).map_err(io)?;
            return tokio::net::TcpListener::from_std(listener).map_err(io);
        }
    }
    tokio::net::TcpListener::bind(want).await.map_err(io)
}

/// Duplicates of the listeners, for the control socket's offer.
pub(super) fn offered_later(
    steered: &[std::net::TcpListener],
    api: &tokio::net::TcpListener,
) -> Result<Listeners, AgentError> {
    Ok(Listeners {
        steered: steered
            .iter()
            .map(|s| handing::dup(s, "steered listener"))
            .collect::<Result<_, _>>()?,
        api: Some(handing::dup(api, "API listener")?),
    })
}

/// The control socket in `state_dir` (which must exist); `None`, logged,
/// when it cannot be bound: the agent runs, and an upgrade restarts it.
pub(super) fn control(
    state_dir: &Path,
    listeners: Listeners,
    nft_table: String,
) -> Option<ControlSetup> {
    match ControlServer::bind(&handover::socket_path(state_dir)) {
        Ok(server) => Some(ControlSetup {
            server,
            listeners,
            nft_table,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: a new agent cannot take over from this one (upgrades restart)");
            None
        }
    }
}
