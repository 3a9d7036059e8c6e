//! Dynamic mode: the agent answers a client itself only when it is sure the
//! client speaks HTTP/1; everyone else is held and replayed byte for byte,
//! exactly as in blocking mode.
//!
//! 1. The first bytes decide ([`crate::waitpage::opening`]), read for at
//!    most [`FIRST_BYTES_WAIT`] after the connection arrived.
//! 2. An HTTP/1 request line: the head is read (header timeout, size cap)
//!    and classified. Browsers navigating get the themed wait page, the
//!    page's script (`/.autostop/wait.js`) and poll get the script and the
//!    status JSON, every other request is held. A
//!    head that does not parse, is too large or too slow is held too: the
//!    app answers what it makes of it, not the agent.
//! 3. A TLS ClientHello (nginx's `proxy_pass https://…`), the HTTP/2
//!    preface or any other bytes: held.
//! 4. Nothing within the wait, or too few bytes to tell: a protocol where
//!    the server speaks first, or a browser's preconnected socket. Held,
//!    and looked at again from step 2 as soon as telling bytes arrive, so a
//!    late navigation still gets its wait page.

use std::{sync::atomic::Ordering, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    held::{Held, FIRST_BYTES_WAIT},
    hold::{self, hold_and_forward, HoldOutcome},
    ColdStart, Route,
};
use crate::{
    progress::{public_steps, PageStage},
    service::{Command, ServiceState, ServiceStatus, Trigger},
    waitpage::{
        classify, opening, read_head_from, status_json, wait_page, wait_script, HeadError, Kind,
        Opening, PageState, PageVars, StatusBody, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEAD_BYTES,
        PUBLIC_FAILURE,
    },
};

/// Estimate shown before any start was learned.
const DEFAULT_ESTIMATE: Duration = Duration::from_secs(20);
/// The page's `Retry-After`, for clients that honour it instead of the script.
const RETRY_AFTER_S: u64 = 5;

/// Handles one steered connection of a dynamic-mode service.
pub(super) async fn handle(
    mut held: Held,
    port: u16,
    route: &Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
) -> HoldOutcome {
    loop {
        let present = tokio::select! {
            present = held.read_opening(held.arrived + FIRST_BYTES_WAIT) => Some(present),
            () = shutdown.cancelled() => None,
        };
        let Some(present) = present else {
            // Handing over: the new agent looks at it; otherwise closed.
            return ctx
                .handoff
                .pass(held, port, route)
                .unwrap_or(HoldOutcome::Closed);
        };
        if !present {
            return HoldOutcome::HungUp;
        }
        match opening(&held.received) {
            Opening::Http1 => return http(held, port, route, ctx, shutdown).await,
            Opening::Undecided if !held.eof() => {
                held = match hold::admit(held, route).await {
                    Ok(held) => held,
                    Err(outcome) => return outcome,
                };
                match held.wait_or_opening(route, shutdown).await {
                    // Telling bytes arrived: classify them.
                    None => continue,
                    Some(end) => return hold::conclude(held, end, port, route, ctx).await,
                }
            }
            _ => return hold_and_forward(held, port, route, ctx, shutdown).await,
        }
    }
}

/// An HTTP/1 request: wait page, its script, status JSON, or held.
async fn http(
    mut held: Held,
    port: u16,
    route: &Route,
    ctx: &ColdStart,
    shutdown: &CancellationToken,
) -> HoldOutcome {
    let first = std::mem::take(&mut held.received);
    let read = read_head_from(
        &mut held.stream,
        first,
        DEFAULT_HEADER_TIMEOUT,
        DEFAULT_MAX_HEAD_BYTES,
    );
    let head = tokio::select! {
        head = read => head,
        () = shutdown.cancelled() => return HoldOutcome::Closed,
    };
    let head = match head {
        Ok(head) => head,
        // An HTTP client that closes before its head is complete left.
        Err(HeadError::Closed { .. } | HeadError::Io(_)) => return HoldOutcome::HungUp,
        Err(error) => {
            // Malformed, oversized or too slow for the agent to read: the
            // app, once up, decides what it is.
            ctx.stats.bad_heads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %route.service, %error, "request head held unread, for the app");
            held.received = error.into_raw();
            return hold_and_forward(held, port, route, ctx, shutdown).await;
        }
    };
    let kind = classify(&head);
    let head_only = head.method.eq_ignore_ascii_case("HEAD");
    held.received = head.raw;
    let reply = match kind {
        Kind::Other => return hold_and_forward(held, port, route, ctx, shutdown).await,
        // An asset of a wait page already served: no wake of its own.
        Kind::WaitScript => wait_script(head_only),
        Kind::StatusPoll => {
            let status = route.handle.status();
            wake_unless_failed(route, &status);
            let vars = page_vars(route, &status, ctx);
            status_json(&StatusBody {
                service: vars.service_name,
                state: vars.state,
                elapsed_s: vars.elapsed_s,
                estimated_s: vars.estimated_s,
                error: vars.error,
                steps: vars.steps,
            })
        }
        Kind::Navigation => {
            let status = route.handle.status();
            wake_unless_failed(route, &status);
            let theme = route
                .theme
                .as_deref()
                .unwrap_or(crate::config::DEFAULT_THEME);
            let html = ctx.themes.render(theme, &page_vars(route, &status, ctx));
            ctx.stats.wait_pages.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.wait_page(&route.service);
            wait_page(&html, RETRY_AFTER_S, head_only)
        }
    };
    held.release_permit();
    hold::reply_and_close(held.stream, &reply).await;
    HoldOutcome::Closed
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

/// The page's values. A failure shows [`PUBLIC_FAILURE`], never its cause
/// (container names, compose paths and Docker's errors stay in the log and
/// the authenticated API); the service's configured name stays: it is the
/// administrator's label for the site the visitor asked for. The start's
/// steps carry generic labels only ([`crate::progress`]).
fn page_vars(route: &Route, status: &ServiceStatus, ctx: &ColdStart) -> PageVars {
    let state = PageState::of(status);
    let elapsed_s = match state {
        PageState::Starting => status.since.elapsed().as_secs(),
        _ => 0,
    };
    let stage = match state {
        PageState::Stopped => PageStage::Idle,
        PageState::Starting => PageStage::Starting(status.since),
        PageState::Failed => PageStage::Failed,
        PageState::Ready => PageStage::Ready,
    };
    let steps = match stage {
        PageStage::Idle => Vec::new(),
        _ => public_steps(
            &ctx.upstreams.progress(&route.service),
            stage,
            tokio::time::Instant::now(),
        ),
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
        error: (state == PageState::Failed).then(|| PUBLIC_FAILURE.to_owned()),
        steps,
    }
}
