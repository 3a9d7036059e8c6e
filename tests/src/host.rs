//! A plain program of the host listening on a port: what the agent must
//! never take a port from (labels that claim it, a sleeping service whose
//! port it binds later).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::serve_thread::ServeThread;

/// A thread of the test process answering "host-ok\n" to every connection
/// on `addr`; its socket closes when it is dropped (or [`Self::stop`]).
pub struct HostProgram {
    server: ServeThread,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl HostProgram {
    /// Binds `addr` (fails the test if it cannot) and serves it.
    pub fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("binding the host program");
        let server = ServeThread::spawn(listener, |mut stream| {
            let _ = stream.write_all(b"host-ok\n");
        });
        Self { server, addr }
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
        self.server.stop();
    }
}
