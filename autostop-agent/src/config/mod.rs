//! Agent configuration: parses and validates `autostop.toml` (default
//! [`DEFAULT_CONFIG_PATH`]) into typed, resolved structures, renders them back
//! to TOML, and imports the old Node.js tool's `config.json`.
//!
//! Every problem in a document is reported at once, each as
//! `origin:line:column: field.path: message` (see [`LocatedError`]).
//!
//! Files and Docker labels are input: no string slicing, indexing or
//! unchecked arithmetic here (denied below; tests may panic, it is their
//! failure).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod alerts;
mod api_hosts;
mod api_limits;
mod duration;
mod error;
mod import;
pub mod labels;
mod locate;
mod ports;
mod raw;
mod render;
mod theme;
mod validate;
pub mod vetting;
pub mod warm;

#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_import;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_valid;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api_hosts::ApiHost;
pub use api_limits::{DEFAULT_MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_LIMIT};
pub use duration::{check_timeout, format_human, MAX_TIMEOUT, MIN_TIMEOUT};
pub use error::{ConfigError, LocatedError};
pub use import::import_seed_json;
pub use theme::{is_valid_theme_name, BuiltinTheme, ThemeCatalog, BUILTIN_THEMES, DEFAULT_THEME};
pub use warm::WakePolicy;

/// Where the agent looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/autostop/autostop.toml";
/// Default status API listen address: loopback only, so the API is not
/// exposed unless the operator opts in.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:3456";
/// Default directory of user wake-page themes.
pub const DEFAULT_THEMES_DIR: &str = "/etc/autostop/themes";
/// Default directory for persistent agent state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/autostop";
/// Default idle time before a service is stopped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Default time allowed for a service to come up after a wake.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Default cap on connections held while a service starts.
pub const DEFAULT_MAX_HELD_CONNECTIONS: u32 = 1024;
/// Largest accepted `max_held_connections`.
pub const MAX_HELD_CONNECTIONS_LIMIT: u32 = 65536;
/// The kernel's service index space: the most `[agent] max_services` may
/// be (and its default).
pub const MAX_SERVICES_LIMIT: u32 = autostop_common::MAX_SERVICES;

/// A fully validated configuration.
///
/// Equality compares the effective settings (`agent` and `services`) and
/// ignores `warnings`, which carry source positions: a config re-parsed from
/// [`Config::to_toml`] (or an edit that only moves lines) compares equal.
#[derive(Debug, Clone)]
pub struct Config {
    /// Agent-wide settings (`[agent]`).
    pub agent: AgentConfig,
    /// Managed services (`[[service]]`), in file order; names are unique so
    /// a hot reload can diff old and new sets by name.
    pub services: Vec<ServiceConfig>,
    /// Non-fatal findings (already located), to be logged at startup/reload.
    pub warnings: Vec<String>,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.agent == other.agent && self.services == other.services
    }
}

/// Where the Docker Engine API listens by default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Agent-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Address the status API listens on.
    pub status_listen: SocketAddr,
    /// Directory of user themes (`<name>.html`); it may not exist.
    pub themes_dir: PathBuf,
    /// Directory for persistent agent state.
    pub state_dir: PathBuf,
    /// Networks whose traffic never counts as activity (e.g. monitoring).
    pub ignore_sources: Vec<ipnet::IpNet>,
    /// File holding the API bearer token; `None` means no token auth.
    pub token_file: Option<PathBuf>,
    /// http(s) URL notified on failures; `None` disables alerts. Its path
    /// and query are secrets (Slack, Discord, ntfy): never log them.
    pub alert_webhook: Option<String>,
    /// Whether containers labelled `autostop.enable=true` may become
    /// services (each still checked by the agent before it is managed).
    pub docker_labels: bool,
    /// The Docker Engine API's Unix socket.
    pub docker_socket: PathBuf,
    /// Extra CA certificates (PEM) trusted for an https webhook, besides the
    /// system store.
    pub alert_ca_file: Option<PathBuf>,
    /// Host names (or addresses) the status API answers to besides the
    /// loopback names; see `api::guard`.
    pub api_hosts: Vec<ApiHost>,
    /// How many services (configured plus labelled) the agent manages at
    /// most; at most [`MAX_SERVICES_LIMIT`], the kernel's index space.
    pub max_services: u32,
    /// How many event streams (`GET /api/events`) the status API serves at
    /// once, apart from its request connections; at most
    /// [`MAX_EVENT_STREAMS_LIMIT`].
    pub max_event_streams: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            status_listen: SocketAddr::from(([127, 0, 0, 1], 3456)),
            themes_dir: PathBuf::from(DEFAULT_THEMES_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            ignore_sources: Vec::new(),
            token_file: None,
            alert_webhook: None,
            docker_labels: true,
            docker_socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            alert_ca_file: None,
            api_hosts: Vec::new(),
            max_services: MAX_SERVICES_LIMIT,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
        }
    }
}

