//! A small HTTP/1.1 load generator for `cargo xtask bench`: a fixed number
//! of client threads, each on one keep-alive connection, sending `GET /`
//! back to back for a fixed time and recording every request's latency
//! (send to last body byte). A first warm-up period is not recorded.
//! Responses must carry `Content-Length` (nginx passes busybox httpd's on).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// What one load run measured.
pub struct LoadResult {
    /// Recorded (post-warm-up) requests answered with 200.
    pub requests: u64,
    /// Failed requests (connection errors, non-200), reconnected after.
    pub errors: u64,
    /// Length of the recorded period, in seconds.
    pub seconds: f64,
    /// Latency of every recorded request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// Answered requests per second over the recorded period.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Loads `addr` with `concurrency` connections for `warmup` (not recorded)
/// then `duration` (recorded).
pub fn run(
    addr: SocketAddr,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now();
    let record_from = start + warmup;
    let until = record_from + duration;
    let clients: Vec<_> = (0..concurrency)
        .map(|_| thread::spawn(move || client(addr, record_from, until)))
        .collect();
    let mut result = LoadResult {
        requests: 0,
        errors: 0,
        seconds: duration.as_secs_f64(),
        latencies_us: Vec::new(),
    };
    for handle in clients {
        let (latencies, errors) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a load client panicked"))?;
        result.requests += latencies.len() as u64;
        result.errors += errors;
        result.latencies_us.extend(latencies);
    }
    result.latencies_us.sort_unstable();
    if result.requests == 0 {
        bail!("no request to {addr} was answered");
    }
    Ok(result)
}

/// One client: returns its recorded latencies (µs) and error count.
fn client(addr: SocketAddr, record_from: Instant, until: Instant) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stream: Option<TcpStream> = None;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let conn = match stream.take() {
            Some(s) => s,
            None => match connect(addr) {
                Ok(s) => s,
                Err(_) => {
                    errors += u64::from(now >= record_from);
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match request(&conn, &mut buf) {
            Ok(keep_alive) => {
                let done = Instant::now();
                if sent >= record_from && done <= until {
                    let us = done.duration_since(sent).as_micros();
                    latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                if keep_alive {
                    stream = Some(conn);
                }
            }
            Err(_) => errors += u64::from(sent >= record_from),
        }
    }
    (latencies, errors)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends one `GET /` and reads the whole response; `Ok(keep_alive)`.
fn request(mut stream: &TcpStream, buf: &mut [u8]) -> anyhow::Result<bool> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: autostop-bench\r\n\r\n")?;
    let mut filled = 0;
    let (head_len, content_length, close) = loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            bail!("closed before the response head");
        }
        filled += n;
        if let Some(head) = parse_head(&buf[..filled])? {
            break head;
        }
        if filled == buf.len() {
            bail!("response head too large");
        }
    };
    let mut body = filled - head_len;
    while body < content_length {
        let n = stream.read(buf)?;
        if n == 0 {
            bail!("closed inside the body");
        }
        body += n;
    }
    Ok(!close)
}

/// `(head length, Content-Length, Connection: close)` once the head is
/// complete; an error for anything but a 200 with a length.
fn parse_head(data: &[u8]) -> anyhow::Result<Option<(usize, usize, bool)>> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&data[..end]).context("response head")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected status {status:?}");
    }
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.context("a response without Content-Length")?;
    Ok(Some((end + 4, length, close)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_keep_alive_head() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 11\r\n\r\ncold bench\n";
        assert_eq!(
            parse_head(head).unwrap(),
            Some((head.len() - 11, 11, false))
        );
    }

    #[test]
    fn sees_connection_close_and_partial_heads() {
        let head = b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), Some((head.len(), 0, true)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
    }

    #[test]
    fn rejects_errors_and_missing_lengths() {
        assert!(parse_head(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn quantiles_come_from_sorted_samples() {
        let result = LoadResult {
            requests: 4,
            errors: 0,
            seconds: 2.0,
            latencies_us: vec![1000, 2000, 3000, 4000],
        };
        assert_eq!(result.rps(), 2.0);
        assert_eq!(result.latency_ms(0.0), 1.0);
        assert_eq!(result.latency_ms(1.0), 4.0);
    }
}
