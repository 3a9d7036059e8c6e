//! Logging that cannot hurt the agent. `tracing`'s fmt layer formats each
//! event into a buffer; the finished line goes to a bounded queue in front
//! of one writer thread ([`sink`]), which writes it to journald's native
//! socket when systemd runs us ([`journal`]) or to stderr otherwise. A line
//! that cannot be queued (output stalled) or written (reader gone: EPIPE)
//! is dropped and counted in `autostop_log_write_errors_total`; nothing
//! waits for the log and nothing panics over it. (tracing-subscriber's own
//! writer reports a failed write with `eprintln!`, which panics on EPIPE.)

pub mod journal;
pub mod sink;

use std::{
    io::{self, IsTerminal as _, Write},
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tracing::Metadata;
use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

use sink::{Sink, Stream};

/// Lines that may wait for the writer thread; beyond that they are dropped.
const QUEUE_LINES: usize = 4096;

/// Lines dropped because they could not be queued or written.
static WRITE_ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// The installed sink, for [`flush`].
static SINK: OnceLock<Sink> = OnceLock::new();

/// The process-wide count of dropped log lines (registered in `/metrics`
/// as `autostop_log_write_errors_total`).
pub fn write_errors() -> &'static Counter {
    &WRITE_ERRORS
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// journald's native protocol.
    Journal,
    /// Plain lines on stderr.
    Stderr,
}

/// Installs the global subscriber (filter from `RUST_LOG`, `info` by
/// default). Returns where logs go, or the error that left the process
/// without logging (the agent runs regardless).
pub fn init() -> io::Result<Destination> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = journal::stderr_is_journal_stream()
        .then(journal::Journal::connect)
        .and_then(Result::ok);
    let destination = if journal.is_some() {
        Destination::Journal
    } else {
        Destination::Stderr
    };
    let output: Box<dyn sink::Output> = match journal {
        Some(journal) => Box::new(journal),
        None => Box::new(Stream(io::stderr())),
    };
    let sink = Sink::spawn(output, QUEUE_LINES, write_errors().clone())?;
    let writer = LineWriter {
        sink: sink.clone(),
        destination,
    };
    let _ = SINK.set(sink);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false);
    let installed = match destination {
        // journald stamps time and priority itself; the target is a field.
        Destination::Journal => builder
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .try_init(),
        // Colours only on a terminal: log files get plain text.
        Destination::Stderr => builder.with_ansi(io::stderr().is_terminal()).try_init(),
    };
    installed.map_err(|e| io::Error::other(e.to_string()))?;
    Ok(destination)
}

/// Waits up to `timeout` for the lines logged so far to be written (at
/// exit). False if logging is not set up or the output did not keep up.
pub fn flush(timeout: Duration) -> bool {
    SINK.get().is_some_and(|sink| sink.flush(timeout))
}

/// The fmt layer's writer: one buffer per event, queued whole when dropped.
pub struct LineWriter {
    sink: Sink,
    destination: Destination,
}

impl LineWriter {
    /// A writer into `sink` framing lines for `destination`.
    pub fn new(sink: Sink, destination: Destination) -> Self {
        Self { sink, destination }
    }
}

/// One event's bytes on their way to the sink.
pub struct Line<'a> {
    sink: &'a Sink,
    /// journald fields that precede the message, in journal mode.
    header: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        let header = (self.destination == Destination::Journal)
            .then(|| journal::header(&tracing::Level::INFO, "autostop", None, None));
        Line {
            sink: &self.sink,
            header,
            buf: Vec::with_capacity(256),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        let header = (self.destination == Destination::Journal)
            .then(|| journal::header(meta.level(), meta.target(), meta.file(), meta.line()));
        Line {
            sink: &self.sink,
            header,
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let line = match self.header.take() {
            Some(header) => journal::entry(header, &buf),
            None => buf,
        };
        self.sink.push(line);
    }
}

/// Writes `text` to stdout, ignoring failures (a closed pipe must not
/// panic the CLI as `print!` would). Control characters are shown escaped
/// (see [`printable`]).
pub fn print_out(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(printable(text).as_bytes());
    let _ = out.flush();
}

/// Writes `text` to stderr, ignoring failures (unlike `eprint!`), control
/// characters escaped (see [`printable`]).
pub fn print_err(text: &str) {
    let _ = io::stderr().lock().write_all(printable(text).as_bytes());
}

/// `text` with every control character but line feed and tab written as
/// `\u{..}`: what the CLI prints comes from the agent, which got much of
/// it from labels, clients and containers, and a raw escape sequence would
/// let any of them drive the operator's terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let raw = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(raw) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(16));
    for c in text.chars() {
        if raw(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #25 item 5: names from labels reached `autostop status` raw.
    #[test]
    fn control_characters_are_never_printed_raw() {
        assert_eq!(printable("web\tok\n"), "web\tok\n");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("\r\u{7f}\u{9b}é"), "\\u{d}\\u{7f}\\u{9b}é");
    }

    #[test]
    fn a_dead_reader_costs_counted_lines_not_a_panic() {
        // The fmt layer writing through our writer into a pipe nobody reads.
        let (reader, writer) = nix::unistd::pipe().expect("pipe");
        let (reader, writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        drop(reader);
        let dropped = Counter::default();
        let sink = Sink::spawn(Box::new(Stream(writer)), 64, dropped.clone()).expect("sink");
        let subscriber = tracing_subscriber::fmt()
            .with_writer(LineWriter::new(sink.clone(), Destination::Stderr))
            .log_internal_errors(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..3 {
                tracing::info!(i, "into a closed pipe");
            }
        });
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn journal_mode_frames_one_entry_per_event() {
        struct Capture(std::sync::mpsc::Sender<Vec<u8>>);
        impl sink::Output for Capture {
            fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
                let _ = self.0.send(line.to_vec());
                Ok(())
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Sink::spawn(Box::new(Capture(tx)), 64, Counter::default()).expect("sink");
        let subscriber = tracing_subscriber::fmt()
            .with_writer(LineWriter::new(sink.clone(), Destination::Journal))
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(service = "web", "slow start");
        });
        assert!(sink.flush(Duration::from_secs(5)));
        let entry = String::from_utf8(rx.try_recv().expect("one entry")).expect("utf-8");
        assert!(
            entry.starts_with("PRIORITY=4\nSYSLOG_IDENTIFIER=autostop\n"),
            "{entry}"
        );
        assert!(entry.contains("\nCODE_LINE="), "{entry}");
        assert!(
            entry.ends_with("MESSAGE=slow start service=\"web\"\n"),
            "{entry}"
        );
    }
}
