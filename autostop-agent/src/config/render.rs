//! Renders a resolved [`Config`] back to TOML in the documented format (the
//! inverse of parsing), e.g. for `autostop config show` or after an import.

use std::fmt::Write as _;
use std::path::Path;

use super::duration::format_human;
use super::{Config, Protocol, ServiceConfig, Sleep, Target};

/// TOML basic-string literal for `s`, with all required escapes.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn list<I: IntoIterator<Item = String>>(items: I) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

pub(crate) fn render(cfg: &Config) -> String {
    let a = &cfg.agent;
    let mut out = String::from("[agent]\n");
    let _ = writeln!(
        out,
        "status_listen = {}",
        quote(&a.status_listen.to_string())
    );
    let _ = writeln!(out, "themes_dir = {}", path(&a.themes_dir));
    let _ = writeln!(out, "state_dir = {}", path(&a.state_dir));
    let nets = a.ignore_sources.iter().map(|n| quote(&n.to_string()));
    let _ = writeln!(out, "ignore_sources = {}", list(nets));
    if let Some(t) = &a.token_file {
        let _ = writeln!(out, "token_file = {}", path(t));
    }
    if let Some(w) = &a.alert_webhook {
        let _ = writeln!(out, "alert_webhook = {}", quote(w));
    }
    if !a.docker_labels {
        let _ = writeln!(out, "docker_labels = false");
    }
    if a.docker_socket != Path::new(super::DEFAULT_DOCKER_SOCKET) {
        let _ = writeln!(out, "docker_socket = {}", path(&a.docker_socket));
    }
    if let Some(ca) = &a.alert_ca_file {
        let _ = writeln!(out, "alert_ca_file = {}", path(ca));
    }
    if !a.api_hosts.is_empty() {
        let hosts = a.api_hosts.iter().map(|h| quote(&h.to_string()));
        let _ = writeln!(out, "api_hosts = {}", list(hosts));
    }
    if a.max_services != super::MAX_SERVICES_LIMIT {
        let _ = writeln!(out, "max_services = {}", a.max_services);
    }
    if a.max_event_streams != super::DEFAULT_MAX_EVENT_STREAMS {
        let _ = writeln!(out, "max_event_streams = {}", a.max_event_streams);
    }
    for svc in &cfg.services {
        out.push('\n');
        render_service(&mut out, svc);
    }
    out
}

fn render_service(out: &mut String, s: &ServiceConfig) {
    let _ = writeln!(out, "[[service]]\nname = {}", quote(&s.name));
    match s.ports.as_slice() {
        [one] if one.protocol == Protocol::Tcp => {
            let _ = writeln!(out, "port = {}", one.port);
        }
        ports => {
            let items = ports.iter().map(|p| match p.protocol {
                Protocol::Tcp => p.port.to_string(),
                Protocol::Udp => quote(&p.to_string()),
            });
            let _ = writeln!(out, "ports = {}", list(items));
        }
    }
    let _ = writeln!(
        out,
        "idle_timeout = {}",
        quote(&format_human(s.idle_timeout))
    );
    let _ = writeln!(out, "mode = {}", quote(s.mode.as_str()));
    if let Some(theme) = &s.theme {
        let _ = writeln!(out, "theme = {}", quote(theme));
    }
    match &s.target {
        Target::ComposeDir(dir) => {
            let _ = writeln!(out, "compose_dir = {}", path(dir));
        }
        Target::Containers(names) => {
            let _ = writeln!(out, "containers = {}", list(names.iter().map(|n| quote(n))));
        }
    }
    let _ = writeln!(
        out,
        "start_timeout = {}",
        quote(&format_human(s.start_timeout))
    );
    let _ = writeln!(out, "hold_while_connected = {}", s.hold_while_connected);
    let _ = writeln!(out, "max_held_connections = {}", s.max_held_connections);
    let wake = &s.wake;
    if !wake.keep_warm.is_empty() {
        let windows = wake.keep_warm.iter().map(|w| quote(&w.to_string()));
        let _ = writeln!(out, "keep_warm = {}", list(windows));
    }
    if wake.prewarm {
        let _ = writeln!(out, "prewarm = true");
    }
    if !wake.requires.is_empty() {
        let _ = writeln!(
            out,
            "requires = {}",
            list(wake.requires.iter().map(|r| quote(r)))
        );
    }
    if let Some(busy) = wake.busy_cpu_percent {
        let _ = writeln!(out, "busy_cpu_percent = {busy}");
    }
    if s.sleep != Sleep::Stop {
        let _ = writeln!(out, "sleep = {}", quote(s.sleep.as_str()));
    }
}
