//! `GET /api/events`: the events stream as server-sent events. Each event
//! is sent with its number as the SSE `id`, its kind as the SSE `event`
//! and its JSON as `data`; a client that reconnects with `Last-Event-ID`
//! gets what it missed from the agent's replay buffer first. A comment
//! every [`KEEP_ALIVE`] keeps proxies from closing a quiet stream. A
//! client too slow to keep up has its stream ended (it reconnects and
//! catches up); every stream ends at shutdown.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use futures_util::{stream, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::{handlers, ApiState};
use crate::events::{Event, Feed};

/// How often a quiet stream gets a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn events(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refused) = handlers::refusal(&state, &headers) {
        return refused;
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(feed) = state.control.events(after) else {
        return handlers::problem(StatusCode::NOT_FOUND, "this agent has no events stream");
    };
    Sse::new(feed_stream(feed))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
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
    let missed = stream::iter(missed.iter().map(sse).map(Ok).collect::<Vec<_>>());
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
