//! The kernel programs' own log lines. The sk_lookup program logs its
//! failures (no listener to hand a connection to, a full wake event ring
//! buffer, a rate limiter insert refused) with aya-log into the `AYA_LOGS`
//! ring buffer; [`KernelLog`] reads them as the agent's `tracing` events
//! under the target [`TARGET`], so `RUST_LOG=autostop::ebpf=debug` (or any
//! filter enabling `autostop`) shows them beside the agent's own lines.
//! The traffic classifier never logs: it runs on every packet.
//!
//! The kernel side skips a disabled level before writing anything:
//! [`kernel_level`] turns the filter's verdict for [`TARGET`] into
//! aya-log's `AYA_LOG_LEVEL`, a read-only global set at load, so the
//! verifier prunes the lines nobody would read. An object without the log
//! map (built before aya-log) loads without it: no kernel lines, no error.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::{unix::AsyncFd, Interest};
use tokio_util::sync::CancellationToken;
use tracing::Level;

use super::BpfError;

/// The `tracing` target of every kernel line.
pub const TARGET: &str = "autostop::ebpf";

/// aya-log's level numbers (`aya_log_common::Level`: error 1 … trace 5);
/// 0 turns every line off.
const LEVEL_OFF: u8 = 0;

/// The most verbose level the subscriber enables for [`TARGET`], as
/// aya-log's `AYA_LOG_LEVEL` byte. Asked once, before the object loads.
pub fn kernel_level() -> u8 {
    if tracing::enabled!(target: TARGET, Level::TRACE) {
        5
    } else if tracing::enabled!(target: TARGET, Level::DEBUG) {
        4
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        3
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        2
    } else if tracing::enabled!(target: TARGET, Level::ERROR) {
        1
    } else {
        LEVEL_OFF
    }
}

/// Hands aya-log's records to `tracing` under [`TARGET`]; the record's own
/// target (the kernel program that logged, e.g. `steer_lookup`) is the
/// `program` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingBridge;

impl log::Log for TracingBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match metadata.level() {
            log::Level::Error => tracing::enabled!(target: TARGET, Level::ERROR),
            log::Level::Warn => tracing::enabled!(target: TARGET, Level::WARN),
            log::Level::Info => tracing::enabled!(target: TARGET, Level::INFO),
            log::Level::Debug => tracing::enabled!(target: TARGET, Level::DEBUG),
            log::Level::Trace => tracing::enabled!(target: TARGET, Level::TRACE),
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        let program = record.target();
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, program, "{message}"),
            log::Level::Warn => tracing::warn!(target: TARGET, program, "{message}"),
            log::Level::Info => tracing::info!(target: TARGET, program, "{message}"),
            log::Level::Debug => tracing::debug!(target: TARGET, program, "{message}"),
            log::Level::Trace => tracing::trace!(target: TARGET, program, "{message}"),
        }
    }

    fn flush(&self) {}
}

/// The reader of the log map, taken out of the object before its programs
/// load (they reference the map) and registered with tokio by
/// [`KernelLog::register`].
pub struct LogMap(EbpfLogger<TracingBridge>);

impl LogMap {
    /// Takes the object's log map. `None`, logged at debug level, when the
    /// object has none or it cannot be read: kernel lines are a
    /// diagnostic, never a reason to refuse the start.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        match EbpfLogger::init_with_logger(ebpf, TracingBridge) {
            Ok(logger) => Some(Self(logger)),
            Err(aya_log::Error::MapNotFound) => {
                tracing::debug!("the kernel object has no log map; no kernel log lines");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "kernel log lines are off");
                None
            }
        }
    }
}

/// The kernel's log lines as a task: reads the log map whenever the kernel
/// writes to it.
pub struct KernelLog {
    /// The log map's reader, registered with tokio's reactor.
    logger: AsyncFd<EbpfLogger<TracingBridge>>,
}

