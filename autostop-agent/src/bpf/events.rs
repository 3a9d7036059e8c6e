//! Wake events: the sk_lookup program writes one into a ring buffer for a
//! SYN to a steered port, at most one per port per 100 ms (rate-limited in
//! the kernel; see `autostop-ebpf/src/steering.rs` for the exact bound).
//! [`WakeEvents`] reads them as an async stream on tokio's reactor.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use autostop_common::family;
use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use super::BpfError;

/// Address family of a steered connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Someone opened a connection to a steered port: the service should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeEvent {
    /// Service index the port was steered for.
    pub service: u32,
    /// The steered local port.
    pub port: u16,
    /// Family of the connection.
    pub family: Family,
    /// Who knocked (address and port), to log and to tell health checks
    /// from users.
    pub source: SocketAddr,
    /// The source is in the ignored set: a health check or monitor, which
    /// the agent may choose not to wake a service for.
    pub ignored_source: bool,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`) of the lookup.
    pub ktime_ns: u64,
}

impl WakeEvent {
    /// Decodes the kernel's record; `None` for an unknown family.
    pub fn from_raw(raw: &autostop_common::WakeEvent) -> Option<Self> {
        let (family, ip) = match raw.family {
            family::IPV4 => {
                let a = &raw.source_addr;
                (
                    Family::V4,
                    IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15])),
                )
            }
            family::IPV6 => (Family::V6, IpAddr::V6(Ipv6Addr::from(raw.source_addr))),
            _ => return None,
        };
        Some(Self {
            service: raw.service,
            port: raw.port,
            family,
            source: SocketAddr::new(ip, raw.source_port),
            ignored_source: raw.ignored_source != 0,
            ktime_ns: raw.ktime_ns,
        })
    }

    /// Decodes one ring buffer record.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<autostop_common::WakeEvent>() {
            return None;
        }
        // SAFETY: the record holds at least size_of::<WakeEvent>() bytes
        // (checked above), WakeEvent is plain old data valid for any bit
        // pattern, and read_unaligned makes no alignment assumption.
        let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Self::from_raw(&raw)
    }
}

/// The single reader of the wake event ring buffer. Keeps the ring buffer
/// map alive on its own, so it may outlive the [`super::Datapath`] (then no new
/// events arrive).
pub struct WakeEvents {
    /// The ring buffer, registered with tokio's reactor for readability.
    ring: AsyncFd<RingBuf<MapData>>,
}

impl WakeEvents {
    /// Waits for the next wake event.
    pub async fn next(&mut self) -> Result<WakeEvent, BpfError> {
        loop {
            if let Some(event) = self.try_next() {
                return Ok(event);
            }
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|source| BpfError::Io {
                    what: "waiting on the wake event ring buffer",
                    source,
                })?;
            // Read before clearing, so an event that arrived between the
            // try_next above and the wakeup is not left waiting.
            if let Some(event) = next_event(guard.get_inner_mut()) {
                return Ok(event);
            }
            guard.clear_ready();
        }
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<WakeEvent> {
        next_event(self.ring.get_mut())
    }
}

/// Pops records until a decodable one (records of an unknown family are
/// skipped) or the ring is empty.
fn next_event(ring: &mut RingBuf<MapData>) -> Option<WakeEvent> {
    loop {
        let item = ring.next()?;
        if let Some(event) = WakeEvent::from_bytes(&item) {
            return Some(event);
        }
    }
}

impl WakeEvents {
    /// Registers the ring buffer with tokio's reactor (so it must be called
    /// inside a tokio runtime).
    pub(super) fn register(ring: RingBuf<MapData>) -> Result<Self, BpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BpfError::Io {
                what: "registering the wake event ring buffer",
                source: std::io::Error::other("not inside a tokio runtime"),
            });
        }
        // SAFETY: the RingBuf owns its map fd (through MapData) and returns
        // that same fd from as_raw_fd for as long as it lives; the AsyncFd
        // owns the RingBuf, so the fd stays open while registered.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(
            |error| BpfError::Io {
                what: "registering the wake event ring buffer",
                source: error.into(),
            },
        )?;
        Ok(WakeEvents { ring })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v4_and_v6_records_and_skips_unknown_families() {
        let mut raw = autostop_common::WakeEvent {
            service: 3,
            port: 9500,
            family: family::IPV4,
            ignored_source: 1,
            source_addr: autostop_common::v4_mapped([10, 250, 0, 2]),
            source_port: 40000,
            _pad16: 0,
            _pad32: 0,
            ktime_ns: 42,
        };
        let event = WakeEvent::from_raw(&raw).expect("v4");
        assert_eq!(event.source, "10.250.0.2:40000".parse().expect("addr"));
        assert_eq!(event.family, Family::V4);
        assert!(event.ignored_source);
        assert_eq!((event.service, event.port, event.ktime_ns), (3, 9500, 42));

        raw.family = family::IPV6;
        raw.source_addr = Ipv6Addr::LOCALHOST.octets();
        let event = WakeEvent::from_raw(&raw).expect("v6");
        assert_eq!(event.source, "[::1]:40000".parse().expect("addr"));

        raw.family = 9;
        assert!(WakeEvent::from_raw(&raw).is_none());
        assert!(WakeEvent::from_bytes(&[0u8; 8]).is_none());
    }
}
