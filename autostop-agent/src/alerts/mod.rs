//! Delivery of alert events to `agent.alert_webhook`: a JSON POST over
//! http or https (rustls, see [`tls`]), each attempt bounded in time and in
//! the size of the answer read, a few bounded retries, from a task of its
//! own so a slow or dead receiver never holds up a state machine.
//!
//! The URL's path and query are the receiver's secret: logs name the
//! receiver as `scheme://host:port` only ([`WebhookUrl::endpoint`]).

mod tls;
mod url;

#[cfg(test)]
mod tests;

use std::{path::Path, time::Duration};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use url::{UrlError, WebhookUrl};

/// Attempts per event.
const ATTEMPTS: u32 = 3;
/// Time allowed for one attempt: connect, TLS, request, answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the TCP connection alone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this much of an answer is read (and never logged); the status
/// line is all that matters.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why alerts cannot be delivered as configured.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The URL is not one the agent can post to.
    #[error("agent.alert_webhook: {0}")]
    Url(#[from] UrlError),
    /// The extra CA file is unusable.
    #[error("agent.alert_ca_file {path}: {reason}")]
    CaFile {
        /// The configured file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An https webhook with nothing to verify its certificate against.
    #[error("agent.alert_webhook: https needs a trusted CA, but the system store has none (install ca-certificates) and agent.alert_ca_file is not set")]
    NoRoots,
    /// rustls refused the settings.
    #[error("agent.alert_webhook: TLS setup: {0}")]
    Tls(#[source] rustls::Error),
}

/// Checks that alerts to `url` could be delivered: the URL, and for https
/// the trusted CAs (system store plus `ca_file`). What `autostop check`
/// runs.
pub fn check(url: &str, ca_file: Option<&Path>) -> Result<WebhookUrl, AlertError> {
    let url = WebhookUrl::parse(url)?;
    if url.is_https() {
        tls::client_config(ca_file, true)?;
    }
    Ok(url)
}

/// A webhook receiver and the client that posts to it.
pub struct Delivery {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: WebhookUrl,
    /// [`ATTEMPT_TIMEOUT`], shorter in tests.
    attempt_timeout: Duration,
}

impl Delivery {
    /// A client for `url`, trusting the system CAs plus `ca_file`.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, AlertError> {
        Self::with_roots(url, ca_file, true)
    }

    /// Like [`Self::new`]; `system_roots` false trusts `ca_file` alone.
    pub(crate) fn with_roots(
        url: &str,
        ca_file: Option<&Path>,
        system_roots: bool,
    ) -> Result<Self, AlertError> {
        let url = WebhookUrl::parse(url)?;
        let tls = if url.is_https() {
            tls::client_config(ca_file, system_roots)?
        } else {
            tls::unused_config()?
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // One connection per alert: alerts are rare, idle sockets are not
        // worth keeping.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Self {
            client,
            url,
            attempt_timeout: ATTEMPT_TIMEOUT,
        })
    }

    /// `scheme://host:port` of the receiver: what logs may show.
    pub fn endpoint(&self) -> String {
        self.url.endpoint()
    }

    /// Posts every event from `events` until `shutdown`.
    pub async fn run(self, mut events: mpsc::Receiver<String>, shutdown: CancellationToken) {
        loop {
            let body = tokio::select! {
                () = shutdown.cancelled() => return,
                body = events.recv() => match body { Some(body) => body, None => return },
            };
            self.deliver(&body, &shutdown).await;
        }
    }

    /// Up to [`ATTEMPTS`] tries; whether the receiver took the event.
    async fn deliver(&self, body: &str, shutdown: &CancellationToken) -> bool {
        let endpoint = self.endpoint();
        for attempt in 1..=ATTEMPTS {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return false,
                outcome = self.attempt(body) => outcome,
            };
            match outcome {
                Ok(status) if status.is_success() => {
                    tracing::info!(
                        endpoint,
                        status = status.as_u16(),
                        "alert webhook: delivered"
                    );
                    return true;
                }
                Ok(status) => tracing::warn!(
                    endpoint,
                    attempt,
                    status = status.as_u16(),
                    "alert webhook: delivery refused"
                ),
                Err(error) => {
                    tracing::warn!(endpoint, attempt, error, "alert webhook: delivery failed");
                }
            }
            if attempt < ATTEMPTS {
                let pause = Duration::from_millis(500 * u64::from(attempt));
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::error!(
            endpoint,
            attempts = ATTEMPTS,
            "alert webhook: alert dropped"
        );
        false
    }

    /// One POST within the attempt timeout: the answer's status, or why
    /// there was none (redacted: never the URL's path or query).
    async fn attempt(&self, body: &str) -> Result<http::StatusCode, String> {
        match tokio::time::timeout(self.attempt_timeout, self.post(body)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(error)) => Err(self.url.redact(&error)),
            Err(_) => Err(format!("no answer within {:?}", self.attempt_timeout)),
        }
    }

    async fn post(&self, body: &str) -> Result<http::StatusCode, String> {
        let request = http::Request::post(self.url.uri().clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("autostop/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        // Read the answer, up to the cap, so the exchange completes; its
        // content is not used (it may echo the request, path included).
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await;
        Ok(status)
    }
}

/// `error: cause: cause…`, for a log line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
