//! Process-wide shutdown: SIGINT or SIGTERM cancel one token that every task
//! watches, so the agent stops its tasks, joins them and drops its BPF links
//! and sockets in order.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Installs SIGINT/SIGTERM handlers and returns the token they cancel.
///
/// Must be called inside a tokio runtime. The handlers are installed before
/// this returns, so a signal that arrives right after start-up is not lost.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
            () = cancel.cancelled() => return,
        };
        // Cancel first: shutdown must not depend on a log line being written.
        cancel.cancel();
        tracing::info!(signal = name, "shutting down");
    });
    Ok(token)
}
