//! Delivery of alert events to `agent.alert_webhook`: a JSON POST over
//! plain HTTP/1.1 with a few bounded retries, from a task of its own so a
//! slow or dead receiver never holds up a state machine.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// Attempts per event.
const ATTEMPTS: u32 = 3;
/// Time allowed for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to post: `http://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub authority: String,
    /// Host header value.
    pub host: String,
    /// Request path.
    pub path: String,
}

impl HttpTarget {
    /// Parses a plain-http URL; `None` for anything else.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty()
            || host.contains(char::is_whitespace)
            || path.contains(char::is_whitespace)
        {
            return None;
        }
        let authority = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Some(Self {
            authority,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Posts every event from `events` until `shutdown`.
pub async fn deliver(
    target: HttpTarget,
    mut events: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let body = tokio::select! {
            () = shutdown.cancelled() => return,
            body = events.recv() => match body { Some(body) => body, None => return },
        };
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&target, &body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => break,
                outcome => {
                    tracing::warn!(attempt, ?outcome, url = %target.host, "alert webhook delivery failed");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
            }
        }
    }
}

/// One POST; returns the response status code.
async fn post(target: &HttpTarget, body: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(&target.authority).await?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         User-Agent: autostop\r\nConnection: close\r\n\r\n{body}",
        target.path,
        target.host,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&response) {
        Ok(_) => parsed
            .code
            .ok_or_else(|| std::io::Error::other("no status code")),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_http_urls_only() {
        let t = HttpTarget::parse("http://hooks.local:8080/alert?x=1").expect("valid");
        assert_eq!(t.authority, "hooks.local:8080");
        assert_eq!(t.path, "/alert?x=1");
        let t = HttpTarget::parse("http://127.0.0.1").expect("valid");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:80", "/")
        );
        assert!(HttpTarget::parse("https://x/y").is_none());
        assert!(HttpTarget::parse("http:///y").is_none());
    }

    #[tokio::test]
    async fn posts_json_and_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let target = HttpTarget::parse(&format!("http://{addr}/hook")).expect("url");
        let status = post(&target, r#"{"event":"start_failed"}"#)
            .await
            .expect("post");
        assert_eq!(status, 204);
        let request = server.await.expect("server");
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(
            request.ends_with(r#"{"event":"start_failed"}"#),
            "{request}"
        );
    }
}
