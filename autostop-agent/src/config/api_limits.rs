//! `[agent] max_event_streams`: how many `GET /api/events` streams the
//! status API serves at once (their own slots, apart from the request
//! connections; see `api::serve`).

use toml::Spanned;

use super::validate::Checker;

/// Event streams served at once unless `max_event_streams` says otherwise.
pub const DEFAULT_MAX_EVENT_STREAMS: u32 = 16;
/// Largest accepted `max_event_streams`: each stream holds a socket and a
/// task for as long as its reader stays.
pub const MAX_EVENT_STREAMS_LIMIT: u32 = 256;

/// Validates `agent.max_event_streams`; `None` after an error (recorded).
pub(super) fn resolve_max_event_streams(
    ck: &mut Checker<'_>,
    raw: &Option<Spanned<i64>>,
) -> Option<u32> {
    ck.opt(
        raw,
        "agent.max_event_streams",
        DEFAULT_MAX_EVENT_STREAMS,
        |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| (1..=MAX_EVENT_STREAMS_LIMIT).contains(n))
                .ok_or_else(|| format!("{n} is out of range 1..={MAX_EVENT_STREAMS_LIMIT}"))
        },
    )
}
