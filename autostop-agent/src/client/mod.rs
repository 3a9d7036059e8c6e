//! The CLI's side of the status API: `autostop status`, `start`, `stop`,
//! `hold`, `release` and `set-timeout` talk to the running agent over HTTP
//! on its `status_listen` address, with the bearer token when configured;
//! [`table`] renders `autostop status`; [`events`] follows the events
//! stream for `autostop events`.
//!
//! The agent's answers are read as input (it may be another version, or
//! not the agent at all): no string slicing, indexing or unchecked
//! arithmetic here (denied below).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod events;
mod notes;
mod table;
#[cfg(test)]
mod table_tests;

pub use events::readable as readable_event;
pub use notes::schedule_notes;
pub use table::{compact_duration, compact_seconds, status_table, DEFAULT_WIDTH};

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::api::ServiceView;

/// Time allowed for one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a CLI call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the address: the agent is not running (or listens
    /// elsewhere).
    #[error("the agent is not running (nothing answers on {addr}: {source}); start it with `systemctl start autostop` or `autostop run`")]
    NotRunning {
        /// The address tried.
        addr: SocketAddr,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error.
    #[error("{status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's detail.
        detail: String,
    },
    /// The answer could not be understood.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
}

/// A connection target for the status API.
#[derive(Debug, Clone)]
pub struct Client {
    /// `agent.status_listen`.
    pub addr: SocketAddr,
    /// Bearer token, when `agent.token_file` is set.
    pub token: Option<String>,
}

impl Client {
    /// Lists every service.
    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        let body = self.call("GET", "/api/services", None).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// What keeps the agent from doing what its config and labels ask
    /// (`GET /api/problems`).
    pub async fn problems(&self) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Problems {
            problems: Vec<String>,
        }
        let body = self.call("GET", "/api/problems", None).await?;
        serde_json::from_slice::<Problems>(&body)
            .map(|p| p.problems)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /api/services/{name}/{action}`.
    pub async fn act(&self, name: &str, action: &str) -> Result<(), ClientError> {
        self.call("POST", &format!("/api/services/{name}/{action}"), None)
            .await
            .map(drop)
    }

    /// `PUT /api/services/{name}/idle-timeout`.
    pub async fn set_idle_timeout(&self, name: &str, timeout: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "idle_timeout": timeout }).to_string();
        self.call(
            "PUT",
            &format!("/api/services/{name}/idle-timeout"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Where to connect: `addr`, with an unspecified address (`0.0.0.0`,
    /// `::`) replaced by loopback of the same family.
    fn target(&self) -> SocketAddr {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Protocol(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let addr = self.target();
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::NotRunning { addr, source })?;
        // HTTP/1.0: the agent answers with a plain body and closes. Host is
        // the loopback address connected to, which the API always accepts;
        // no Origin, and a JSON content type, pass its cross-site checks.
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
        if let Some(token) = &self.token {
            let _ = write!(request, "Authorization: Bearer {token}\r\n");
        }
        let body = body.unwrap_or("");
        let _ = write!(
            request,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io = |e: std::io::Error| ClientError::Protocol(e.to_string());
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(io)?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&response) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return Err(ClientError::Protocol("truncated response".into()))
            }
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
        };
        let status = parsed.code.unwrap_or(0);
        let payload = response.split_off(head_len);
        if (200..300).contains(&status) {
            return Ok(payload);
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("detail")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned());
        Err(ClientError::Refused { status, detail })
    }
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

    #[tokio::test]
    async fn a_missing_agent_is_reported_as_not_running() {
        // Bind then drop to find a port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let client = Client { addr, token: None };
        let err = client.services().await.expect_err("nothing listens");
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
        assert!(err.to_string().contains("not running"), "{err}");
    }
}
