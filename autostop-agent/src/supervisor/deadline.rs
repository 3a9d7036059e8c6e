//! The hard deadline on shutdown: once the shutdown token is cancelled, a
//! plain thread (not a tokio task: the runtime may be what hangs) gives the
//! clean-up a fixed time, then ends the process with [`EXIT_HUNG`]. The
//! kernel closes the agent's descriptors, which detaches its programs: the
//! datapath is stock again either way.

use std::{
    future::Future,
    pin::pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
    thread::Thread,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Exit status when the clean-up did not finish within the deadline.
pub const EXIT_HUNG: i32 = 70;

/// Extra time granted on top of the deadline, in milliseconds (a
/// hand-over's clean-up waits for the new agent's start and a drain).
static EXTENDED_MS: AtomicU64 = AtomicU64::new(0);

/// Grants the clean-up `by` more than its deadline (the largest grant
/// wins). Called before the shutdown starts.
pub fn extend(by: Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    EXTENDED_MS.fetch_max(ms, Ordering::SeqCst);
}

/// Starts the deadline thread.
pub fn arm(shutdown: CancellationToken, after: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("autostop-deadline".to_owned())
        .spawn(move || {
            block_on(shutdown.cancelled());
            std::thread::sleep(after);
            std::thread::sleep(Duration::from_millis(EXTENDED_MS.load(Ordering::SeqCst)));
            tracing::error!(
                event = "shutdown_hung",
                "clean-up did not finish within {after:?}; exiting now"
            );
            crate::logging::flush(Duration::from_millis(200));
            exit_now(EXIT_HUNG)
        })
        .map(drop)
}

/// Ends the process with `status` through `_exit(2)`: no destructors, no
/// atexit handlers, which is the point (they may be what hangs). nix has
/// no wrapper for `_exit`, and `std::process::exit` runs atexit handlers.
fn exit_now(status: i32) -> ! {
    // SAFETY: _exit(2) accepts any status and never returns; skipping the
    // process's clean-up is what the caller wants.
    unsafe { libc::_exit(status) }
}

/// Unparks the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread (no runtime needed).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
