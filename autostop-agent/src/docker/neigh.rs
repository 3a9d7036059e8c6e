//! Permanent neighbour entry for a freshly started container.
//!
//! Measured on this machine: the first SYN to a just-started container is
//! often routed before its veth has joined the bridge; the ARP request is
//! lost, the neighbour entry goes INCOMPLETE and the retry waits
//! `retrans_time` (1000 ms), so readiness lags by ≈1.15 s. A PERMANENT entry
//! (container IP → MAC, both from inspect) on the bridge means no ARP is
//! needed at all. It is added right after `docker start` returns (the address
//! does not exist before) and before the first probe, and removed once the
//! service is ready. This was chosen over lowering
//! `net.ipv4.neigh.<bridge>.retrans_time_ms` because it changes nothing
//! host-wide and leaves no tuning behind; a REACHABLE entry does not help.

use std::net::IpAddr;

use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::DockerError;

/// A permanent neighbour entry, deleted by [`remove`](Self::remove) or, as a
/// fallback, in the background when dropped.
#[derive(Debug)]
pub struct NeighbourPin {
    /// Netlink handle the entry was added with.
    handle: Handle,
    /// Bridge interface index.
    ifindex: u32,
    /// Container address.
    ip: IpAddr,
    /// Whether the entry still needs deleting.
    armed: bool,
}

/// Opens a netlink connection, driving it on the current tokio runtime.
pub fn connect() -> Result<Handle, DockerError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| DockerError::Netlink(e.to_string()))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn ifindex(bridge: &str) -> Result<u32, DockerError> {
    nix::net::if_::if_nametoindex(bridge)
        .map_err(|e| DockerError::Netlink(format!("no interface {bridge}: {e}")))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Longest wait for the kernel's answer to one neighbour request.
pub const NETLINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl NeighbourPin {
    /// Adds (or replaces) `ip → mac` as PERMANENT on `bridge`.
    pub async fn add(
        handle: &Handle,
        bridge: &str,
        ip: IpAddr,
        mac: &str,
    ) -> Result<Self, DockerError> {
        let ifindex = ifindex(bridge)?;
        let lla = parse_mac(mac).ok_or_else(|| DockerError::Netlink(format!("bad MAC {mac:?}")))?;
        handle
            .neighbours()
            .add(ifindex, ip)
            .link_layer_address(&lla)
            .replace()
            .execute()
            .await
            .map_err(|e| DockerError::Netlink(e.to_string()))?;
        Ok(Self {
            handle: handle.clone(),
            ifindex,
            ip,
            armed: true,
        })
    }

    fn del_message(&self) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match self.ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = self.ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(match self.ip {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        msg
    }

    /// Deletes the entry (the kernel then resolves the address normally).
    pub async fn remove(mut self) -> Result<(), DockerError> {
        self.armed = false;
        self.handle
            .neighbours()
            .del(self.del_message())
            .execute()
            .await
            .map_err(|e| DockerError::Netlink(e.to_string()))
    }
}

impl Drop for NeighbourPin {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let req = self.handle.neighbours().del(self.del_message());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = req.execute().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:02:03"), None);
        assert_eq!(parse_mac(""), None);
    }
}
