//! The control socket's wire: a Unix `SOCK_SEQPACKET` connection (message
//! boundaries kept, descriptors passed with `SCM_RIGHTS`). One message is
//! a little-endian `u32` length, that many bytes of JSON ([`Message`]),
//! then an optional raw payload (a held connection's bytes). Every call
//! blocks, bounded by the timeout given: callers run it on a blocking
//! thread.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    time::Duration,
};

use nix::{
    sys::{
        socket::{
            accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, setsockopt, socket,
            sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags,
            SockFlag, SockType, UnixAddr,
        },
        time::TimeVal,
    },
    unistd::Uid,
};

use super::{HandoverError, Message};

/// Largest JSON part of a message.
const MAX_JSON: usize = 64 * 1024;
/// Largest payload (a held connection's bytes: at most
/// `coldstart::MAX_HELD_BYTES`, 64 KiB).
pub(super) const MAX_PAYLOAD: usize = 64 * 1024;
/// Most descriptors one message carries.
const MAX_FDS: usize = 8;

/// One end of a control connection.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// A received message with its descriptors and payload.
#[derive(Debug)]
pub struct Received {
    /// The message.
    pub message: Message,
    /// Descriptors passed with it, in order.
    pub fds: Vec<OwnedFd>,
    /// Raw bytes after the JSON.
    pub payload: Vec<u8>,
}

fn seqpacket() -> Result<OwnedFd, HandoverError> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| HandoverError::Socket(format!("socket: {e}")))
}

fn unix_addr(path: &Path) -> Result<UnixAddr, HandoverError> {
    UnixAddr::new(path).map_err(|e| HandoverError::Socket(format!("{}: {e}", path.display())))
}

/// Binds and listens on `path` (replacing a stale socket file), mode 0600.
pub fn listen_at(path: &Path) -> Result<OwnedFd, HandoverError> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| HandoverError::Socket(format!("socket: {e}")))?;
    let io = |what: &str, e: &dyn std::fmt::Display| {
        HandoverError::Socket(format!("{} {what}: {e}", path.display()))
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale socket", &e)),
    }
    // The file is created by bind with the process umask: narrow it first
    // so it is never reachable by others, even for an instant.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &unix_addr(path)?);
    nix::sys::stat::umask(old);
    bound.map_err(|e| io("bind", &e))?;
    let backlog = Backlog::new(4).map_err(|e| io("backlog", &e))?;
    listen(&fd, backlog).map_err(|e| io("listen", &e))?;
    Ok(fd)
}

/// Accepts one connection on `listener` (non-blocking: `None` when none is
/// waiting); the peer must be root or this process's user.
pub fn accept(listener: &OwnedFd) -> Result<Option<Channel>, HandoverError> {
    let raw = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        Ok(raw) => raw,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(HandoverError::Socket(format!("accept: {e}"))),
    };
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let peer = getsockopt(&fd, sockopt::PeerCredentials)
        .map_err(|e| HandoverError::Socket(format!("peer credentials: {e}")))?;
    let me = Uid::effective().as_raw();
    if peer.uid() != 0 && peer.uid() != me {
        return Err(HandoverError::Refused(format!(
            "control connection from uid {} refused",
            peer.uid()
        )));
    }
    Ok(Some(Channel { fd }))
}

impl Channel {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, HandoverError> {
        let fd = seqpacket()?;
        connect(fd.as_raw_fd(), &unix_addr(path)?)
            .map_err(|e| HandoverError::NoAgent(format!("{}: {e}", path.display())))?;
        Ok(Self { fd })
    }

    /// Over an already connected socket.
    pub(super) fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// A connected pair (tests).
    pub fn pair() -> Result<(Self, Self), HandoverError> {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| HandoverError::Socket(format!("socketpair: {e}")))?;
        Ok((Self { fd: a }, Self { fd: b }))
    }

    /// Sends `message` with `fds` and `payload`, within `timeout`.
    pub fn send(
        &self,
        message: &Message,
        fds: &[RawFd],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), HandoverError> {
        let json = serde_json::to_vec(message)
            .map_err(|e| HandoverError::Protocol(format!("encoding: {e}")))?;
        if json.len() > MAX_JSON || payload.len() > MAX_PAYLOAD || fds.len() > MAX_FDS {
            return Err(HandoverError::Protocol("message too large".to_owned()));
        }
        let len = u32::try_from(json.len())
            .map_err(|_| HandoverError::Protocol("message too large".to_owned()))?
            .to_le_bytes();
        setsockopt(&self.fd, sockopt::SendTimeout, &timeval(timeout))
            .map_err(|e| HandoverError::Socket(format!("send timeout: {e}")))?;
        let iov = [
            IoSlice::new(&len),
            IoSlice::new(&json),
            IoSlice::new(payload),
        ];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| HandoverError::Socket(format!("send: {e}")))?;
        Ok(())
    }

    /// Receives one message within `timeout`; [`HandoverError::Closed`]
    /// when the peer closed the connection.
    pub fn recv(&self, timeout: Duration) -> Result<Received, HandoverError> {
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeval(timeout))
            .map_err(|e| HandoverError::Socket(format!("receive timeout: {e}")))?;
        let mut buf = vec![0u8; 4 + MAX_JSON + MAX_PAYLOAD];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (n, fds, truncated) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let got = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| match e {
                nix::errno::Errno::EAGAIN => HandoverError::Timeout(timeout),
                e => HandoverError::Socket(format!("receive: {e}")),
            })?;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = got.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: SCM_RIGHTS installed these descriptors in
                        // this process; nothing else owns them.
                        fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
            }
            let truncated = got
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            (got.bytes, fds, truncated)
        };
        if n == 0 {
            return Err(HandoverError::Closed);
        }
        if truncated {
            return Err(HandoverError::Protocol("message truncated".to_owned()));
        }
        let data = buf.get(..n).unwrap_or_default();
        let (len, rest) = data
            .split_first_chunk::<4>()
            .ok_or_else(|| HandoverError::Protocol("short message".to_owned()))?;
        let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err(HandoverError::Protocol(
                "length past the message".to_owned(),
            ));
        }
        let (json, payload) = rest.split_at(len);
        let message = serde_json::from_slice(json)
            .map_err(|e| HandoverError::Protocol(format!("decoding: {e}")))?;
        Ok(Received {
            message,
            fds,
            payload: payload.to_vec(),
        })
    }

    /// The descriptor (tests).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn timeval(timeout: Duration) -> TimeVal {
    // Zero would mean "no timeout": at least a millisecond.
    let micros = i64::try_from(timeout.as_micros())
        .unwrap_or(i64::MAX)
        .max(1_000);
    TimeVal::new(micros / 1_000_000, micros % 1_000_000)
}
