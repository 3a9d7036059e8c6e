//! Turns the raw, as-written configuration into the resolved [`Config`],
//! applying defaults and collecting every validation problem (with its
//! position) instead of stopping at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::duration;
use super::error::LocatedError;
use super::locate::Locator;
use super::ports;
use super::raw::{RawAgent, RawFile, RawService};
use super::theme::{is_valid_theme_name, ThemeCatalog, DEFAULT_THEME};
use super::warm;
use super::{
    AgentConfig, Config, Mode, ServiceConfig, Sleep, Target, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_HELD_CONNECTIONS, DEFAULT_START_TIMEOUT, MAX_HELD_CONNECTIONS_LIMIT,
    MAX_SERVICES_LIMIT,
};

/// Accumulates errors and warnings for one document.
pub(super) struct Checker<'a> {
    pub(super) loc: &'a Locator<'a>,
    pub(super) errors: Vec<LocatedError>,
    pub(super) warnings: Vec<LocatedError>,
}

impl Checker<'_> {
    pub(super) fn err<T>(
        &mut self,
        spanned: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.errors.push(self.loc.error(spanned.span(), field, msg));
    }

    pub(super) fn warn<T>(
        &mut self,
        spanned: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.warnings
            .push(self.loc.error(spanned.span(), field, msg));
    }

    /// Runs `check` on a value, recording its error; `None` after an error.
    pub(super) fn one<T, R>(
        &mut self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<R, String>,
    ) -> Option<R> {
        match check(value.get_ref()) {
            Ok(r) => Some(r),
            Err(msg) => {
                self.err(value, field, msg);
                None
            }
        }
    }

    /// Like [`Checker::one`] for an optional value: `default` if absent.
    pub(super) fn opt<T, R>(
        &mut self,
        value: &Option<Spanned<T>>,
        field: &str,
        default: R,
        check: impl FnOnce(&T) -> Result<R, String>,
    ) -> Option<R> {
        match value {
            None => Some(default),
            Some(v) => self.one(v, field, check),
        }
    }
}