/// One managed service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique identifier, used in logs, the API and reload diffs.
    pub name: String,
    /// Published host ports watched for traffic (non-empty, unique).
    pub ports: Vec<PortSpec>,
    /// Inactivity after which the service is stopped.
    pub idle_timeout: Duration,
    /// How incoming traffic is handled while the service is down.
    pub mode: Mode,
    /// Wake-page theme. Always `Some` for dynamic services (defaulting to
    /// [`DEFAULT_THEME`]); for blocking services `Some` only if the file named
    /// one (it is unused then, and a warning is emitted).
    pub theme: Option<String>,
    /// Which containers make up the service.
    pub target: Target,
    /// Time allowed for the service to become reachable after a wake.
    pub start_timeout: Duration,
    /// Keep the service up while any client connection stays open.
    pub hold_while_connected: bool,
    /// Cap on connections held while the service starts (1..=65536).
    pub max_held_connections: u32,
    /// When it is kept or made warm besides its own traffic.
    pub wake: WakePolicy,
    /// What an idle service is put into: stopped or hibernated.
    pub sleep: Sleep,
}

/// How an idle service sleeps (`sleep = "stop" | "hibernate"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Sleep {
    /// Stop the containers (the default): RAM back, a cold boot on wake.
    #[default]
    Stop,
    /// Pause the containers and push their memory to swap: RAM back, a
    /// wake that only pages memory back in (see `crate::cgroup`).
    Hibernate,
}

impl Sleep {
    /// The spelling used in the configuration file and the labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Sleep::Stop => "stop",
            Sleep::Hibernate => "hibernate",
        }
    }

    /// Parses the file's spelling.
    pub fn parse(text: &str) -> Result<Sleep, String> {
        match text {
            "stop" => Ok(Sleep::Stop),
            "hibernate" => Ok(Sleep::Hibernate),
            other => Err(format!(
                "unknown sleep {other:?} (expected \"stop\" or \"hibernate\")"
            )),
        }
    }
}

/// A published host port and its transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Port number, 1..=65535.
    pub port: u16,
    /// Transport the port is watched on.
    pub protocol: Protocol,
}

/// Transport protocol of a [`PortSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default for bare port numbers).
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// How a stopped service reacts to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Serve a themed "starting up" page while the service wakes.
    Dynamic,
    /// Hold connections until the service is up (the default).
    Blocking,
}

impl Mode {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dynamic => "dynamic",
            Mode::Blocking => "blocking",
        }
    }
}

/// The containers a service controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A docker compose project directory (absolute path).
    ComposeDir(PathBuf),
    /// Explicit container names (non-empty, unique).
    Containers(Vec<String>),
}

impl Config {
    /// Reads and validates the file at `path`; messages use the path as
    /// origin. An unreadable file yields [`ConfigError::Read`].
    pub fn load(path: &Path, themes: &ThemeCatalog) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), themes)
    }

    /// Reads and validates the file at `path`, checking theme names against
    /// the built-ins plus the `*.html` files in the `themes_dir` the file
    /// itself names (or [`DEFAULT_THEMES_DIR`]). This is what the agent and
    /// `autostop check` use.
    pub fn load_with_own_themes(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // A malformed document is reported by `parse` below with positions;
        // here an unreadable themes_dir simply falls back to the default.
        let themes_dir = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|doc| {
                doc.get("agent")?
                    .get("themes_dir")?
                    .as_str()
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_THEMES_DIR));
        let themes = ThemeCatalog::with_user_dir(&themes_dir)?;
        Self::parse(&text, &path.display().to_string(), &themes)
    }

    /// Parses and validates `text`; `origin` labels positions in messages
    /// (e.g. a file name). Themes are checked against `themes`.
    pub fn parse(text: &str, origin: &str, themes: &ThemeCatalog) -> Result<Config, ConfigError> {
        let locator = locate::Locator::new(origin, text);
        let raw: raw::RawFile =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(vec![locator.toml_error(&e)]))?;
        validate::resolve(raw, &locator, themes).map_err(ConfigError::Invalid)
    }

    /// Renders the configuration as TOML in the documented format, with
    /// every value explicit, such that `parse(to_toml(c)) == c`.
    pub fn to_toml(&self) -> String {
        render::render(self)
    }

    /// Looks a service up by name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}
