//! The complete HTTP/1.1 responses the agent writes on a steered connection
//! while a service sleeps: the wait page (503 + Retry-After), the status
//! JSON the page polls, and error replies for starts that failed, cannot
//! happen now or timed out. Every response closes the connection, so the
//! next request opens a fresh one that reaches the app once it is up, and
//! none may be cached.
//!
//! These go to anonymous clients: they carry the fixed texts below, never
//! a container name, compose path or Docker error (those stay in the logs
//! and the authenticated status API).

use super::theme::PageState;
use crate::progress::PublicStep;

/// What a visitor is told when a start failed or cannot happen now (error
/// replies, the wait page and its status poll).
pub const PUBLIC_FAILURE: &str =
    "The service could not be started. The cause has been logged for the administrator.";
/// What a visitor is told when a start took longer than its timeout.
pub const PUBLIC_TIMEOUT: &str = "The service did not start in time. Please try again later.";

/// Status of an error reply for a start that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 502: the start failed while the client was held.
    BadGateway,
    /// 503: no start will happen now (crash-loop guard latched, or a retry
    /// backoff pending), so the client is answered at once.
    ServiceUnavailable,
    /// 504: the service did not become ready within its start timeout.
    GatewayTimeout,
}

impl ErrorStatus {
    fn line(self) -> &'static str {
        match self {
            ErrorStatus::BadGateway => "502 Bad Gateway",
            ErrorStatus::ServiceUnavailable => "503 Service Unavailable",
            ErrorStatus::GatewayTimeout => "504 Gateway Timeout",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ErrorStatus::BadGateway | ErrorStatus::ServiceUnavailable => PUBLIC_FAILURE,
            ErrorStatus::GatewayTimeout => PUBLIC_TIMEOUT,
        }
    }
}

/// The fields of the status JSON (`GET /.autostop/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBody {
    /// Service name.
    pub service: String,
    /// Current state.
    pub state: PageState,
    /// Seconds since the start began.
    pub elapsed_s: u64,
    /// Expected start duration in seconds.
    pub estimated_s: u64,
    /// What the visitor is told when the start failed (a public text).
    pub error: Option<String>,
    /// The start's steps (generic labels, phases, seconds in phase).
    pub steps: Vec<PublicStep>,
}

/// Framing policy of every response: no page may frame a wait page (a
/// theme's own inline script and style stay allowed: nothing else is
/// restricted).
pub const FRAME_POLICY: &str = "frame-ancestors 'none'";

/// Assembles a response: status line, the given headers, the standard ones
/// (`Content-Length`, `Cache-Control: no-store`, `X-Content-Type-Options:
/// nosniff`, the [`FRAME_POLICY`], `Connection: close`) and the body
/// unless `head_only`.
fn build(
    status: &str,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {FRAME_POLICY}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The wait page: `503 Service Unavailable` with `Retry-After`, so crawlers
/// and caches do not take it for the app's content. For `HEAD` requests
/// (`head_only`) the body is left out but `Content-Length` still gives its
/// size.
pub fn wait_page(html: &str, retry_after_s: u64, head_only: bool) -> Vec<u8> {
    build(
        "503 Service Unavailable",
        "text/html; charset=utf-8",
        &[("Retry-After", retry_after_s.max(1).to_string())],
        html.as_bytes(),
        head_only,
    )
}

/// The wait pages' poll-and-reload script (`themes/wait.js`), served at
/// [`super::WAIT_SCRIPT_PATH`] so that no theme carries a copy.
pub const WAIT_SCRIPT: &str = include_str!("../../../themes/wait.js");

/// The wait pages' script: `200`, JavaScript, not stored (it comes from
/// the agent only while the service sleeps). For `HEAD` (`head_only`) the
/// body is left out.
pub fn wait_script(head_only: bool) -> Vec<u8> {
    build(
        "200 OK",
        "text/javascript; charset=utf-8",
        &[],
        WAIT_SCRIPT.as_bytes(),
        head_only,
    )
}

/// The status JSON the wait page polls: `200` with
/// `{"service","state","elapsed_s","estimated_s","error","steps"}`, each
/// step `{"label","phase","text","for_s"}`.
pub fn status_json(status: &StatusBody) -> Vec<u8> {
    let steps: Vec<serde_json::Value> = status
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "label": s.label,
                "phase": s.phase.as_str(),
                "text": s.phase.text(),
                "for_s": s.for_s,
            })
        })
        .collect();
    let body = serde_json::json!({
        "service": status.service,
        "state": status.state.as_str(),
        "elapsed_s": status.elapsed_s,
        "estimated_s": status.estimated_s,
        "error": status.error,
        "steps": steps,
    })
    .to_string();
    build("200 OK", "application/json", &[], body.as_bytes(), false)
}

