//! `autostop events [--json]`: follows the agent's events stream
//! (`GET /api/events`, server-sent events) and prints each event as it
//! comes, one line each: a readable line, or the event's JSON. Ends when
//! the agent closes the stream (it stops) or on Ctrl-C.

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::{Client, ClientError};
use crate::events::Event;

/// How long the agent may take to answer the request itself.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Client {
    /// Follows the events stream, calling `print` with each event's line.
    pub async fn follow_events(
        &self,
        json: bool,
        mut print: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let addr = self.target();
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::NotRunning { addr, source })?;
        let mut request =
            format!("GET /api/events HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        let io = |e: std::io::Error| ClientError::Protocol(e.to_string());
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut lines = BufReader::new(stream).lines();
        let status = tokio::time::timeout(HEAD_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| ClientError::Protocol(format!("no answer within {HEAD_TIMEOUT:?}")))?
            .map_err(io)?
            .unwrap_or_default();
        let code = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok());
        // Skip the rest of the head.
        while let Some(line) = lines.next_line().await.map_err(io)? {
            if line.is_empty() {
                break;
            }
        }
        if code != Some(200) {
            return Err(ClientError::Refused {
                status: code.unwrap_or(0),
                detail: "the events stream was refused (a token missing?)".into(),
            });
        }
        while let Some(line) = lines.next_line().await.map_err(io)? {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if json {
                print(data);
            } else if let Ok(event) = serde_json::from_str::<Event>(data) {
                print(&readable(&event));
            }
        }
        Ok(())
    }
}

/// One event as a line: time, service, what happened and its detail.
pub fn readable(event: &Event) -> String {
    let mut detail = Vec::new();
    detail.extend(event.trigger.as_ref().map(|t| format!("trigger {t}")));
    detail.extend(event.took_s.map(|s| format!("in {s:.1}s")));
    detail.extend(event.reason.clone());
    detail.extend(event.action.clone());
    if event.crash_loop {
        detail.push("crash-loop guard latched".into());
    }
    let service = event.service.as_deref().unwrap_or("-");
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.join(", "))
    };
    format!("{}  {service:<20} {}{detail}", event.at, event.kind)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_one_line_each() {
        let event = Event {
            id: 3,
            at: "2026-11-30T07:00:01Z".into(),
            kind: "ready".into(),
            service: Some("web".into()),
            took_s: Some(1.25),
            ..Event::default()
        };
        assert_eq!(
            readable(&event),
            "2026-11-30T07:00:01Z  web                  ready (in 1.2s)"
        );
        let reload = Event {
            kind: "reload".into(),
            at: "t".into(),
            action: Some("added 1, removed 0, changed 0".into()),
            ..Event::default()
        };
        assert_eq!(
            readable(&reload),
            "t  -                    reload (added 1, removed 0, changed 0)"
        );
    }
}
