//! Where Docker publishes a port on the host: the (address, port) pair
//! every part of the agent that steers, redirects or answers connections
//! matches on, so the agent never takes a connection Docker itself would
//! not accept (a port published on 127.0.0.1 is steered on 127.0.0.1
//! only).
//!
//! Docker's `HostIp` of `""`, `0.0.0.0` or `::` means every local address;
//! that is [`HostPort::addr`] `None`.

use std::{fmt, net::IpAddr};

/// One TCP port as Docker publishes it on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The host address the port is published on; `None` for every local
    /// address (Docker's empty `HostIp`, `0.0.0.0` or `::`).
    pub addr: Option<IpAddr>,
    /// The host port, host byte order.
    pub port: u16,
}

impl HostPort {
    /// The port on every local address.
    pub const fn any(port: u16) -> Self {
        Self { addr: None, port }
    }

    /// The port on one address; the unspecified addresses mean every one.
    /// An IPv4-mapped IPv6 address is its IPv4 address (as the kernel
    /// sees the connections), so `::ffff:0.0.0.0` is every address too.
    pub fn on(addr: IpAddr, port: u16) -> Self {
        let addr = Some(canonical(addr)).filter(|a| !a.is_unspecified());
        Self { addr, port }
    }

    /// Parses Docker's `HostIp` field of a port binding (`""`, `0.0.0.0`,
    /// `::`, `127.0.0.1`, `::1`, …); `None` when it is not an address.
    pub fn from_docker(host_ip: Option<&str>, port: u16) -> Option<Self> {
        match host_ip.map(str::trim).unwrap_or_default() {
            "" => Some(Self::any(port)),
            text => {
                let text = text.trim_start_matches('[').trim_end_matches(']');
                text.parse::<IpAddr>().ok().map(|a| Self::on(a, port))
            }
        }
    }

    /// Whether a connection to local address `dst` on `port` is one Docker
    /// accepts for this binding. IPv4-mapped IPv6 addresses compare as IPv4.
    pub fn matches(&self, dst: IpAddr, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match self.addr {
            None => true,
            Some(addr) => canonical(addr) == canonical(dst),
        }
    }

    /// Whether a socket listening on `local` takes connections this
    /// binding would steer (the same port, and an address in common: a
    /// listener on every address overlaps any binding, a binding on every
    /// address overlaps any listener).
    pub fn overlaps(&self, local: std::net::SocketAddr) -> bool {
        if local.port() != self.port {
            return false;
        }
        let ip = local.ip();
        self.addr.is_none() || ip.is_unspecified() || self.matches(ip, self.port)
    }

    /// The address in the form the kernel maps store it: IPv4 as
    /// `::ffff:a.b.c.d`, every address as all zeros.
    pub fn mapped_addr(&self) -> [u8; 16] {
        match self.addr {
            None => [0; 16],
            Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
            Some(IpAddr::V6(v6)) => v6.octets(),
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, others unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// Why a `HostPort` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host port {0:?}: expected ADDR:PORT, [ADDR6]:PORT or *:PORT")]
pub struct HostPortParseError(pub String);

impl std::str::FromStr for HostPort {
    type Err = HostPortParseError;

    /// `127.0.0.1:8080`, `[::1]:8080`, or `*:8080` for every address.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || HostPortParseError(text.to_owned());
        let (addr, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if addr == "*" {
            return Ok(Self::any(port));
        }
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        Ok(Self::on(addr, port))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            None => write!(f, "*:{}", self.port),
            Some(IpAddr::V4(v4)) => write!(f, "{v4}:{}", self.port),
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_ips() {
        assert_eq!(HostPort::from_docker(None, 80), Some(HostPort::any(80)));
        assert_eq!(HostPort::from_docker(Some(""), 80), Some(HostPort::any(80)));
        assert_eq!(
            HostPort::from_docker(Some("0.0.0.0"), 80),
            Some(HostPort::any(80))
        );
        assert_eq!(
            HostPort::from_docker(Some("::"), 80),
            Some(HostPort::any(80))
        );
        let lo = HostPort::from_docker(Some("127.0.0.1"), 80).expect("address");
        assert_eq!(lo.to_string(), "127.0.0.1:80");
        let lo6 = HostPort::from_docker(Some("[::1]"), 80).expect("address");
        assert_eq!(lo6.to_string(), "[::1]:80");
        assert_eq!(HostPort::from_docker(Some("localhost"), 80), None);
        // Found by prop_set_keys_round_trip: a mapped unspecified address
        // was one address (0.0.0.0) that no connection has.
        assert_eq!(
            HostPort::from_docker(Some("::ffff:0.0.0.0"), 80),
            Some(HostPort::any(80))
        );
        assert_eq!(
            HostPort::from_docker(Some("::ffff:127.0.0.1"), 80).map(|h| h.to_string()),
            Some("127.0.0.1:80".to_owned())
        );
    }

    #[test]
    fn parsing_reads_back_display() {
        for text in ["*:80", "127.0.0.1:8080", "[::1]:443"] {
            let parsed: HostPort = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!("0.0.0.0:80".parse::<HostPort>(), Ok(HostPort::any(80)));
        assert!("80".parse::<HostPort>().is_err());
        assert!("host:80".parse::<HostPort>().is_err());
    }

    #[test]
    fn matching() {
        let lo = HostPort::on("127.0.0.1".parse().expect("ip"), 8080);
        assert!(lo.matches("127.0.0.1".parse().expect("ip"), 8080));
        assert!(lo.matches("::ffff:127.0.0.1".parse().expect("ip"), 8080));
        assert!(!lo.matches("10.0.0.1".parse().expect("ip"), 8080));
        assert!(!lo.matches("127.0.0.1".parse().expect("ip"), 8081));
        assert!(HostPort::any(8080).matches("10.0.0.1".parse().expect("ip"), 8080));
        assert_eq!(HostPort::any(1).mapped_addr(), [0; 16]);
        assert_eq!(lo.mapped_addr()[10..], [0xff, 0xff, 127, 0, 0, 1]);
    }
}
