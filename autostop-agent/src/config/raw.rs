//! The configuration file exactly as written, before validation. Fields that
//! are checked after deserialisation are wrapped in [`Spanned`] so errors can
//! point at them; unknown keys are rejected everywhere.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// Top level of `autostop.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    /// `[agent]`; optional, every key has a default.
    #[serde(default)]
    pub agent: Option<RawAgent>,
    /// `[[service]]` tables, in file order.
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
}

/// `[agent]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    /// Status API address, parsed as `SocketAddr` later.
    pub status_listen: Option<Spanned<String>>,
    /// User themes directory (absolute).
    pub themes_dir: Option<Spanned<String>>,
    /// State directory (absolute).
    pub state_dir: Option<Spanned<String>>,
    /// CIDRs (or bare addresses) whose traffic is not activity.
    pub ignore_sources: Option<Vec<Spanned<String>>>,
    /// API bearer token file (absolute).
    pub token_file: Option<Spanned<String>>,
    /// http(s) URL for alerts.
    pub alert_webhook: Option<Spanned<String>>,
    /// Whether Docker labels may describe services.
    pub docker_labels: Option<Spanned<bool>>,
    /// The Docker Engine API's Unix socket (absolute).
    pub docker_socket: Option<Spanned<String>>,
    /// Extra PEM CA file trusted by the alert webhook (absolute).
    pub alert_ca_file: Option<Spanned<String>>,
    /// Host names the status API answers to besides loopback.
    pub api_hosts: Option<Vec<Spanned<String>>>,
    /// The most services managed; i64 so out-of-range values get our
    /// message.
    pub max_services: Option<Spanned<i64>>,
    /// Event streams served at once; i64 so out-of-range values get our
    /// message.
    pub max_event_streams: Option<Spanned<i64>>,
}

/// One `[[service]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    /// Unique service name.
    pub name: Spanned<String>,
    /// Single TCP port; i64 so out-of-range values get our message.
    pub port: Option<Spanned<i64>>,
    /// Several ports, alternative to `port`.
    pub ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    /// Humantime idle timeout.
    pub idle_timeout: Option<Spanned<String>>,
    /// Seed-style idle timeout in milliseconds, alternative to `idle_timeout`.
    pub timeout: Option<Spanned<i64>>,
    /// `dynamic` or `blocking`; a string so typos get a located message.
    pub mode: Option<Spanned<String>>,
    /// Wake-page theme name.
    pub theme: Option<Spanned<String>>,
    /// Compose project directory, alternative to `containers`.
    pub compose_dir: Option<Spanned<String>>,
    /// Explicit container names, alternative to `compose_dir`.
    pub containers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Humantime start timeout.
    pub start_timeout: Option<Spanned<String>>,
    /// Keep running while connections are open.
    pub hold_while_connected: Option<bool>,
    /// Cap on held connections; i64 so range errors get our message.
    pub max_held_connections: Option<Spanned<i64>>,
    /// `keep_warm` windows, e.g. `"Mon-Fri 08:00-19:00"`.
    pub keep_warm: Option<Spanned<Vec<Spanned<String>>>>,
    /// Learned pre-warming.
    pub prewarm: Option<bool>,
    /// Services this one needs, started first.
    pub requires: Option<Spanned<Vec<Spanned<String>>>>,
    /// CPU (percent of one core) above which the service is busy; i64 so
    /// range errors get our message.
    pub busy_cpu_percent: Option<Spanned<i64>>,
    /// `stop` or `hibernate`; a string so typos get a located message.
    pub sleep: Option<Spanned<String>>,
}

/// An entry of `ports = [...]`: an integer (TCP) or a `"PORT/PROTO"` string.
#[derive(Debug)]
pub(crate) enum RawPort {
    /// Bare integer: a TCP port.
    Number(i64),
    /// `"PORT"`, `"PORT/tcp"` or `"PORT/udp"`.
    Text(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = RawPort;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a \"PORT/tcp\" / \"PORT/udp\" string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                i64::try_from(v)
                    .map(RawPort::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 1..=65535")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}
