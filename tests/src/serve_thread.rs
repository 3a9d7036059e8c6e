//! A thread of the test process that accepts connections on a listener and
//! hands each to a handler until it is stopped: what the small test
//! servers (a host program on a port, a page that frames the dashboard)
//! are built on.

use std::{
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// The accepting thread; stopped (and its listener closed) on drop.
pub struct ServeThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServeThread {
    /// Accepts on `listener` (made non-blocking), calling `handle` for each
    /// connection on the thread.
    pub fn spawn(listener: TcpListener, handle: impl Fn(TcpStream) + Send + 'static) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => handle(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting: the listener is closed when this returns.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServeThread {
    fn drop(&mut self) {
        self.stop();
    }
}
