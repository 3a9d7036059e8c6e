//! The events stream (`GET /api/events`, `autostop events`): every state
//! change with its reason, starts with their trigger, stops with their
//! reason, readiness with its duration, failures, manual actions and
//! config reloads, numbered in order. One task owns the numbering and a
//! replay buffer of the last [`REPLAY`] events; a client that reconnects
//! with `Last-Event-ID` gets what it missed from there, then the live
//! ones, without a gap or a repeat.
//!
//! Served to clients (`api::sse`): no indexing or unchecked arithmetic
//! here (denied; the tests may panic, it is their failure).
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::{collections::VecDeque, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::service::{LifecycleEvent, LifecycleObserver, StateName};

/// How many past events a reconnecting client can catch up on.
pub const REPLAY: usize = 1024;
/// How many events a slow client may lag behind before its stream ends
/// (it reconnects with `Last-Event-ID` and catches up from the replay).
const LIVE_BUFFER: usize = 256;

/// One event, as the stream sends it (the SSE `data`, as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the stream (the SSE `id`), from 1.
    pub id: u64,
    /// When (RFC 3339).
    pub at: String,
    /// `starting`, `ready`, `stopping`, `stopped`, `failed`, `manual` or
    /// `reload` (the SSE `event`).
    pub kind: String,
    /// The service, except for reloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The state the service entered (lifecycle events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateName>,
    /// What triggered a start (`syn`, `connection`, `manual`, `api`,
    /// `external`, `schedule`, `prewarm`, `dependent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Why it stopped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start to ready, in seconds (starts the agent made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_s: Option<f64>,
    /// A failure latched the crash-loop guard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crash_loop: bool,
    /// A manual action (`start`, `stop`, `hold`, `release`,
    /// `idle-timeout`), or what a reload did (`added 1, removed 0,
    /// changed 2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Event {
    /// The event of a lifecycle step of `service`.
    fn lifecycle(service: &str, step: &LifecycleEvent) -> Self {
        let mut event = Self {
            service: Some(service.to_owned()),
            ..Self::default()
        };
        let (kind, state) = match step {
            LifecycleEvent::Starting { trigger } => {
                event.trigger = Some(trigger.as_str().to_owned());
                ("starting", StateName::Starting)
            }
            LifecycleEvent::Ready { took, .. } => {
                event.took_s = took.map(|d| d.as_secs_f64());
                ("ready", StateName::Ready)
            }
            // A hibernation is a stop whose reason is `hibernate`; the
            // service's state says where it went.
            LifecycleEvent::Stopping { reason } => {
                event.reason = Some((*reason).to_owned());
                let state = match *reason {
                    "hibernate" => StateName::Hibernating,
                    _ => StateName::Stopping,
                };
                ("stopping", state)
            }
            LifecycleEvent::Stopped { reason } => {
                event.reason = Some((*reason).to_owned());
                let state = match *reason {
                    "hibernate" => StateName::Hibernated,
                    _ => StateName::Stopped,
                };
                ("stopped", state)
            }
            LifecycleEvent::Failed { reason, crash_loop } => {
                event.reason = Some(reason.clone());
                event.crash_loop = *crash_loop;
                ("failed", StateName::Failed)
            }
        };
        event.kind = kind.to_owned();
        event.state = Some(state);
        event
    }
}

/// What the events task is told.
#[derive(Debug)]
enum Input {
    Event(Event),
}

/// Sends events in (cheap to clone; sending never waits).
#[derive(Debug, Clone)]
pub struct EventSender(mpsc::UnboundedSender<Input>);

impl EventSender {
    /// An operator's action on `service` (through the API or the CLI).
    pub fn manual(&self, service: &str, action: &str) {
        self.send(Event {
            kind: "manual".into(),
            service: Some(service.to_owned()),
            action: Some(action.to_owned()),
            ..Event::default()
        });
    }

    /// A config reload (file or labels) applied.
    pub fn reload(&self, added: usize, removed: usize, changed: usize) {
        self.send(Event {
            kind: "reload".into(),
            action: Some(format!(
                "added {added}, removed {removed}, changed {changed}"
            )),
            ..Event::default()
        });
    }

    fn send(&self, event: Event) {
        // Gone only at shutdown.
        let _ = self.0.send(Input::Event(event));
    }
}

impl LifecycleObserver for EventSender {
    fn on_event(&self, service: &str, event: &LifecycleEvent) {
        self.send(Event::lifecycle(service, event));
    }
}

/// Where subscribers come from (cheap to clone).
#[derive(Debug, Clone)]
pub struct EventHub {
    replay: watch::Receiver<Arc<VecDeque<Event>>>,
    live: broadcast::Sender<Event>,
    /// Ends every subscriber's stream at shutdown.
    closing: CancellationToken,
}

