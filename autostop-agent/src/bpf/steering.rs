//! Steering: the sk_lookup program, attached to the agent's own network
//! namespace, hands new TCP connections to the published host ports of
//! stopped or warming services to the agent's listener, so the agent can
//! hold them while the service starts. The accepted socket's local address
//! is the original destination (say 127.0.0.1:9500), which tells the agent
//! which service was asked for.
//!
//! Only the steered bindings are touched: (local address, port) exactly as
//! Docker publishes them, so a port Docker publishes on 127.0.0.1 is never
//! answered on another address while its service sleeps. Only those are
//! touched; on any kernel-side error the
//! stock lookup goes on (fail open). Connections the agent already accepted
//! survive [`SteeringMaps::unsteer`]. Attaching the program is the
//! [`super::Classifier`]'s (it owns the loaded object).

use std::{
    net::{IpAddr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use autostop_common::{
    names, SteerKey, LISTENER_SLOT_V4, LISTENER_SLOT_V6, MAX_SERVICES, STEER_ANY, STEER_EXACT,
};
use aya::maps::{HashMap, MapData, MapError, SockMap};
use nix::{
    errno::Errno,
    sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, GetSockOpt, SockType, SockaddrLike,
        SockaddrStorage,
    },
};

use super::{BpfError, PortFilter};
use crate::published::HostPort;

/// Which listener slots a registered socket took: an IPv4 listener takes
/// IPv4 connections, an IPv6-only one IPv6 connections, a dual-stack one
/// both. (The kernel refuses to assign a connection to a socket of the other
/// family, so a family without a listener falls through to the stock path.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSlots {
    /// The socket takes steered IPv4 connections.
    pub ipv4: bool,
    /// The socket takes steered IPv6 connections.
    pub ipv6: bool,
}

/// The sk_lookup program's maps: the steered bindings (by address and
/// port, and by port alone), their port filter, and the agent's listener
/// slots.
pub struct SteeringMaps {
    /// Steered (local address, TCP port) → service index, for ports
    /// published on one address.
    steered: HashMap<MapData, SteerKey, u32>,
    /// Steered TCP port → service index, for ports published on every
    /// address.
    steered_any: HashMap<MapData, u16, u32>,
    /// Port → which of the two maps hold it (the sk_lookup program's first,
    /// cheap filter).
    steered_ports: PortFilter,
    /// The agent's listener sockets, by family slot.
    listeners: SockMap<MapData>,
}

impl SteeringMaps {
    pub(super) fn new(
        steered: HashMap<MapData, SteerKey, u32>,
        steered_any: HashMap<MapData, u16, u32>,
        steered_ports: PortFilter,
        listeners: SockMap<MapData>,
    ) -> Self {
        Self {
            steered,
            steered_any,
            steered_ports,
            listeners,
        }
    }

    /// Makes `listener` (a listening TCP socket of the agent) the one that
    /// receives steered connections of its family, replacing any previous
    /// one. The kernel drops the entry by itself when the socket closes.
    pub fn register_listener<S: AsFd>(&mut self, listener: &S) -> Result<ListenerSlots, BpfError> {
        let fd = listener.as_fd();
        let slots = listener_slots(fd)?;
        for (wanted, slot) in [
            (slots.ipv4, LISTENER_SLOT_V4),
            (slots.ipv6, LISTENER_SLOT_V6),
        ] {
            if wanted {
                self.listeners
                    .set(slot, &fd, 0)
                    .map_err(|source| BpfError::Map {
                        map: names::LISTENERS,
                        source,
                    })?;
            }
        }
        Ok(slots)
    }

