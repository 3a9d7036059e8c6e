//! The fail-fast decision: whether a steered connection is worth holding.
//!
//! A connection is held while a start is under way or one of its own wake
//! will begin. Two readings of the service's status end that:
//!
//! - [`refusal`], on arrival: the service is `failed` and a wake would not
//!   start it now (the crash-loop guard is latched, or a retry backoff has
//!   not elapsed). Holding would only keep the client until
//!   `start_timeout`, so it is answered at once: 503 for HTTP/1 (with
//!   `Retry-After` for a backoff), a close for anything else. Its wake is
//!   still sent during a backoff, so the retry happens when it is due.
//! - [`verdict`], while held: `ready` forwards it; `failed` entered after
//!   it arrived answers it (502 for HTTP/1, a close otherwise).
//!
//! Both are pure functions of the published status and the clock, so the
//! unit tests run them on tokio's paused clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::service::{ServiceState, ServiceStatus, StartBlock};

/// Why a connection is answered at once instead of being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The crash-loop guard is latched: only an operator starts it again
    /// (`autostop start NAME`, a config change).
    CrashLoop,
    /// A retry backoff forbids a start for `retry_in` more.
    Backoff {
        /// Time until the retry is allowed.
        retry_in: Duration,
    },
}

impl Refusal {
    /// The `Retry-After` to send: the backoff's remaining seconds (rounded
    /// up); none for a latched guard, whose end nobody can predict.
    pub(super) fn retry_after_s(self) -> Option<u64> {
        match self {
            Refusal::CrashLoop => None,
            Refusal::Backoff { retry_in } => {
                let whole = retry_in.as_secs();
                Some(if retry_in.subsec_nanos() > 0 {
                    whole + 1
                } else {
                    whole
                })
            }
        }
    }

    /// Whether a wake is still worth sending (it schedules the retry).
    pub(super) fn wakes(self) -> bool {
        matches!(self, Refusal::Backoff { .. })
    }

    /// Label for logs.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::CrashLoop => "crash_loop",
            Refusal::Backoff { .. } => "backoff",
        }
    }
}

/// Decides for a connection that arrived at `arrived` and is about to be
/// held at `now`: `Some` when no start will happen now. A failure that
/// began after the connection arrived is not a refusal: [`verdict`]
/// answers it as a failed start.
pub(super) fn refusal(status: &ServiceStatus, arrived: Instant, now: Instant) -> Option<Refusal> {
    if !matches!(status.state, ServiceState::Failed { .. }) || status.since >= arrived {
        return None;
    }
    match status.start_block? {
        StartBlock::CrashLoop => Some(Refusal::CrashLoop),
        StartBlock::Backoff { retry_at } if retry_at > now => Some(Refusal::Backoff {
            retry_in: retry_at - now,
        }),
        StartBlock::Backoff { .. } => None,
    }
}

/// What the status says to a connection held since `arrived`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Keep waiting.
    Wait,
    /// Forward it.
    Ready,
    /// The start failed after it arrived; the reason is for the log only.
    Failed(String),
}

/// Reads `status` for a connection held since `arrived`.
pub(super) fn verdict(status: &ServiceStatus, arrived: Instant) -> Verdict {
    if status.upstream_ready {
        // Ready, or ready and handing its ports back to the stock path.
        return Verdict::Ready;
    }
    match &status.state {
        ServiceState::Ready => Verdict::Ready,
        ServiceState::Failed { reason } if status.since >= arrived => {
            Verdict::Failed(reason.clone())
        }
        _ => Verdict::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceSettings;

    fn status(state: ServiceState, since: Instant, block: Option<StartBlock>) -> ServiceStatus {
        let mut s = ServiceStatus::initial(&ServiceSettings::default(), since);
        s.state = state;
        s.start_block = block;
        s
    }

    fn failed() -> ServiceState {
        ServiceState::Failed {
            reason: "container web-1 exited (1)".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_service_refuses_while_latched_or_backing_off() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        let latched = status(failed(), t0, Some(StartBlock::CrashLoop));
        assert_eq!(refusal(&latched, now, now), Some(Refusal::CrashLoop));
        assert_eq!(Refusal::CrashLoop.retry_after_s(), None);
        assert!(!Refusal::CrashLoop.wakes());

        let retry_at = now + Duration::from_millis(1500);
        let backoff = status(failed(), t0, Some(StartBlock::Backoff { retry_at }));
        let got = refusal(&backoff, now, now).expect("backoff refuses");
        assert_eq!(
            got,
            Refusal::Backoff {
                retry_in: Duration::from_millis(1500)
            }
        );
        assert_eq!(got.retry_after_s(), Some(2), "rounded up");
        assert!(got.wakes(), "the wake schedules the retry");

        // Once the backoff has elapsed a wake starts it: hold.
        tokio::time::advance(Duration::from_millis(1500)).await;
        let later = Instant::now();
        assert_eq!(refusal(&backoff, later, later), None);
        // A failure without a block (a stop that failed) holds too.
        assert_eq!(refusal(&status(failed(), t0, None), now, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn other_states_and_fresh_failures_are_held() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        for state in [
            ServiceState::Stopped,
            ServiceState::Starting,
            ServiceState::Ready,
            ServiceState::Stopping,
            ServiceState::Unknown,
        ] {
            // The block is only published while failed; be strict anyway.
            let s = status(state.clone(), t0, Some(StartBlock::CrashLoop));
            assert_eq!(refusal(&s, now, now), None, "{state:?}");
        }
        // Failed after the connection arrived: the verdict answers it.
        let fresh = status(failed(), now, Some(StartBlock::CrashLoop));
        assert_eq!(refusal(&fresh, t0, now), None);
        assert!(matches!(verdict(&fresh, t0), Verdict::Failed(r) if r.contains("web-1")));
    }

    #[tokio::test(start_paused = true)]
    async fn verdict_waits_for_ready_or_a_new_failure() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let arrived = Instant::now();
        assert_eq!(
            verdict(&status(ServiceState::Starting, t0, None), arrived),
            Verdict::Wait
        );
        assert_eq!(
            verdict(&status(ServiceState::Ready, t0, None), arrived),
            Verdict::Ready
        );
        assert_eq!(
            verdict(&status(failed(), t0, None), arrived),
            Verdict::Wait,
            "an old failure: the connection's wake retries"
        );
        assert!(matches!(
            verdict(&status(failed(), arrived, None), arrived),
            Verdict::Failed(_)
        ));
    }
}
