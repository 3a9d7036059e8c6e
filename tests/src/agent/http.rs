//! Tiny HTTP/1.0 and echo clients for the agent tests (one request per
//! connection, bounded in time), asking as curl does (`Accept: */*`): a
//! cold-start listener holds such a request rather than answering it with
//! a wait page. Requests go through `autostop_fixtures::http`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use autostop_fixtures::http::{self, Request, Version};

/// `GET path` over HTTP/1.0; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_get_timeout(addr, path, Duration::from_secs(30))
}

/// `GET path` with a bound on connecting and on the whole exchange.
pub fn http_get_timeout(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    curl_like(addr, "GET", path, timeout)
}

/// `POST path` with an empty body over HTTP/1.0; returns status and body.
pub fn http_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    curl_like(addr, "POST", path, Duration::from_secs(10))
}

/// `METHOD path` with curl's `User-Agent` and `Accept`, no body.
fn curl_like(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let request = Request {
        version: Version::Http10,
        headers: &[("User-Agent", "curl/8"), ("Accept", "*/*")],
        ..Request::new(method, path)
    };
    let r = http::request(addr, &request, timeout)
        .map_err(|e| format!("{method} {path} on {addr}: {e}"))?;
    Ok((r.status, r.text()))
}

/// Sends `payload` on a fresh connection and reads as many bytes back.
pub fn echo_roundtrip(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let timeout = Duration::from_secs(30);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream
        .write_all(payload)
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok(back)
}
