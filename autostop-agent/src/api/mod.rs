//! The status API and dashboard (axum), served on `status_listen`.
//!
//! - `GET /api/services`, `GET /api/services/{name}`: one JSON view per
//!   service;
//! - `POST /api/services/{name}/start|stop|hold|release` and
//!   `PUT /api/services/{name}/idle-timeout` (`{"idle_timeout":"10m"}`);
//! - `GET /api/events`: server-sent events (state changes, starts, stops,
//!   readiness, failures, manual actions, reloads; `Last-Event-ID`
//!   resumes), see [`sse`];
//! - `GET /api/history`: the dashboard's timeline, start durations,
//!   savings by day and host RAM, see [`history`];
//! - `GET /healthz` (with a token configured, anonymous clients get only
//!   `{"ok": …}`), `GET /metrics` (Prometheus text), `GET /` (dashboard,
//!   with `/dashboard.js`, `/charts.js`, `/dashboard.css`).
//!
//! Unknown names get 404 and malformed bodies 400, both with a JSON problem
//! body naming the field. When a token is configured, every route but
//! `/healthz` and the dashboard's static files needs
//! `Authorization: Bearer <token>`. Before any handler, [`guard`] refuses
//! foreign Host values (421) and cross-site mutations (403); [`serve`]
//! bounds header-read time, connections, event streams ([`streams`]) and
//! body size; [`headers`] puts the security headers on every response. The
//! API only reads and forwards: what a service is and does lives behind
//! [`Control`], which the agent implements.
//!
//! Every byte here comes from a client: no string slicing, indexing or
//! unchecked arithmetic (denied below; tests may panic, it is their
//! failure).
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod guard;
mod handlers;
pub mod headers;
pub mod history;
mod serve;
mod sse;
mod streams;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests_guard;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests_headers;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests_prop;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests_serve;
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests_streams;
mod token;

pub use guard::{HostPolicy, Refusal, MAX_BODY_BYTES, REQUEST_TIMEOUT};
pub use history::{HistoryView, HostMemoryView, ServiceHistoryView};
pub use serve::{serve, serve_with, ServeLimits};
pub use token::{check_token_file, load_token};

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    routing::{get, post, put},
    Router,
};
use serde::{Deserialize, Serialize};

/// What the API shows of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service name from the config.
    pub name: String,
    /// `stopped`, `starting`, `ready`, `stopping`, `hibernating`,
    /// `hibernated`, `failed` or `unknown`.
    pub state: crate::service::StateName,
    /// Seconds the service has been in `state`.
    pub state_for_s: u64,
    /// `dynamic` or `blocking`.
    pub mode: String,
    /// First published port (what nginx points at).
    pub port: u16,
    /// Every watched port, e.g. `8443/tcp`.
    pub ports: Vec<String>,
    /// Idle timeout in force, in seconds (config or run-time override).
    pub idle_timeout_s: u64,
    /// Connections held by the agent right now, waiting for this service.
    pub held: u64,
    /// Manual hold: never auto-stopped while true.
    pub hold: bool,
    /// Newest traffic seen by the kernel counters (RFC 3339).
    pub last_activity: Option<String>,
    /// Seconds since that traffic.
    pub idle_for_s: Option<u64>,
    /// Seconds until the idle stop, for a ready service not on hold.
    pub seconds_until_stop: Option<u64>,
    /// Memory in use (Docker stats: usage minus inactive page cache, summed
    /// over the service's containers), for running services once sampled.
    pub memory_bytes: Option<u64>,
    /// Memory limit (Docker stats: the containers' limits summed, a
    /// container without a limit counting as the host's RAM; capped at the
    /// host's RAM), alongside `memory_bytes`.
    pub memory_limit_bytes: Option<u64>,
    /// Duration of the last start, in seconds.
    pub last_start_duration_s: Option<f64>,
    /// Learned average start duration, in seconds.
    pub average_start_duration_s: Option<f64>,
    /// Starts in the last 24 hours.
    pub starts_24h: u32,
    /// Last error (failed start or stop).
    pub last_error: Option<String>,
    /// Why a wake would not start the failed service now: `crash_loop`
    /// (the guard latched; `autostop start` clears it) or `backoff` (a
    /// retry is pending); `None` otherwise.
    #[serde(default)]
    pub start_block: Option<String>,
    /// With `start_block = "backoff"`: seconds until a wake may retry.
    #[serde(default)]
    pub retry_in_s: Option<u64>,
    /// RAM saved so far by keeping the service stopped, in GB·h (last
    /// observed running memory × time stopped; 1 GB = 10^9 bytes).
    pub ram_saved_gb_h: f64,
    /// The part of `ram_saved_gb_h` saved in the last 24 hours (the current
    /// clock hour and the 23 before it): the seed's "GB·h per day".
    #[serde(default)]
    pub ram_saved_gb_h_24h: f64,
    /// What keeps part of the service from working as configured (e.g. a
    /// configured port no container publishes, which is never steered).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Why it is kept awake besides traffic and hold (e.g. `keep_warm until
    /// Mon 19:00`, `needed by app`, `busy, 23 % CPU`): never idle-stopped
    /// while there is any.
    #[serde(default)]
    pub keep_awake: Vec<String>,
    /// The services it requires (started first, kept awake while it runs).
    #[serde(default)]
    pub requires: Vec<String>,
    /// The services that require it.
    #[serde(default)]
    pub needed_by: Vec<String>,
    /// Its `keep_warm` windows, as written.
    #[serde(default)]
    pub keep_warm: Vec<String>,
    /// When the `keep_warm` window it is in closes (RFC 3339).
    #[serde(default)]
    pub keep_warm_until: Option<String>,
    /// The next `keep_warm` opening (RFC 3339).
    #[serde(default)]
    pub next_keep_warm: Option<String>,
    /// The next learned pre-warm, with `prewarm = true` and a strong enough
    /// habit.
    #[serde(default)]
    pub next_prewarm: Option<PrewarmView>,
    /// What an idle service is put into: `stop` or `hibernate`.
    #[serde(default)]
    pub sleep: String,
    /// While `hibernated`: its memory resident and in swap.
    #[serde(default)]
    pub hibernation: Option<HibernationView>,
}

