//! The agent's own sockets and settings beside the services: the steered
//! listeners the kernel hands sleeping services' connections to, and the
//! warm-up table's settings.

use std::net::SocketAddr;

use super::AgentError;
use crate::netfilter::WarmupOptions;

/// Backlog of the steered listeners: a herd of first connections to a
/// sleeping service all queue here while it starts.
const STEERED_BACKLOG: i32 = 4096;

/// Environment variable naming the warm-up table instead of `autostop`, so
/// that agents run side by side (integration tests on a shared host) do not
/// flush or delete each other's table.
pub const NFT_TABLE_ENV: &str = "AUTOSTOP_NFT_TABLE";

/// The warm-up redirect's settings: the defaults, with the table name from
/// [`NFT_TABLE_ENV`] when set.
pub(super) fn warmup_options() -> WarmupOptions {
    let mut options = WarmupOptions::default();
    if let Some(table) = std::env::var(NFT_TABLE_ENV).ok().filter(|t| !t.is_empty()) {
        options.table = table;
    }
    options
}

/// The sockets steered connections land on: one IPv4 and one IPv6-only
/// listener on loopback (the kernel assigns connections to them whatever
/// their destination), with a deep backlog.
pub(super) fn steered_listeners() -> Result<Vec<std::net::TcpListener>, AgentError> {
    let mut out = Vec::new();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let addr: SocketAddr = addr.parse().map_err(|e| AgentError::Io {
            what: "steered listener address".to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let io = |source| AgentError::Io {
            what: format!("steered listener {addr}"),
            source,
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(io)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(io)?;
        }
        // Accepted sockets inherit this flag and hold the service's port
        // (their local address is the steered destination). Without it,
        // docker-proxy or dockerd could not bind the port when the
        // container starts while the agent still holds connections.
        socket.set_reuse_address(true).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        if let Err(e) = socket.bind(&addr.into()) {
            if addr.is_ipv6() {
                // A host without IPv6: steer IPv4 only.
                tracing::warn!(error = %e, "no IPv6 loopback; IPv6 connections are not steered");
                continue;
            }
            return Err(io(e));
        }
        socket.listen(STEERED_BACKLOG).map_err(io)?;
        out.push(socket.into());
    }
    Ok(out)
}
