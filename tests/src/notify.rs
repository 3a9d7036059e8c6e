//! A fake systemd notify socket: a Unix datagram socket the test binds (its
//! path goes to the agent as `NOTIFY_SOCKET`) and a thread that records
//! every datagram with the time it arrived. Removed on drop.

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// One datagram received, as text, with its arrival time.
#[derive(Debug, Clone)]
pub struct Notice {
    /// When it arrived.
    pub at: Instant,
    /// Its text (`KEY=value` lines).
    pub text: String,
}

/// The socket and what it received.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    /// The socket's path (`NOTIFY_SOCKET`).
    pub path: PathBuf,
    received: Arc<Mutex<Vec<Notice>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    /// Binds a fresh socket and starts recording.
    pub fn bind() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, done) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    eprintln!("[notify] {}", text.trim_end().replace('\n', " | "));
                    sink.lock().expect("notice lock").push(Notice {
                        at: Instant::now(),
                        text,
                    });
                }
            }
        });
        Self {
            _dir: dir,
            path,
            received,
            stop,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Notice> {
        self.received.lock().expect("notice lock").clone()
    }

    /// Waits for a datagram with a line equal to `line`; returns it.
    pub fn wait_for(&self, line: &str, timeout: Duration) -> Notice {
        let mut found = None;
        let ok = crate::eventually(timeout, || {
            found = self
                .received()
                .into_iter()
                .find(|n| n.text.lines().any(|l| l == line));
            found.is_some()
        });
        assert!(
            ok,
            "no {line:?} on the notify socket within {timeout:?}; got {:?}",
            self.received()
        );
        found.expect("found")
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