/// A predicted pre-warm, as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrewarmView {
    /// When the service will be started (RFC 3339).
    pub at: String,
    /// The habitual first request it prepares for (RFC 3339).
    pub expected: String,
    /// Why, e.g. "3 of the last 4 Mondays had a request between 08:55 and
    /// 09:25".
    pub reason: String,
}

/// What a hibernation left, summed over the service's containers (their
/// memory cgroups' own figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HibernationView {
    /// Resident when it was paused.
    pub awake_bytes: u64,
    /// Still resident.
    pub resident_bytes: u64,
    /// In swap.
    pub swap_bytes: u64,
    /// Its memory went to swap; `false`: paused only (`note` says why).
    pub reclaimed: bool,
    /// Why it is paused without (full) reclaim (no or too little swap, a
    /// failed reclaim).
    pub note: Option<String>,
}

/// Agent health for `/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The Docker daemon answers.
    pub docker_reachable: bool,
    /// The kernel programs are loaded and attached.
    pub datapath_attached: bool,
    /// Each long-lived task of the agent: `running`, or `ended`/`panicked`
    /// (fatal: the agent is shutting down), `stopped` during shutdown.
    pub tasks: BTreeMap<String, String>,
}

impl Health {
    /// Healthy when Docker and the datapath are fine and no task ended.
    pub fn ok(&self) -> bool {
        self.docker_reachable
            && self.datapath_attached
            && self
                .tasks
                .values()
                .all(|s| s == "running" || s == "stopped")
    }
}

/// A manual control sent through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start now.
    Start,
    /// Stop now.
    Stop,
    /// Never auto-stop until released.
    Hold,
    /// Undo a hold.
    Release,
}

/// Why a control failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No service has this name.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// The service's actor is gone or its queue is full.
    #[error("{0}")]
    Unavailable(String),
}

/// What the API needs from the agent.
#[async_trait::async_trait]
pub trait Control: Send + Sync {
    /// Views of every service, in config order.
    fn services(&self) -> Vec<ServiceView>;
    /// View of one service.
    fn service(&self, name: &str) -> Option<ServiceView>;
    /// Applies a manual control.
    async fn act(&self, name: &str, action: Action) -> Result<(), ControlError>;
    /// Sets and persists a service's idle timeout.
    async fn set_idle_timeout(&self, name: &str, timeout: Duration) -> Result<(), ControlError>;
    /// Agent health.
    fn health(&self) -> Health;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// What keeps the agent from doing what its configuration and the
    /// Docker labels ask: refused labelled services, ports no container
    /// publishes.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
    /// The events stream from after event `after` (`None`: from the
    /// oldest buffered one); `None` when the agent has none.
    fn events(&self, after: Option<u64>) -> Option<crate::events::Feed> {
        let _ = after;
        None
    }
    /// The dashboard's history; `None` when the agent keeps none.
    fn history(&self) -> Option<HistoryView> {
        None
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct ApiState {
    control: Arc<dyn Control>,
    /// Bearer token required for mutations, when configured.
    token: Option<Arc<str>>,
}

/// Builds the router: every route behind the request checks of
/// [`guard`] (Host, cross-site mutations, body size, time), every response
/// with the [`headers`].
pub fn router(control: Arc<dyn Control>, token: Option<String>, hosts: HostPolicy) -> Router {
    let state = ApiState {
        control,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/", get(handlers::dashboard))
        .route("/dashboard.js", get(handlers::dashboard_js))
        .route("/charts.js", get(handlers::charts_js))
        .route("/dashboard.css", get(handlers::dashboard_css))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route("/api/services", get(handlers::list))
        .route("/api/problems", get(handlers::problems))
        .route("/api/events", get(sse::events))
        .route("/api/history", get(history::history))
        .route("/api/services/{name}", get(handlers::show))
        .route("/api/services/{name}/{action}", post(handlers::act))
        .route(
            "/api/services/{name}/idle-timeout",
            put(handlers::set_idle_timeout),
        )
        .fallback(handlers::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(hosts, guard::guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(headers::secure))
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A non-loopback listen address without a token would expose the
    /// controls to the network.
    #[error("agent.status_listen = {0} is not a loopback address: set agent.token_file so the API requires a token")]
    TokenRequired(SocketAddr),
    /// The token file could not be read, is empty, or others can read it.
    #[error("agent.token_file {path}: {reason}")]
    Token {
        /// The configured file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("status API on {addr}: {source}")]
    Io {
        /// The listen address.
        addr: SocketAddr,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}