    /// Empties both listener slots: steered connections then go on to the
    /// stock path (refused when nothing listens on the port).
    pub fn unregister_listeners(&mut self) -> Result<(), BpfError> {
        for slot in [LISTENER_SLOT_V4, LISTENER_SLOT_V6] {
            match self.listeners.clear_index(&slot) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(Errno::ENOENT as i32) => {}
                Err(source) => {
                    return Err(BpfError::Map {
                        map: names::LISTENERS,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Steers new TCP connections to `binding` (that local address and
    /// port, or every local address when it has none; both families) to
    /// the agent's listener, and sends a wake event for `service` on the
    /// first SYN (then at most one per port per 100 ms). Steering a
    /// binding again replaces its service.
    pub fn steer(&mut self, binding: HostPort, service: u32) -> Result<(), BpfError> {
        if service >= MAX_SERVICES {
            return Err(BpfError::ServiceIndex(service));
        }
        let (known, inserted, map) = match binding.addr {
            None => (
                self.steered_any.get(&binding.port, 0).is_ok(),
                self.steered_any.insert(binding.port, service, 0),
                names::STEERED_ANY,
            ),
            Some(_) => {
                let key = steer_key(binding);
                (
                    self.steered.get(&key, 0).is_ok(),
                    self.steered.insert(key, service, 0),
                    names::STEERED,
                )
            }
        };
        inserted.map_err(|source| BpfError::Map { map, source })?;
        if !known {
            self.steered_ports
                .retain(binding.port, port_flag(binding))?;
        }
        Ok(())
    }

    /// Stops steering `binding`: new connections take the stock path
    /// again. Connections already accepted by the agent are not affected.
    /// Unknown bindings are ignored.
    pub fn unsteer(&mut self, binding: HostPort) -> Result<(), BpfError> {
        let (removed, map) = match binding.addr {
            None => (self.steered_any.remove(&binding.port), names::STEERED_ANY),
            Some(_) => (self.steered.remove(&steer_key(binding)), names::STEERED),
        };
        match removed {
            Ok(()) => self.steered_ports.release(binding.port, port_flag(binding)),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(Errno::ENOENT as i32) =>
            {
                Ok(())
            }
            Err(source) => Err(BpfError::Map { map, source }),
        }
    }

    /// Un-steers every binding steered to `service`, before its index is
    /// given to another service.
    pub fn clear_service(&mut self, service: u32) -> Result<(), BpfError> {
        for (binding, owner) in self.steered()? {
            if owner == service {
                self.unsteer(binding)?;
            }
        }
        Ok(())
    }

    /// The steered bindings with their service indexes, in order.
    pub fn steered(&self) -> Result<Vec<(HostPort, u32)>, BpfError> {
        let exact = self
            .steered
            .iter()
            .map(|entry| entry.map(|(key, service)| (host_port(&key), service)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BpfError::Map {
                map: names::STEERED,
                source,
            })?;
        let any = self
            .steered_any
            .iter()
            .map(|entry| entry.map(|(port, service)| (HostPort::any(port), service)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BpfError::Map {
                map: names::STEERED_ANY,
                source,
            })?;
        let mut steered: Vec<(HostPort, u32)> = exact.into_iter().chain(any).collect();
        steered.sort_unstable();
        Ok(steered)
    }
}

/// The `STEERED_PORTS` flag of `binding`'s map.
fn port_flag(binding: HostPort) -> u8 {
    match binding.addr {
        None => STEER_ANY,
        Some(_) => STEER_EXACT,
    }
}

/// The kernel key of an address-specific `binding`.
fn steer_key(binding: HostPort) -> SteerKey {
    SteerKey::from_bytes(binding.mapped_addr(), binding.port)
}

/// The binding an address-specific kernel key stands for.
fn host_port(key: &SteerKey) -> HostPort {
    let v6 = Ipv6Addr::from(key.addr_bytes());
    let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    HostPort::on(addr, key.port)
}

/// Which families a listening socket can take, from its type, state,
/// address family and IPV6_V6ONLY.
fn listener_slots(fd: BorrowedFd<'_>) -> Result<ListenerSlots, BpfError> {
    if socket_option(fd, sockopt::SockType)? != SockType::Stream {
        return Err(BpfError::Listener("not a TCP (stream) socket".into()));
    }
    if !socket_option(fd, sockopt::AcceptConn)? {
        return Err(BpfError::Listener("the socket is not listening".into()));
    }
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(|errno| BpfError::Io {
        what: "getsockname on the listener",
        source: errno.into(),
    })?;
    match addr.family() {
        Some(AddressFamily::Inet) => Ok(ListenerSlots {
            ipv4: true,
            ipv6: false,
        }),
        Some(AddressFamily::Inet6) => {
            let v6only = socket_option(fd, sockopt::Ipv6V6Only)?;
            Ok(ListenerSlots {
                ipv4: !v6only,
                ipv6: true,
            })
        }
        other => Err(BpfError::Listener(format!("address family {other:?}"))),
    }
}

/// Reads socket option `option` of the borrowed socket.
fn socket_option<O: GetSockOpt>(fd: BorrowedFd<'_>, option: O) -> Result<O::Val, BpfError> {
    getsockopt(&fd, option).map_err(|errno| BpfError::Io {
        what: "getsockopt on the listener",
        source: errno.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_families_follow_bind_address_and_v6only() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        assert_eq!(
            listener_slots(v4.as_fd()).expect("v4 listener"),
            ListenerSlots {
                ipv4: true,
                ipv6: false
            }
        );
        let v6 = std::net::TcpListener::bind("[::1]:0").expect("bind v6");
        let slots = listener_slots(v6.as_fd()).expect("v6 listener");
        assert!(slots.ipv6);
        let connected = std::net::TcpStream::connect(v4.local_addr().expect("addr")).expect("c");
        let err = listener_slots(connected.as_fd()).expect_err("not listening");
        assert!(err.to_string().contains("not listening"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(listener_slots(udp.as_fd()).is_err());
    }
}
