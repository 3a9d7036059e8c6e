//! Request checks in front of every route of the status API, against DNS
//! rebinding and cross-site requests from web pages:
//!
//! - **Host** (every request): the Host header (and the authority of an
//!   absolute-form target) must name this API: a loopback name (`localhost`,
//!   127.0.0.0/8, `[::1]`), a name listed in `agent.api_hosts`, or, for a
//!   listener not on loopback, any IP literal (an IP literal cannot be
//!   rebound; a name can). Any port or none. Missing → 400, foreign → 421.
//! - **Mutations** (any method but GET, HEAD, OPTIONS, TRACE): refused with
//!   403 when `Sec-Fetch-Site: cross-site`, when an `Origin` is not this
//!   request's own origin (same host and port as Host) nor on a host of
//!   `agent.api_hosts`, or when the Content-Type is one a cross-site page can
//!   send without a CORS preflight (`application/x-www-form-urlencoded`,
//!   `multipart/form-data`, `text/plain`).
//! - A declared body over [`MAX_BODY_BYTES`] → 413; a request not answered
//!   within [`REQUEST_TIMEOUT`] (a trickled body, a stuck control) → 408.
//!
//! Every refusal is a JSON problem naming the reason.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    middleware::Next,
    response::Response,
};

use super::handlers::problem;
use crate::config::ApiHost;

/// Largest request body the API reads (idle-timeout JSON is ~30 bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Time allowed for a whole request once its head is read.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Content types a cross-site page can send without a CORS preflight.
const SIMPLE_CONTENT_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Why a request is refused before reaching a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No Host header (and no absolute-form target), or several.
    #[error("Host: a single Host header naming this API is required")]
    NoHost,
    /// A Host that is not a host name or address.
    #[error("Host: {0:?} is not a valid host[:port]")]
    BadHost(String),
    /// A Host this API does not answer to (DNS rebinding).
    #[error("Host: {0:?} is not a name of this API (loopback names and agent.api_hosts are)")]
    ForeignHost(String),
    /// `Sec-Fetch-Site: cross-site` on a mutation.
    #[error("Sec-Fetch-Site: cross-site requests may not change anything")]
    CrossSite,
    /// An Origin other than the API's own on a mutation.
    #[error(
        "Origin: {0:?} is not this API's origin; cross-origin requests may not change anything"
    )]
    CrossOrigin(String),
    /// A form or text/plain body on a mutation.
    #[error("Content-Type: {0:?} is refused for changes (send application/json or no body)")]
    FormContentType(String),
    /// A declared body over [`MAX_BODY_BYTES`].
    #[error("Content-Length: {0} bytes is over the limit of {MAX_BODY_BYTES}")]
    BodyTooLarge(u64),
}

impl Refusal {
    /// The status the refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoHost | Self::BadHost(_) => StatusCode::BAD_REQUEST,
            Self::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::CrossSite | Self::CrossOrigin(_) | Self::FormContentType(_) => {
                StatusCode::FORBIDDEN
            }
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Which Host values the API answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Accept any IP literal (a listener not on loopback).
    ip_literals: bool,
    /// `agent.api_hosts`.
    names: Arc<[ApiHost]>,
}

impl HostPolicy {
    /// The policy for a listener on `listen` with `agent.api_hosts`.
    pub fn new(listen: std::net::SocketAddr, api_hosts: &[ApiHost]) -> Self {
        Self {
            ip_literals: !listen.ip().is_loopback(),
            names: api_hosts.into(),
        }
    }

    fn accepts(&self, host: &ApiHost) -> bool {
        host.is_loopback()
            || self.names.contains(host)
            || (self.ip_literals && matches!(host, ApiHost::Ip(_)))
    }

    /// Checks one request's head; `Err` is the refusal to answer with.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_header = match (hosts.next(), hosts.next()) {
            (Some(value), None) => Some(
                value
                    .to_str()
                    .map_err(|_| Refusal::BadHost("(not text)".into()))?,
            ),
            (None, None) => None,
            _ => return Err(Refusal::NoHost),
        };
        let target = uri.authority().map(|a| a.as_str());
        if host_header.is_none() && target.is_none() {
            return Err(Refusal::NoHost);
        }
        let mut own = None;
        for text in [target, host_header].into_iter().flatten() {
            let (host, port) =
                split_host_port(text).ok_or_else(|| Refusal::BadHost(text.to_owned()))?;
            if !self.accepts(&host) {
                return Err(Refusal::ForeignHost(text.to_owned()));
            }
            own.get_or_insert((host, port));
        }
        if method.is_safe() {
            return Ok(());
        }
        let fetch_site = headers.get_all("sec-fetch-site").iter();
        if fetch_site.into_iter().any(|v| {
            v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"cross-site")
        }) {
            return Err(Refusal::CrossSite);
        }
        for origin in headers.get_all(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("(not text)");
            if !own
                .as_ref()
                .is_some_and(|own| self.origin_allowed(text, own))
            {
                return Err(Refusal::CrossOrigin(text.to_owned()));
            }
        }
        for value in headers.get_all(header::CONTENT_TYPE) {
            let text = value.to_str().unwrap_or("(not text)");
            let essence = text
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if value.to_str().is_err() || SIMPLE_CONTENT_TYPES.contains(&essence.as_str()) {
                return Err(Refusal::FormContentType(text.to_owned()));
            }
        }
        Ok(())
    }

    /// Same origin as `own` (the request's host and port), or a host of
    /// `agent.api_hosts` (a reverse proxy may change Host).
    fn origin_allowed(&self, origin: &str, own: &(ApiHost, Option<u16>)) -> bool {
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return false,
        };
        let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        let Some((host, port)) = uri.authority().and_then(|a| split_host_port(a.as_str())) else {
            return false;
        };
        if !path_ok {
            return false;
        }
        let port = port.unwrap_or(default_port);
        let same_origin = host == own.0 && own.1.unwrap_or(default_port) == port;
        same_origin || self.names.contains(&host)
    }
}

/// `host[:port]` → the host and the port if given; `None` when malformed
/// (including `user@host` and an empty or out-of-range port).
fn split_host_port(text: &str) -> Option<(ApiHost, Option<u16>)> {
    if text.contains('@') {
        return None;
    }
    let authority = text.parse::<http::uri::Authority>().ok()?;
    let host = ApiHost::from_host(authority.host())?;
    match authority.as_str().strip_prefix(authority.host())? {
        "" => Some((host, None)),
        _ => authority.port_u16().map(|p| (host, Some(p))),
    }
}

/// The middleware: refuses what [`HostPolicy::check`] refuses and declared
/// bodies over the cap, and bounds the request's time.
pub(super) async fn guard(
    State(policy): State<HostPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let checked = policy
        .check(request.method(), request.uri(), request.headers())
        .and(match declared {
            Some(n) if n > MAX_BODY_BYTES as u64 => Err(Refusal::BodyTooLarge(n)),
            _ => Ok(()),
        });
    if let Err(refusal) = checked {
        return problem(refusal.status(), refusal.to_string());
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {REQUEST_TIMEOUT:?}"),
        ),
    }
}
