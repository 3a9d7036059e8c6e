//! `GET /api/events`: the events stream as server-sent events. Each event
//! is sent with its number as the SSE `id`, its kind as the SSE `event`
//! and its JSON as `data`; a client that reconnects with `Last-Event-ID`
//! gets what it missed from the agent's replay buffer first. A comment
//! every [`KEEP_ALIVE`] keeps proxies from closing a quiet stream. Streams
//! have their own slots ([`super::streams`]): beyond
//! `agent.max_event_streams`, 503 with `Retry-After`. A client too slow to
//! keep up has its stream ended (it reconnects and catches up); every
//! stream ends at shutdown.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Extension,
};
use futures_util::{stream, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::{handlers, streams::ConnectionTie, ApiState};
use crate::events::{Event, Feed};

/// How often a quiet stream gets a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a client refused for want of a stream slot is told to wait, in
/// seconds (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 5;

pub(super) async fn events(
    State(state): State<ApiState>,
    tie: Option<Extension<ConnectionTie>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = handlers::refusal(&state, &headers) {
        return refused;
    }
    let after = match last_event_id(&headers) {
        Ok(after) => after,
        Err(detail) => return handlers::problem(StatusCode::BAD_REQUEST, detail),
    };
    let Some(feed) = state.control.events(after) else {
        return handlers::problem(StatusCode::NOT_FOUND, "this agent has no events stream");
    };
    let lease = match tie.map(|Extension(tie)| tie.open_stream()).transpose() {
        Ok(lease) => lease,
        Err(busy) => {
            let mut response = handlers::problem(StatusCode::SERVICE_UNAVAILABLE, busy.to_string());
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let mut events = Box::pin(feed_stream(feed));
    // Each poll tells the connection the reader keeps up (see `streams`);
    // the lease, and with it the slot, goes with the body.
    let watched = stream::poll_fn(move |cx| {
        if let Some(lease) = &lease {
            lease.polled();
        }
        events.as_mut().poll_next(cx)
    });
    let mut response = Sse::new(watched)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // The connection ends with the stream: it holds no request slot.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The `Last-Event-ID` a reconnecting client sent: `Ok(None)` without one
/// (or an empty one: the SSE reset); otherwise the decimal number of an
/// event; `Err` names the header.
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let mut values = headers.get_all("last-event-id").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key("last-event-id") {
            true => Err("Last-Event-ID: sent more than once".to_owned()),
            false => Ok(None),
        };
    };
    let text = value.as_bytes().trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(text)
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "Last-Event-ID: {:?} is not the number of an event (the SSE id this agent sends)",
                String::from_utf8_lossy(text)
            )
        })
}

fn sse(event: &Event) -> SseEvent {
    let base = SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind.clone());
    match serde_json::to_string(event) {
        Ok(json) => base.data(json),
        Err(_) => base.data("{}"),
    }
}

/// What was missed, then the live events after it, until shutdown.
fn feed_stream(feed: Feed) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let Feed {
        missed,
        live,
        closing,
    } = feed;
    let last = missed.last().map(|e| e.id);
    // Rendered as they are sent: the head goes out at once.
    let missed = stream::iter(missed).map(|event| Ok(sse(&event)));
    let live = stream::unfold((live, last), |(mut live, last)| async move {
        loop {
            match live.recv().await {
                Ok(event) if last.is_some_and(|last| event.id <= last) => continue,
                Ok(event) => {
                    let id = event.id;
                    return Some((Ok(sse(&event)), (live, Some(id))));
                }
                Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
            }
        }
    });
    missed.chain(live).take_until(closing.cancelled_owned())
}