/// Validates `raw`; on success returns the resolved config (with located
/// warnings), else every error found, sorted by position.
pub(crate) fn resolve(
    raw: RawFile,
    loc: &Locator<'_>,
    themes: &ThemeCatalog,
) -> Result<Config, Vec<LocatedError>> {
    let mut ck = Checker {
        loc,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let agent = match &raw.agent {
        Some(a) => resolve_agent(&mut ck, a),
        None => Some(AgentConfig::default()),
    };
    let mut services = Vec::new();
    for (i, svc) in raw.service.iter().enumerate() {
        if let Some(s) = resolve_service(&mut ck, i, svc, themes) {
            services.push(s);
        }
    }
    check_unique_names(&mut ck, &raw.service);
    if ck.errors.is_empty() {
        let labels = agent.as_ref().is_some_and(|a| a.docker_labels);
        warm::check_file(&mut ck, &raw.service, &services, labels);
    }
    let status_port = agent.as_ref().map(|a| a.status_listen.port());
    ports::check_unique_ports(&mut ck, &raw.service, status_port);
    if let Some(agent) = &agent {
        check_service_count(&mut ck, &raw.service, agent.max_services);
    }
    match agent {
        Some(agent) if ck.errors.is_empty() => Ok(Config {
            agent,
            services,
            warnings: ck.warnings.iter().map(ToString::to_string).collect(),
        }),
        _ => {
            ck.errors.sort_by_key(|e| (e.line, e.column));
            Err(ck.errors)
        }
    }
}

pub(super) fn absolute_path(text: &String) -> Result<PathBuf, String> {
    if Path::new(text).is_absolute() {
        Ok(PathBuf::from(text))
    } else {
        Err(format!("path {text:?} must be absolute"))
    }
}

fn resolve_agent(ck: &mut Checker<'_>, raw: &RawAgent) -> Option<AgentConfig> {
    let d = AgentConfig::default();
    let status_listen = ck.opt(
        &raw.status_listen,
        "agent.status_listen",
        d.status_listen,
        |s| {
            s.parse::<SocketAddr>().map_err(|e| {
                format!("invalid socket address {s:?} (expected e.g. \"127.0.0.1:3456\"): {e}")
            })
        },
    );
    let themes_dir = ck.opt(
        &raw.themes_dir,
        "agent.themes_dir",
        d.themes_dir,
        absolute_path,
    );
    let state_dir = ck.opt(
        &raw.state_dir,
        "agent.state_dir",
        d.state_dir,
        absolute_path,
    );
    let token_file = ck.opt(&raw.token_file, "agent.token_file", None, |p| {
        absolute_path(p).map(Some)
    });
    let (alert_webhook, alert_ca_file) = super::alerts::resolve(ck, raw);
    let api_hosts = super::api_hosts::resolve(ck, &raw.api_hosts);
    let mut ignore_sources = Vec::new();
    let mut ok = true;
    for (i, src) in raw.ignore_sources.iter().flatten().enumerate() {
        let field = format!("agent.ignore_sources[{i}]");
        let text = src.get_ref();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => {
                if net.trunc() != net {
                    let msg = format!("{text:?} has host bits set; it covers {}", net.trunc());
                    ck.warn(src, field, msg);
                }
                ignore_sources.push(net);
            }
            Err(e) => {
                ck.err(src, field, format!("invalid CIDR {text:?}: {e}"));
                ok = false;
            }
        }
    }
    let docker_labels = ck.opt(&raw.docker_labels, "agent.docker_labels", true, |b| Ok(*b));
    let max_services = ck.opt(
        &raw.max_services,
        "agent.max_services",
        MAX_SERVICES_LIMIT,
        |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| (1..=MAX_SERVICES_LIMIT).contains(n))
                .ok_or_else(|| {
                    format!("{n} is out of range 1..={MAX_SERVICES_LIMIT} (the kernel's service index space)")
                })
        },
    );
    let max_event_streams =
        super::api_limits::resolve_max_event_streams(ck, &raw.max_event_streams);
    let docker_socket = ck.opt(
        &raw.docker_socket,
        "agent.docker_socket",
        d.docker_socket,
        absolute_path,
    );
    Some(AgentConfig {
        docker_labels: docker_labels?,
        docker_socket: docker_socket?,
        status_listen: status_listen?,
        themes_dir: themes_dir?,
        state_dir: state_dir?,
        ignore_sources: ok.then_some(ignore_sources)?,
        token_file: token_file?,
        alert_webhook: alert_webhook?,
        alert_ca_file: alert_ca_file?,
        api_hosts: api_hosts?,
        max_services: max_services?,
        max_event_streams: max_event_streams?,
    })
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,max_rest}`: safe in URLs, logs and paths.
/// Whether `name` follows the service-name rules (what `requires` may name
/// too: labels are input, and names end up in logs and terminals).
pub(super) fn is_service_name(name: &str) -> bool {
    is_valid_name(name, 62)
}

fn is_valid_name(name: &str, max_rest: usize) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= max_rest.saturating_add(1)
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn resolve_target(ck: &mut Checker<'_>, p: &str, svc: &Spanned<RawService>) -> Option<Target> {
    let raw = svc.get_ref();
    match (&raw.compose_dir, &raw.containers) {
        (Some(_), Some(c)) => {
            let msg = "give either `compose_dir` or `containers`, not both";
            ck.err(c, format!("{p}.containers"), msg);
            None
        }
        (None, None) => {
            ck.err(
                svc,
                p,
                "missing `compose_dir` (or `containers`): nothing to start or stop",
            );
            None
        }
        (Some(dir), None) => {
            let field = format!("{p}.compose_dir");
            ck.one(dir, &field, absolute_path).map(Target::ComposeDir)
        }
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                ck.err(
                    list,
                    format!("{p}.containers"),
                    "`containers` must not be empty",
                );
                return None;
            }
            let mut names: Vec<String> = Vec::new();
            let mut ok = true;
            for (i, c) in list.get_ref().iter().enumerate() {
                let name = c.get_ref();
                let field = format!("{p}.containers[{i}]");
                if !is_valid_name(name, 254) {
                    ck.err(c, field, format!("invalid container name {name:?}"));
                    ok = false;
                } else if names.contains(name) {
                    ck.err(c, field, format!("container {name:?} is listed twice"));
                    ok = false;
                } else {
                    names.push(name.clone());
                }
            }
            ok.then_some(Target::Containers(names))
        }
    }
}

fn resolve_service(
    ck: &mut Checker<'_>,
    index: usize,
    svc: &Spanned<RawService>,
    themes: &ThemeCatalog,
) -> Option<ServiceConfig> {
    let p = format!("service[{index}]");
    let raw = svc.get_ref();
    let name = raw.name.get_ref();
    if !is_service_name(name) {
        let msg =
            format!("invalid service name {name:?} (expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}})");
        ck.err(&raw.name, format!("{p}.name"), msg);
    }
    let ports = ports::resolve_ports(ck, &p, svc);
    let idle_timeout = match (&raw.idle_timeout, &raw.timeout) {
        (Some(_), Some(ms)) => {
            ck.err(
                ms,
                format!("{p}.timeout"),
                "give either `idle_timeout` or `timeout` (ms), not both",
            );
            None
        }
        (None, Some(ms)) => {
            let field = format!("{p}.timeout");
            ck.one(ms, &field, |v| duration::from_millis(*v))
        }
        (idle, None) => {
            let f = format!("{p}.idle_timeout");
            ck.opt(idle, &f, DEFAULT_IDLE_TIMEOUT, |s| duration::parse_human(s))
        }
    };
    let mode = ck.opt(
        &raw.mode,
        &format!("{p}.mode"),
        Mode::Blocking,
        |m| match m.as_str() {
            "dynamic" => Ok(Mode::Dynamic),
            "blocking" => Ok(Mode::Blocking),
            other => Err(format!(
                "unknown mode {other:?} (expected \"dynamic\" or \"blocking\")"
            )),
        },
    );
    let theme = ck.opt(&raw.theme, &format!("{p}.theme"), None, |t| {
        if !is_valid_theme_name(t) {
            Err(format!("invalid theme name {t:?}: must be a bare name ([A-Za-z0-9_-]+, no dots or slashes)"))
        } else if !themes.contains(t) {
            let known = themes.names().collect::<Vec<_>>().join(", ");
            Err(format!("unknown theme {t:?} (known: {known})"))
        } else {
            Ok(Some(t.clone()))
        }
    });
    let theme = match (mode, theme) {
        (Some(Mode::Blocking), Some(Some(t))) => {
            if let Some(spanned) = &raw.theme {
                let msg = format!("theme {t:?} is ignored because mode is \"blocking\"");
                ck.warn(spanned, format!("{p}.theme"), msg);
            }
            Some(Some(t))
        }
        (Some(Mode::Dynamic), Some(None)) => Some(Some(DEFAULT_THEME.to_string())),
        (_, t) => t,
    };
    let target = resolve_target(ck, &p, svc);
    let start_timeout = ck.opt(
        &raw.start_timeout,
        &format!("{p}.start_timeout"),
        DEFAULT_START_TIMEOUT,
        |s| duration::parse_human(s),
    );
    let max_held = ck.opt(
        &raw.max_held_connections,
        &format!("{p}.max_held_connections"),
        DEFAULT_MAX_HELD_CONNECTIONS,
        |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| (1..=MAX_HELD_CONNECTIONS_LIMIT).contains(n))
                .ok_or_else(|| format!("{n} is out of range 1..={MAX_HELD_CONNECTIONS_LIMIT}"))
        },
    );
    let wake = warm::resolve(ck, &p, raw);
    let sleep = ck.opt(&raw.sleep, &format!("{p}.sleep"), Sleep::Stop, |s| {
        Sleep::parse(s)
    });
    Some(ServiceConfig {
        name: name.clone(),
        ports: ports?,
        idle_timeout: idle_timeout?,
        mode: mode?,
        theme: theme?,
        target: target?,
        start_timeout: start_timeout?,
        hold_while_connected: raw.hold_while_connected.unwrap_or(false),
        max_held_connections: max_held?,
        wake: wake?,
        sleep: sleep?,
    })
}

/// The file alone may not hold more services than `agent.max_services`;
/// the error points at the first one beyond it.
fn check_service_count(ck: &mut Checker<'_>, services: &[Spanned<RawService>], max: u32) {
    let Some(first_extra) = usize::try_from(max).ok().and_then(|max| services.get(max)) else {
        return;
    };
    let msg = format!(
        "{} services configured, more than agent.max_services ({max}); raise it (up to {MAX_SERVICES_LIMIT}) or remove services",
        services.len()
    );
    ck.err(&first_extra.get_ref().name, "agent.max_services", msg);
}

/// Service names must be unique across the file.
fn check_unique_names(ck: &mut Checker<'_>, services: &[Spanned<RawService>]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, svc) in services.iter().enumerate() {
        let raw = svc.get_ref();
        let name = raw.name.get_ref();
        if let Some(first) = names.get(name.as_str()) {
            let msg = format!("duplicate service name {name:?} (already used by service[{first}])");
            ck.err(&raw.name, format!("service[{i}].name"), msg);
        } else {
            names.insert(name, i);
        }
    }
}