/// A subscriber's view: what it missed, then the live events.
pub struct Feed {
    /// Buffered events after the `Last-Event-ID` given (all, without one),
    /// oldest first.
    pub missed: Vec<Event>,
    /// The live events (skip ids up to the last missed one).
    pub live: broadcast::Receiver<Event>,
    /// Cancelled at shutdown: the stream ends.
    pub closing: CancellationToken,
}

impl EventHub {
    /// A subscription from after event `after` (`None`: the whole buffer).
    pub fn subscribe(&self, after: Option<u64>) -> Feed {
        // Subscribe first, then read the buffer: nothing falls in between.
        let live = self.live.subscribe();
        let missed = self
            .replay
            .borrow()
            .iter()
            .filter(|e| after.is_none_or(|after| e.id > after))
            .cloned()
            .collect();
        Feed {
            missed,
            live,
            closing: self.closing.clone(),
        }
    }
}

/// Starts the events task: the sender for the observers, the API and the
/// config loop, the hub for subscribers, and the task (until `shutdown`).
pub fn start(
    shutdown: CancellationToken,
) -> (EventSender, EventHub, impl std::future::Future<Output = ()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (replay_tx, replay) = watch::channel(Arc::new(VecDeque::new()));
    let (live, _) = broadcast::channel(LIVE_BUFFER);
    let hub = EventHub {
        replay,
        live: live.clone(),
        closing: shutdown.clone(),
    };
    let task = async move {
        let mut buffer: VecDeque<Event> = VecDeque::with_capacity(REPLAY);
        let mut next_id = 1_u64;
        loop {
            let input = tokio::select! {
                () = shutdown.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => input,
                    None => break,
                },
            };
            let Input::Event(mut event) = input;
            event.id = next_id;
            // 2^64 events: never; saturating keeps it panic-free anyway.
            next_id = next_id.saturating_add(1);
            event.at = jiff::Timestamp::now().to_string();
            if buffer.len() == REPLAY {
                buffer.pop_front();
            }
            buffer.push_back(event.clone());
            replay_tx.send_replace(Arc::new(buffer.clone()));
            // No subscriber is fine.
            let _ = live.send(event);
        }
    };
    (EventSender(tx), hub, task)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests {
    use super::*;
    use crate::service::Trigger;

    #[tokio::test]
    async fn events_are_numbered_buffered_and_resumed_without_gap_or_repeat() {
        let shutdown = CancellationToken::new();
        let (sender, hub, task) = start(shutdown.clone());
        let task = tokio::spawn(task);
        sender.on_event(
            "web",
            &LifecycleEvent::Starting {
                trigger: Trigger::Syn,
            },
        );
        sender.manual("web", "hold");
        let mut first = hub.subscribe(None);
        // Wait for the two to be numbered.
        while first.missed.len() < 2 {
            tokio::task::yield_now().await;
            first = hub.subscribe(None);
        }
        assert_eq!(first.missed[0].id, 1);
        assert_eq!(first.missed[0].kind, "starting");
        assert_eq!(first.missed[0].trigger.as_deref(), Some("syn"));
        assert_eq!(first.missed[0].state, Some(StateName::Starting));
        assert_eq!(first.missed[1].action.as_deref(), Some("hold"));

        let mut resumed = hub.subscribe(Some(1));
        assert_eq!(resumed.missed.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
        sender.reload(1, 0, 2);
        let live = resumed.live.recv().await.expect("live event");
        assert_eq!((live.id, live.kind.as_str()), (3, "reload"));
        assert_eq!(
            live.action.as_deref(),
            Some("added 1, removed 0, changed 2")
        );
        let json = serde_json::to_value(&live).expect("json");
        assert!(
            json.get("service").is_none() && json.get("crash_loop").is_none(),
            "{json}"
        );

        shutdown.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn the_buffer_keeps_the_last_events_only() {
        let shutdown = CancellationToken::new();
        let (sender, hub, task) = start(shutdown.clone());
        let task = tokio::spawn(task);
        for _ in 0..REPLAY + 10 {
            sender.manual("web", "start");
        }
        let mut feed = hub.subscribe(None);
        while feed.missed.last().map(|e| e.id) != Some(u64::try_from(REPLAY + 10).unwrap_or(0)) {
            tokio::task::yield_now().await;
            feed = hub.subscribe(None);
        }
        assert_eq!(feed.missed.len(), REPLAY);
        assert_eq!(feed.missed[0].id, 11);
        shutdown.cancel();
        task.await.expect("task");
    }
}
