//! The status API's listener: HTTP/1.x served by hyper with a header-read
//! timeout (an idle or slowloris connection is closed once it has not sent
//! a complete request head in time, also between keep-alive requests), a
//! cap on the head's size and a cap on concurrent connections (further
//! clients wait in the listen backlog). Event streams have slots of their
//! own ([`super::streams`]): a connection that turns into one gives its
//! request slot back. Shutdown stops accepting, lets open requests finish
//! for a short grace period, then closes what is left.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::Request, Router};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{streams, ApiError};

/// Bounds of the listener.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Time a connection has to send a complete request head, from its
    /// opening or from the end of the previous response.
    pub header_read_timeout: Duration,
    /// Connections served at once, event streams not counted.
    pub max_connections: usize,
    /// Event streams served at once (`agent.max_event_streams`), apart
    /// from `max_connections`.
    pub max_event_streams: usize,
    /// An event stream whose reader has not taken what it was sent for
    /// this long is closed (its reader reconnects with `Last-Event-ID`).
    /// Longer than the keep-alive period: a quiet stream is polled at
    /// least that often.
    pub stream_stall_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_head_bytes: usize,
    /// Time open requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_event_streams: crate::config::DEFAULT_MAX_EVENT_STREAMS as usize,
            stream_stall_timeout: super::sse::KEEP_ALIVE.saturating_mul(4),
            max_head_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` with the default limits until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    serve_with(listener, router, ServeLimits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let addr = listener.local_addr().map_err(|source| ApiError::Io {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let stream_slots = Arc::new(Semaphore::new(limits.max_event_streams));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connections first, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%addr, %error, "status API: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (tie, ties) =
            streams::ConnectionTie::new(Arc::clone(&stream_slots), limits.max_event_streams);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(tie.clone());
                request
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(streams::run_connection(
            connection,
            permit,
            ties,
            limits.stream_stall_timeout,
        ));
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("status API: requests still open at shutdown are cut");
        }
    }
    connections.shutdown().await;
    Ok(())
}
