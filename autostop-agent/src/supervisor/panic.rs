//! The process-wide panic hook of `autostop run`: any panic, on any thread,
//! is fatal (see the policy in [`super`]). The hook cancels the shutdown
//! token first, then logs through the lossy log queue (never blocking on a
//! stalled or closed stderr as the default hook's write would), and records
//! the panic so the agent exits non-zero after its clean-up.

use std::{backtrace::Backtrace, sync::OnceLock};

use tokio_util::sync::CancellationToken;

/// The first panic of the process, as logged.
static FATAL_PANIC: OnceLock<String> = OnceLock::new();

/// Installs the hook; `shutdown` is cancelled by the first panic.
pub fn install_hook(shutdown: CancellationToken) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info.payload_as_str().unwrap_or("(non-string payload)");
        let what = format!("panic in thread {thread} at {location}: {message}");
        let _ = FATAL_PANIC.set(what.clone());
        // Before anything that could block or fail.
        shutdown.cancel();
        tracing::error!(
            event = "panic",
            backtrace = %Backtrace::capture(),
            "{what}; any panic is fatal: shutting down"
        );
    }));
}

/// The first panic seen by the hook, if any.
pub fn fatal_panic() -> Option<String> {
    FATAL_PANIC.get().cloned()
}
