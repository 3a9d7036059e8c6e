//! `[agent] api_hosts`: extra host names the status API answers to (besides
//! loopback), and [`ApiHost`], the normalised form of a host name that the
//! API's Host and Origin checks compare.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use toml::Spanned;

use super::validate::Checker;

/// A host as the API compares it: an IP address, or a DNS name in lower
/// case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApiHost {
    /// A DNS name, e.g. `status.example.lan` or `localhost`.
    Name(String),
    /// An IP literal (`127.0.0.1`, `::1`).
    Ip(IpAddr),
}

impl ApiHost {
    /// Parses the host part of a Host header or URL (no port): a name, an
    /// IPv4 address or a bracketed IPv6 address. Names are compared without
    /// case and without one trailing dot. `None` for anything else.
    pub fn from_host(text: &str) -> Option<Self> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner.parse::<Ipv6Addr>().ok().map(|ip| Self::Ip(ip.into()));
        }
        if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
            return Some(Self::Ip(ip.into()));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        is_dns_name(&name).then_some(Self::Name(name))
    }

    /// Parses one `api_hosts` entry: like [`Self::from_host`], and an IPv6
    /// address may be written without brackets. The error says why.
    pub fn parse_entry(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if let Some(host) = Self::from_host(text) {
            return Ok(host);
        }
        if text.contains(':') || text.contains('/') {
            return Err(format!(
                "{text:?} is not a host name: give the name alone (no scheme, port or path); every port is accepted"
            ));
        }
        Err(format!(
            "{text:?} is not a host name (letters, digits, '-' and '_' in dot-separated labels) or an IP address"
        ))
    }

    /// Whether this names the loopback interface: `localhost`, 127.0.0.0/8
    /// or `::1`.
    pub fn is_loopback(&self) -> bool {
        match self {
            Self::Name(name) => name == "localhost",
            Self::Ip(ip) => ip.is_loopback(),
        }
    }
}

impl fmt::Display for ApiHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Dot-separated labels of 1..=63 characters from `[a-z0-9_-]`, not
/// starting or ending with `-`, at most 253 characters in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// Validates `agent.api_hosts`; `None` after an error (each one recorded).
pub(super) fn resolve(
    ck: &mut Checker<'_>,
    raw: &Option<Vec<Spanned<String>>>,
) -> Option<Vec<ApiHost>> {
    let mut hosts: Vec<ApiHost> = Vec::new();
    let mut ok = true;
    for (i, entry) in raw.iter().flatten().enumerate() {
        let field = format!("agent.api_hosts[{i}]");
        match ApiHost::parse_entry(entry.get_ref()) {
            Ok(host) if hosts.contains(&host) => {
                ck.warn(entry, field, format!("{host} is listed twice"));
            }
            Ok(host) => hosts.push(host),
            Err(msg) => {
                ck.err(entry, field, msg);
                ok = false;
            }
        }
    }
    ok.then_some(hosts)
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

    #[test]
    fn host_forms_normalise() {
        assert_eq!(
            ApiHost::from_host("Status.Example.LAN."),
            Some(ApiHost::Name("status.example.lan".into()))
        );
        assert_eq!(
            ApiHost::from_host("[::1]"),
            Some(ApiHost::Ip("::1".parse().expect("ip")))
        );
        assert_eq!(
            ApiHost::from_host("127.0.0.1"),
            Some(ApiHost::Ip("127.0.0.1".parse().expect("ip")))
        );
        for bad in [
            "",
            "::1",
            "a..b",
            "-a.b",
            "a b",
            "évil.example",
            "[::1",
            "x/y",
        ] {
            assert_eq!(ApiHost::from_host(bad), None, "{bad:?}");
        }
        assert!(ApiHost::from_host("LOCALHOST").is_some_and(|h| h.is_loopback()));
        assert!(ApiHost::from_host("127.3.2.1").is_some_and(|h| h.is_loopback()));
        assert!(!ApiHost::from_host("localhost.evil.example").is_some_and(|h| h.is_loopback()));
    }

    #[test]
    fn entries_take_bare_ipv6_and_refuse_ports() {
        assert_eq!(
            ApiHost::parse_entry("fd00::5"),
            Ok(ApiHost::Ip("fd00::5".parse().expect("ip")))
        );
        let err = ApiHost::parse_entry("status.lan:8080").expect_err("port");
        assert!(err.contains("every port is accepted"), "{err}");
        assert!(ApiHost::parse_entry("https://status.lan").is_err());
    }
}
