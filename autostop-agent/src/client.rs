//! The CLI's side of the status API: `autostop status`, `start`, `stop`,
//! `hold`, `release` and `set-timeout` talk to the running agent over HTTP
//! on its `status_listen` address, with the bearer token when configured.

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
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned());
        Err(ClientError::Refused { status, detail })
    }
}

/// Renders `autostop status` like the old status script: one row per
/// service with a state icon, uptime or downtime, RAM, idle timeout, time
/// until stop and last start duration.
pub fn status_table(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<13} {:<22} {:<18} {:<8} {:<9} {:<10} SAVED",
        "NAME", "STATE", "SINCE", "RAM", "IDLE", "STOP IN", "LAST START"
    );
    for s in services {
        let (icon, label) = match s.state.as_str() {
            "ready" => ("✅", "RUNNING"),
            "starting" => ("🟡", "STARTING"),
            "stopping" => ("🟠", "STOPPING"),
            "stopped" => ("⏸️ ", "STOPPED"),
            "failed" => ("❌", "FAILED"),
            _ => ("❔", "UNKNOWN"),
        };
        let since = match s.state.as_str() {
            "ready" => format!("Up {}", human(s.state_for_s)),
            "stopped" => format!("Exited {} ago", human(s.state_for_s)),
            _ => format!("for {}", human(s.state_for_s)),
        };
        let ram = match (s.memory_bytes, s.memory_limit_bytes) {
            (Some(used), Some(limit)) if limit > 0 => format!("{} / {}", bytes(used), bytes(limit)),
            (Some(used), _) => bytes(used),
            _ => "-".to_owned(),
        };
        let stop_in = match (s.hold, s.seconds_until_stop) {
            (true, _) => "hold".to_owned(),
            (false, Some(secs)) => human(secs),
            (false, None) => "-".to_owned(),
        };
        let last = s
            .last_start_duration_s
            .map_or("-".to_owned(), |d| format!("{d:.1}s"));
        let _ = writeln!(
            out,
            "{:<16} {icon} {:<10} {:<22} {:<18} {:<8} {:<9} {:<10} {:.1} GB·h ({:.1} in 24 h)",
            s.name,
            label,
            since,
            ram,
            human(s.idle_timeout_s),
            stop_in,
            last,
            s.ram_saved_gb_h,
            s.ram_saved_gb_h_24h
        );
        if let Some(error) = &s.last_error {
            let _ = writeln!(out, "{:<16} last error: {error}", "");
        }
    }
    out
}

/// "2 hours", "3 minutes", "45 seconds".
fn human(secs: u64) -> String {
    let (value, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{value} {unit}{}", if value == 1 { "" } else { "s" })
}

fn bytes(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}GB", n as f64 / 1e9)
    } else {
        format!("{}MB", n / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_reads_like_the_old_script() {
        let services = vec![
            ServiceView {
                name: "ragflow".into(),
                state: "ready".into(),
                state_for_s: 7300,
                memory_bytes: Some(4_200_000_000),
                memory_limit_bytes: Some(6_500_000_000),
                idle_timeout_s: 180,
                seconds_until_stop: Some(75),
                last_start_duration_s: Some(45.2),
                ..ServiceView::default()
            },
            ServiceView {
                name: "xtts".into(),
                state: "stopped".into(),
                state_for_s: 3 * 3600 + 10,
                idle_timeout_s: 180,
                ram_saved_gb_h: 59.0,
                ram_saved_gb_h_24h: 2.5,
                ..ServiceView::default()
            },
        ];
        let table = status_table(&services);
        assert!(table.contains("✅ RUNNING"), "{table}");
        assert!(table.contains("Up 2 hours"), "{table}");
        assert!(table.contains("4.2GB / 6.5GB"), "{table}");
        assert!(table.contains("1 minute"), "{table}");
        assert!(table.contains("45.2s"), "{table}");
        assert!(table.contains("Exited 3 hours ago"), "{table}");
        assert!(table.contains("59.0 GB·h (2.5 in 24 h)"), "{table}");
    }

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
