//! Tiny HTTP/1.0 and echo clients for the agent tests (one request per
//! connection, bounded in time).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

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
    http_request(addr, "GET", path, "", timeout)
}

/// `METHOD path` with no body and `extra` header lines (each ending in
/// CRLF), bounded by `timeout`; returns status and body.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    // One write: a request split by Nagle is not what clients send.
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n{length}{extra}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response from {addr}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Sends `payload` on a fresh connection, half-closes, and reads everything
/// back.
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

/// `POST path` with an empty body over HTTP/1.0; returns status and body.
pub fn http_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_request(addr, "POST", path, "", Duration::from_secs(10))
}
