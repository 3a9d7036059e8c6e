//! A page on another loopback origin that frames a target URL, as a
//! clickjacking page would, beside a control frame of its own: served by a
//! thread on 127.0.0.1 (a local page, so Chromium's local-network checks do
//! not refuse the frame before the target's own headers can). `/` is the
//! page (frame 0: `/control`, titled "control"; frame 1: the target).
//! Stopped on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::serve_thread::ServeThread;

/// The framing page's server.
pub struct FramingPage {
    /// Where it listens (`http://ADDR/` is the page).
    pub addr: SocketAddr,
    _server: ServeThread,
}

impl FramingPage {
    /// Serves a page framing `target`.
    pub fn serve(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the framing page");
        let addr = listener.local_addr().expect("local addr");
        let page = format!(
            "<!DOCTYPE html><title>framing</title>\
             <iframe src=\"/control\"></iframe><iframe src=\"{target}\"></iframe>"
        );
        let server = ServeThread::spawn(listener, move |stream| answer(stream, &page));
        Self {
            addr,
            _server: server,
        }
    }
}

/// Answers one request: the control document for `/control`, else `page`.
fn answer(mut stream: TcpStream, page: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let body = if head.starts_with(b"GET /control ") {
        "<!DOCTYPE html><title>control</title>"
    } else {
        page
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
