//! Fault injection for the liveness tests, compiled only with the cargo
//! feature `test-hooks` (off by default; `cargo xtask test` builds a
//! separate `autostop-test-hooks` binary with it, release and dist builds
//! never have it). Without the feature every hook is an empty function and
//! the variables below are never read.
//!
//! - `AUTOSTOP_TEST_PANIC=service`: a service's actor panics when it
//!   begins a start; `=api`: the status API's action handler panics.
//! - `AUTOSTOP_TEST_FREEZE=DELAY_MS:DURATION_MS`: `DELAY_MS` after
//!   `READY=1`, every worker of the runtime is kept busy for `DURATION_MS`
//!   (a wedged runtime, as seen by the watchdog).
//! - `AUTOSTOP_TEST_HANG=cleanup`: the shutdown's clean-up blocks for an
//!   hour (the hard deadline must end the process).
//! - `AUTOSTOP_TEST_TAKEOVER_PAUSE=offered|stopped`: a new agent taking
//!   over blocks for an hour once offered the sockets, or once the old
//!   agent stopped (a test kills it there).

/// Where a panic can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A service actor beginning a start.
    Service,
    /// The status API's `POST /api/services/{name}/{action}` handler.
    Api,
}

/// Panics if `AUTOSTOP_TEST_PANIC` names `site` (test-hooks builds only).
#[inline]
pub fn panic_point(site: Site) {
    #[cfg(feature = "test-hooks")]
    imp::panic_point(site);
    #[cfg(not(feature = "test-hooks"))]
    let _ = site;
}

/// Blocks the calling thread for an hour if `AUTOSTOP_TEST_HANG=cleanup`
/// (test-hooks builds only); called where the shutdown's clean-up begins.
#[inline]
pub fn cleanup_hang_point() {
    #[cfg(feature = "test-hooks")]
    imp::cleanup_hang_point();
}

/// Where a take-over can be paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// The old agent offered its sockets; nothing stopped yet.
    Offered,
    /// The old agent stopped and passed what it held.
    Stopped,
}

/// Blocks the calling (blocking) thread for an hour if
/// `AUTOSTOP_TEST_TAKEOVER_PAUSE` names `point` (test-hooks builds only).
#[inline]
pub fn takeover_pause_point(point: Takeover) {
    #[cfg(feature = "test-hooks")]
    imp::takeover_pause_point(point);
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}

/// Starts the runtime freeze `AUTOSTOP_TEST_FREEZE` asks for (test-hooks
/// builds only); called once the agent is ready.
#[inline]
pub fn after_ready() {
    #[cfg(feature = "test-hooks")]
    imp::freeze_later();
}

/// Logs which hooks are armed (test-hooks builds only), so a test can tell
/// it runs the right binary.
#[inline]
pub fn announce() {
    #[cfg(feature = "test-hooks")]
    imp::announce();
}

#[cfg(feature = "test-hooks")]
mod imp {
    use std::time::{Duration, Instant};

    use super::{Site, Takeover};

    fn takeover_pause() -> Option<Takeover> {
        match std::env::var("AUTOSTOP_TEST_TAKEOVER_PAUSE").ok()?.as_str() {
            "offered" => Some(Takeover::Offered),
            "stopped" => Some(Takeover::Stopped),
            _ => None,
        }
    }

    pub(super) fn takeover_pause_point(point: Takeover) {
        if takeover_pause() == Some(point) {
            tracing::warn!(?point, "test hook: the take-over pauses");
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    fn armed_panic() -> Option<Site> {
        match std::env::var("AUTOSTOP_TEST_PANIC").ok()?.as_str() {
            "service" => Some(Site::Service),
            "api" => Some(Site::Api),
            _ => None,
        }
    }

    #[allow(clippy::panic)]
    pub(super) fn panic_point(site: Site) {
        if armed_panic() == Some(site) {
            panic!("test hook: injected panic at {site:?}");
        }
    }

    fn hang_armed() -> bool {
        std::env::var("AUTOSTOP_TEST_HANG").is_ok_and(|v| v == "cleanup")
    }

    pub(super) fn cleanup_hang_point() {
        if hang_armed() {
            tracing::warn!("test hook: the clean-up hangs");
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    fn freeze_plan() -> Option<(Duration, Duration)> {
        let value = std::env::var("AUTOSTOP_TEST_FREEZE").ok()?;
        let (delay, duration) = value.split_once(':')?;
        Some((
            Duration::from_millis(delay.trim().parse().ok()?),
            Duration::from_millis(duration.trim().parse().ok()?),
        ))
    }

    pub(super) fn announce() {
        tracing::warn!(
            panic = ?armed_panic(),
            freeze = ?freeze_plan(),
            hang = hang_armed(),
            takeover_pause = ?takeover_pause(),
            "test hooks compiled in (feature test-hooks): never use this binary in production"
        );
    }

    /// From a plain thread: after the delay, queue twice as many blocking
    /// tasks as the runtime has workers. Spawned from outside the runtime
    /// they land in the shared queue, every idle worker takes one, and each
    /// sleeps until the same end instant (later ones return at once).
    pub(super) fn freeze_later() {
        let Some((delay, duration)) = freeze_plan() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("test-freeze".to_owned())
            .spawn(move || {
                std::thread::sleep(delay);
                let until = Instant::now() + duration;
                tracing::warn!(?duration, "test hook: freezing every runtime worker");
                for _ in 0..runtime.metrics().num_workers() * 2 {
                    runtime.spawn(async move {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    });
                }
            });
    }
}