/// A short plain-text error for a request whose service failed to start
/// (502), cannot start now (503, with `Retry-After` when a retry is due at
/// a known time) or did not become ready in time (504). The body is one of
/// the fixed public texts, whatever the cause was.
pub fn error_reply(status: ErrorStatus, retry_after_s: Option<u64>) -> Vec<u8> {
    let body = format!("{}\n", status.message());
    let retry = retry_after_s.map(|s| ("Retry-After", s.max(1).to_string()));
    build(
        status.line(),
        "text/plain; charset=utf-8",
        retry.as_slice(),
        body.as_bytes(),
        false,
    )
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
    use crate::progress::Phase;

    /// Splits a response into (status line, headers, body).
    fn split(resp: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let text = resp;
        let end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("blank line");
        let head = std::str::from_utf8(&text[..end]).expect("utf8 head");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status").to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("header");
                (n.to_string(), v.to_string())
            })
            .collect();
        (status, headers, text[end + 4..].to_vec())
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn wait_page_is_503_no_store_with_length() {
        let (status, headers, body) = split(&wait_page("<p>hé</p>", 5, false));
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(get(&headers, "Retry-After"), Some("5"));
        assert_eq!(get(&headers, "Cache-Control"), Some("no-store"));
        assert_eq!(
            get(&headers, "Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(get(&headers, "Connection"), Some("close"));
        assert_eq!(get(&headers, "Content-Length"), Some("10"));
        assert_eq!(body, "<p>hé</p>".as_bytes());
    }

    #[test]
    fn every_reply_refuses_framing_and_sniffing_but_not_a_themes_inline_code() {
        let replies = [
            wait_page("<p>x</p>", 5, false),
            wait_page("<p>x</p>", 5, true),
            wait_script(false),
            error_reply(ErrorStatus::BadGateway, None),
            error_reply(ErrorStatus::ServiceUnavailable, Some(3)),
            error_reply(ErrorStatus::GatewayTimeout, None),
        ];
        for reply in &replies {
            let (status, headers, _) = split(reply);
            assert_eq!(
                get(&headers, "X-Content-Type-Options"),
                Some("nosniff"),
                "{status}"
            );
            let policies: Vec<_> = headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Security-Policy"))
                .collect();
            // Only frame-ancestors: themes may carry inline script and style.
            assert_eq!(policies.len(), 1, "{status}: {headers:?}");
            assert_eq!(policies[0].1, "frame-ancestors 'none'", "{status}");
        }
    }

    #[test]
    fn head_only_wait_page_has_length_but_no_body() {
        let (_, headers, body) = split(&wait_page("<p>x</p>", 0, true));
        assert_eq!(get(&headers, "Content-Length"), Some("8"));
        assert_eq!(get(&headers, "Retry-After"), Some("1"));
        assert!(body.is_empty());
    }

    #[test]
    fn wait_script_is_200_javascript_no_store_and_head_has_no_body() {
        let (status, headers, body) = split(&wait_script(false));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            get(&headers, "Content-Type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(get(&headers, "Cache-Control"), Some("no-store"));
        assert_eq!(get(&headers, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(body, WAIT_SCRIPT.as_bytes());
        let (_, headers, body) = split(&wait_script(true));
        let length = WAIT_SCRIPT.len().to_string();
        assert_eq!(get(&headers, "Content-Length"), Some(length.as_str()));
        assert!(body.is_empty());
    }

    #[test]
    fn status_json_fields() {
        let resp = status_json(&StatusBody {
            service: "rag\"flow".into(),
            state: PageState::Failed,
            elapsed_s: 12,
            estimated_s: 30,
            error: Some("exit 1".into()),
            steps: vec![
                PublicStep {
                    label: "container 1 of 2".into(),
                    phase: Phase::Healthy,
                    for_s: 3,
                },
                PublicStep {
                    label: "container 2 of 2".into(),
                    phase: Phase::Failed,
                    for_s: 0,
                },
            ],
        });
        let (status, headers, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(get(&headers, "Cache-Control"), Some("no-store"));
        assert_eq!(get(&headers, "Content-Type"), Some("application/json"));
        assert_eq!(
            get(&headers, "Content-Length"),
            Some(body.len().to_string().as_str())
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"service":"rag\"flow","state":"failed","elapsed_s":12,"estimated_s":30,"error":"exit 1",
            "steps":[
                {"label":"container 1 of 2","phase":"healthy","text":"healthy","for_s":3},
                {"label":"container 2 of 2","phase":"failed","text":"failed","for_s":0}
            ]})
        );
        let ok = status_json(&StatusBody {
            service: "a".into(),
            state: PageState::Starting,
            elapsed_s: 0,
            estimated_s: 9,
            error: None,
            steps: Vec::new(),
        });
        let v: serde_json::Value = serde_json::from_slice(&split(&ok).2).expect("json");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["steps"], serde_json::json!([]));
        assert_eq!(v["state"], "starting");
    }

    #[test]
    fn error_replies_carry_only_the_public_texts() {
        let (status, headers, body) = split(&error_reply(ErrorStatus::BadGateway, None));
        assert_eq!(status, "HTTP/1.1 502 Bad Gateway");
        assert_eq!(
            get(&headers, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(get(&headers, "Connection"), Some("close"));
        assert_eq!(get(&headers, "Retry-After"), None);
        assert_eq!(body, format!("{PUBLIC_FAILURE}\n").as_bytes());
        let (status, headers, body) = split(&error_reply(ErrorStatus::ServiceUnavailable, Some(0)));
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(get(&headers, "Retry-After"), Some("1"));
        assert_eq!(
            get(&headers, "Content-Length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(body, format!("{PUBLIC_FAILURE}\n").as_bytes());
        let (status, _, body) = split(&error_reply(ErrorStatus::GatewayTimeout, None));
        assert_eq!(status, "HTTP/1.1 504 Gateway Timeout");
        assert_eq!(body, format!("{PUBLIC_TIMEOUT}\n").as_bytes());
    }
}