impl KernelLog {
    /// Registers `map` with tokio's reactor (so it must be called inside a
    /// tokio runtime).
    pub fn register(map: LogMap) -> Result<Self, BpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BpfError::Io {
                what: "registering the kernel log map",
                source: std::io::Error::other("not inside a tokio runtime"),
            });
        }
        // SAFETY: the logger owns the ring buffer's map fd (through its
        // MapData) and returns that same fd from as_raw_fd for as long as
        // it lives; the AsyncFd owns the logger, so the fd stays open while
        // registered.
        let logger = unsafe { AsyncFd::register_with_interest(map.0, Interest::READABLE) }
            .map_err(|error| BpfError::Io {
                what: "registering the kernel log map",
                source: error.into(),
            })?;
        Ok(Self { logger })
    }

    /// Logs what the kernel writes until `shutdown`, then what is left. If
    /// waiting fails it says so once and waits for `shutdown` (a diagnostic
    /// channel going quiet must not stop the agent).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                ready = self.logger.readable_mut() => match ready {
                    Ok(mut guard) => {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "kernel log lines stop here");
                        shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        self.logger.get_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex, PoisonError},
    };

    use log::Log as _;
    use tracing_subscriber::EnvFilter;

    use super::*;

    /// What a fmt subscriber wrote.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    /// Runs `f` under a fmt subscriber with `filter`; returns its output.
    fn under(filter: &str, f: impl FnOnce()) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        capture.text()
    }

    /// Logs one record as aya-log would hand it over.
    fn kernel_record(level: log::Level, port: u16) {
        TracingBridge.log(
            &log::Record::builder()
                .level(level)
                .target("steer_lookup")
                .module_path_static(Some("autostop_ebpf::log"))
                .file_static(Some("src/log.rs"))
                .line(Some(170))
                .args(format_args!("port {port}: no listener in slot 0"))
                .build(),
        );
    }

    #[test]
    fn kernel_records_become_events_of_the_ebpf_target_at_their_level() {
        let out = under("autostop=debug", || {
            kernel_record(log::Level::Warn, 9500);
            kernel_record(log::Level::Debug, 9501);
            kernel_record(log::Level::Trace, 9502);
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains(" WARN autostop::ebpf: port 9500: no listener in slot 0"),
            "{out}"
        );
        assert!(lines[0].contains("program=\"steer_lookup\""), "{out}");
        assert!(
            lines[1].contains(" DEBUG autostop::ebpf: port 9501"),
            "{out}"
        );

        // Another target's filter does not let them through; the record's
        // own target is not what filters.
        let out = under("info,autostop::ebpf=error,steer_lookup=trace", || {
            kernel_record(log::Level::Warn, 9503);
        });
        assert_eq!(out, "", "{out}");
    }

    #[test]
    fn the_bridge_reports_enabled_levels_of_the_ebpf_target() {
        let metadata = |level| log::Metadata::builder().level(level).build();
        under("autostop::ebpf=info", || {
            assert!(TracingBridge.enabled(&metadata(log::Level::Warn)));
            assert!(TracingBridge.enabled(&metadata(log::Level::Info)));
            assert!(!TracingBridge.enabled(&metadata(log::Level::Debug)));
        });
    }

    #[test]
    fn the_kernel_level_follows_the_filter_for_the_ebpf_target() {
        for (filter, level) in [
            ("off", LEVEL_OFF),
            ("error", 1),
            ("warn", 2),
            ("info", 3),
            ("autostop=debug", 4),
            ("warn,autostop::ebpf=debug", 4),
            ("autostop::ebpf=trace", 5),
            ("debug,autostop::ebpf=off", LEVEL_OFF),
        ] {
            let mut got = None;
            under(filter, || got = Some(kernel_level()));
            assert_eq!(got, Some(level), "RUST_LOG={filter}");
        }
        // No subscriber at all (tools, in-process tests): nothing is read,
        // so nothing is written.
        assert_eq!(kernel_level(), LEVEL_OFF);
    }
}
