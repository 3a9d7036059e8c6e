//! Dynamic mode: read the request head (with a header timeout and a size
//! limit), then answer browsers with the themed wait page, the wait page's
//! poll with the status JSON, and hold everything else like blocking mode,
//! replaying the bytes already read.

use std::{sync::atomic::Ordering, time::Duration};

use tokio::{io::AsyncWriteExt, net::TcpStream, sync::OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{
    hold::{hold_and_forward, HoldOutcome},
    ColdStart, Route,
};
use crate::{
    service::{Command, ServiceState, ServiceStatus, Trigger},
    waitpage::{
        bad_request, classify, read_head, status_json, wait_page, HeadError, Kind, PageState,
        PageVars, StatusBody, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEAD_BYTES,
    },
};

/// Estimate shown before any start was learned.
const DEFAULT_ESTIMATE: Duration = Duration::from_secs(20);
/// The page's `Retry-After`, for clients that honour it instead of the script.
const RETRY_AFTER_S: u64 = 5;

/// Handles one steered connection of a dynamic-mode service.
pub(super) async fn handle(
    mut stream: TcpStream,
    port: u16,
    route: &Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
    permit: OwnedSemaphorePermit,
) -> HoldOutcome {
    let head = tokio::select! {
        head = read_head(&mut stream, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEAD_BYTES) => head,
        () = shutdown.cancelled() => return HoldOutcome::Closed,
    };
    let head = match head {
        Ok(head) => head,
        Err(HeadError::Closed { .. } | HeadError::Io(_)) => return HoldOutcome::Closed,
        Err(error) => {
            // Malformed, oversized or too slow: refuse this one only.
            ctx.stats.bad_heads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %route.service, %error, "bad request head");
            if !matches!(error, HeadError::Timeout { .. }) {
                let _ = stream.write_all(&bad_request()).await;
            }
            let _ = stream.shutdown().await;
            return HoldOutcome::Closed;
        }
    };
    match classify(&head) {
        Kind::Other => {
            hold_and_forward(
                stream,
                port,
                route,
                ctx.upstreams.as_ref(),
                &head.raw,
                shutdown,
                permit,
            )
            .await
        }
        Kind::StatusPoll => {
            let status = route.handle.status();
            wake_unless_failed(route, &status);
            let vars = page_vars(route, &status);
            let body = StatusBody {
                service: vars.service_name,
                state: vars.state,
                elapsed_s: vars.elapsed_s,
                estimated_s: vars.estimated_s,
                error: vars.error,
            };
            let _ = stream.write_all(&status_json(&body)).await;
            let _ = stream.shutdown().await;
            HoldOutcome::Closed
        }
        Kind::Navigation => {
            let status = route.handle.status();
            wake_unless_failed(route, &status);
            let theme = route
                .theme
                .as_deref()
                .unwrap_or(crate::config::DEFAULT_THEME);
            let html = ctx.themes.render(theme, &page_vars(route, &status));
            let head_only = head.method.eq_ignore_ascii_case("HEAD");
            let _ = stream
                .write_all(&wait_page(&html, RETRY_AFTER_S, head_only))
                .await;
            let _ = stream.shutdown().await;
            ctx.stats.wait_pages.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.wait_page(&route.service);
            HoldOutcome::Closed
        }
    }
}

/// A page view or poll is a visitor asking for the service: wake it, except
/// when it failed (retries follow the state machine's backoff, not reloads).
fn wake_unless_failed(route: &Route, status: &ServiceStatus) {
    if !matches!(status.state, ServiceState::Failed { .. }) {
        let _ = route.handle.try_send(Command::Wake {
            trigger: Trigger::HeldConnection,
        });
    }
}

fn page_vars(route: &Route, status: &ServiceStatus) -> PageVars {
    let state = match &status.state {
        ServiceState::Ready => PageState::Ready,
        ServiceState::Starting => PageState::Starting,
        ServiceState::Failed { .. } => PageState::Failed,
        ServiceState::Stopped | ServiceState::Stopping | ServiceState::Unknown => {
            PageState::Stopped
        }
    };
    let elapsed_s = match state {
        PageState::Starting => status.since.elapsed().as_secs(),
        _ => 0,
    };
    PageVars {
        service_name: route.service.clone(),
        estimated_s: status
            .start_estimate
            .unwrap_or(DEFAULT_ESTIMATE)
            .as_secs()
            .max(1),
        elapsed_s,
        state,
        error: match &status.state {
            ServiceState::Failed { reason } => Some(reason.clone()),
            _ => None,
        },
    }
}
