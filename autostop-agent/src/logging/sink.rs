//! The one thread that writes log lines. Callers hand a finished line to a
//! bounded queue and never wait: a full queue (the output is stalled) or a
//! failed write (the reader went away: EPIPE) drops the line and counts it.
//! Nothing here panics, so a broken log output cannot hurt the agent.

use std::{
    io::{self, Write},
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;

/// How often a flush retries while the queue is full.
const FLUSH_RETRY: Duration = Duration::from_millis(10);

/// Where the writer thread puts lines.
pub trait Output: Send + 'static {
    /// Writes one whole line (or journal entry).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
}

/// A byte stream (stderr, a pipe, a file): each line is one `write_all`.
pub struct Stream<W>(pub W);

impl<W: Write + Send + 'static> Output for Stream<W> {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.0.write_all(line)?;
        self.0.flush()
    }
}

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been handled.
    Flush(mpsc::Sender<()>),
}

/// The queue in front of the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    queue: SyncSender<Msg>,
    dropped: Counter,
}

impl Sink {
    /// Starts the writer thread. At most `capacity` lines wait; lines that
    /// cannot be queued or written are counted in `dropped`.
    pub fn spawn(
        mut output: Box<dyn Output>,
        capacity: usize,
        dropped: Counter,
    ) -> io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(capacity);
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("autostop-log".to_owned())
            .spawn(move || write_lines(&mut *output, &lines, &counter))?;
        Ok(Self { queue, dropped })
    }

    /// Queues a line without waiting; drops (and counts) it when the queue
    /// is full or the thread is gone.
    pub fn push(&self, line: Vec<u8>) {
        if self.queue.try_send(Msg::Line(line)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits up to `timeout` for the lines queued so far to be handled
    /// (written or dropped). False when that did not happen in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, wait) = mpsc::channel();
        let mut msg = Msg::Flush(done);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = back;
                    std::thread::sleep(FLUSH_RETRY);
                }
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

fn write_lines(output: &mut dyn Output, lines: &Receiver<Msg>, dropped: &Counter) {
    for msg in lines {
        match msg {
            Msg::Line(line) => {
                if output.write_line(&line).is_err() {
                    dropped.inc();
                }
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::File, io::Read};

    use super::*;

    /// A pipe as (read end, write end).
    fn pipe() -> (File, File) {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        (File::from(read), File::from(write))
    }

    #[test]
    fn broken_pipe_drops_and_counts_lines() {
        let (reader, writer) = pipe();
        drop(reader);
        let dropped = Counter::default();
        let sink = Sink::spawn(Box::new(Stream(writer)), 16, dropped.clone()).expect("spawn");
        for i in 0..5 {
            sink.push(format!("line {i}\n").into_bytes());
        }
        assert!(sink.flush(Duration::from_secs(5)), "flush timed out");
        assert_eq!(dropped.get(), 5, "every line hit EPIPE and was counted");
        // Still usable afterwards: no panic, no wedge.
        sink.push(b"one more\n".to_vec());
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(dropped.get(), 6);
    }

    #[test]
    fn working_pipe_gets_every_line() {
        let (mut reader, writer) = pipe();
        let dropped = Counter::default();
        let sink = Sink::spawn(Box::new(Stream(writer)), 16, dropped.clone()).expect("spawn");
        sink.push(b"a\n".to_vec());
        sink.push(b"b\n".to_vec());
        assert!(sink.flush(Duration::from_secs(5)));
        drop(sink);
        let mut got = String::new();
        reader.read_to_string(&mut got).expect("read");
        assert_eq!(got, "a\nb\n");
        assert_eq!(dropped.get(), 0);
    }

    /// An output that blocks until released: the queue fills, callers never
    /// wait, and the overflow is counted.
    struct Stalled(mpsc::Receiver<()>);

    impl Output for Stalled {
        fn write_line(&mut self, _: &[u8]) -> io::Result<()> {
            let _ = self.0.recv();
            Ok(())
        }
    }

    #[test]
    fn stalled_output_never_blocks_the_caller() {
        let (release, released) = mpsc::channel();
        let dropped = Counter::default();
        let sink = Sink::spawn(Box::new(Stalled(released)), 4, dropped.clone()).expect("spawn");
        // At most one line is taken by the (stalled) thread and four wait;
        // the rest overflow, and none of these pushes blocks.
        for _ in 0..20 {
            sink.push(b"x\n".to_vec());
        }
        assert!(dropped.get() >= 15, "dropped {}", dropped.get());
        assert!(
            !sink.flush(Duration::from_millis(50)),
            "a stalled output cannot be flushed"
        );
        // Let the thread finish (extra releases are ignored).
        for _ in 0..8 {
            let _ = release.send(());
        }
        assert!(
            sink.flush(Duration::from_secs(5)),
            "the thread never drained the queue"
        );
    }
}
