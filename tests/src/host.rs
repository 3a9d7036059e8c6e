//! A plain program of the host listening on a port: what the agent must
//! never take a port from (labels that claim it, a sleeping service whose
//! port it binds later).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// A thread of the test process answering "host-ok\n" to every connection
/// on `addr`; its socket closes when it is dropped (or [`Self::stop`]).
pub struct HostProgram {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl HostProgram {
    /// Binds `addr` (fails the test if it cannot) and serves it.
    pub fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("binding the host program");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"host-ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            addr,
        }
    }

    /// Whether one connection to its address gets its answer (not the
    /// agent, not a reset) within 3 s.
    pub fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3)) else {
            return false;
        };
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
        let mut got = String::new();
        stream.read_to_string(&mut got).is_ok() && got == "host-ok\n"
    }

    /// Stops listening: the socket is closed when this returns.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HostProgram {
    fn drop(&mut self) {
        self.halt();
    }
}
