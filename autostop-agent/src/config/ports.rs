//! Port handling for services: `port = N` / `ports = [N, "N/udp", ...]`
//! resolved to [`PortSpec`]s, and the check that every (port, protocol) pair
//! is used by at most one service (two listeners cannot share it).

use std::collections::HashMap;

use toml::Spanned;

use super::raw::{RawPort, RawService};
use super::validate::Checker;
use super::{PortSpec, Protocol};

fn port_number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {n} is out of range 1..=65535"))
}

fn parse_port(raw: &RawPort) -> Result<PortSpec, String> {
    let text = match raw {
        RawPort::Number(n) => {
            return port_number(*n).map(|port| PortSpec {
                port,
                protocol: Protocol::Tcp,
            })
        }
        RawPort::Text(t) => t,
    };
    let (num, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => {
            return Err(format!(
                "unknown protocol {proto:?} in {text:?} (expected tcp or udp)"
            ))
        }
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid port {text:?} (expected e.g. 8080 or \"10000/udp\")"))?;
    Ok(PortSpec {
        port: port_number(n)?,
        protocol,
    })
}

/// All ports of a service with their spans, for uniqueness checks.
fn service_ports(raw: &RawService) -> Vec<(&Spanned<RawPort>, usize)> {
    raw.ports
        .iter()
        .flat_map(|p| p.get_ref().iter().enumerate().map(|(i, x)| (x, i)))
        .collect()
}

pub(super) fn resolve_ports(
    ck: &mut Checker<'_>,
    p: &str,
    svc: &Spanned<RawService>,
) -> Option<Vec<PortSpec>> {
    let raw = svc.get_ref();
    match (&raw.port, &raw.ports) {
        (Some(_), Some(ports)) => {
            ck.err(
                ports,
                format!("{p}.ports"),
                "give either `port` or `ports`, not both",
            );
            None
        }
        (None, None) => {
            ck.err(
                svc,
                p,
                "missing `port` (or `ports`): the service needs a published port",
            );
            None
        }
        (Some(port), None) => {
            let field = format!("{p}.port");
            ck.one(port, &field, |n| port_number(*n)).map(|port| {
                vec![PortSpec {
                    port,
                    protocol: Protocol::Tcp,
                }]
            })
        }
        (None, Some(ports)) if ports.get_ref().is_empty() => {
            ck.err(ports, format!("{p}.ports"), "`ports` must not be empty");
            None
        }
        (None, Some(_)) => {
            let mut out = Some(Vec::new());
            for (item, i) in service_ports(raw) {
                match parse_port(item.get_ref()) {
                    Ok(spec) => out.iter_mut().for_each(|v| v.push(spec)),
                    Err(msg) => {
                        ck.err(item, format!("{p}.ports[{i}]"), msg);
                        out = None;
                    }
                }
            }
            out
        }
    }
}

/// (port, protocol) pairs must be unique across the file.
pub(super) fn check_unique_ports(
    ck: &mut Checker<'_>,
    services: &[Spanned<RawService>],
    status_port: Option<u16>,
) {
    let mut ports: HashMap<PortSpec, String> = HashMap::new();
    if let Some(port) = status_port {
        // A service steered on the API's port would take the API over.
        let spec = PortSpec {
            port,
            protocol: Protocol::Tcp,
        };
        ports.insert(spec, "agent.status_listen".to_owned());
    }
    for (i, svc) in services.iter().enumerate() {
        let raw = svc.get_ref();
        let mut found = Vec::new();
        if let Some(p) = &raw.port {
            if let Ok(port) = port_number(*p.get_ref()) {
                let spec = PortSpec {
                    port,
                    protocol: Protocol::Tcp,
                };
                found.push((p.span(), spec, format!("service[{i}].port")));
            }
        }
        for (item, j) in service_ports(raw) {
            if let Ok(spec) = parse_port(item.get_ref()) {
                found.push((item.span(), spec, format!("service[{i}].ports[{j}]")));
            }
        }
        for (span, spec, field) in found {
            if let Some(first) = ports.get(&spec) {
                let msg = format!("port {spec} is already used by {first}");
                ck.errors.push(ck.loc.error(span, field, msg));
            } else {
                ports.insert(spec, field);
            }
        }
    }
}
