//! journald's native protocol: when stderr is the journal stream systemd
//! gave the service (`JOURNAL_STREAM` names its device and inode, see
//! systemd.exec(5)), each log line becomes one datagram of `FIELD=value`
//! lines to `/run/systemd/journal/socket`, with its priority, target and
//! source location as fields, so `journalctl -p warning -u autostop` works.
//!
//! Written here rather than with `tracing-journald` (MIT, which would fit)
//! because that crate sends from the logging thread on a blocking socket: a
//! stalled journald would stall every task that logs. These entries go
//! through the same lossy queue as stderr lines ([`super::sink`]).

use std::{
    io,
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    time::Duration,
};

use tracing::Level;

use super::sink::Output;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// `SYSLOG_IDENTIFIER` of every entry.
const IDENTIFIER: &str = "autostop";
/// Longest message sent (the rest is cut): well under the datagram limit,
/// so no entry needs the memfd route.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long the writer thread may wait for a stalled journald per entry.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM`
/// (`DEV:INODE`) matches stderr's own device and inode.
pub fn stderr_is_journal_stream() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    matches_stream(&value, meta.dev(), meta.ino())
}

/// `JOURNAL_STREAM`'s `DEV:INODE` equals (`dev`, `ino`).
fn matches_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Sends entries to journald.
pub struct Journal {
    socket: UnixDatagram,
}

impl Journal {
    /// A socket for journald's native protocol, checked with an empty
    /// datagram (journald ignores it).
    pub fn connect() -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        socket.send_to(&[], JOURNAL_SOCKET)?;
        Ok(Self { socket })
    }
}

impl Output for Journal {
    fn write_line(&mut self, entry: &[u8]) -> io::Result<()> {
        self.socket.send_to(entry, JOURNAL_SOCKET).map(drop)
    }
}

/// syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The fields an entry starts with (everything but `MESSAGE`).
pub fn header(level: &Level, target: &str, file: Option<&str>, line: Option<u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    field(&mut out, "PRIORITY", priority(level).to_string().as_bytes());
    field(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
    field(&mut out, "TARGET", target.as_bytes());
    if let Some(file) = file {
        field(&mut out, "CODE_FILE", file.as_bytes());
    }
    if let Some(line) = line {
        field(&mut out, "CODE_LINE", line.to_string().as_bytes());
    }
    out
}

/// Completes an entry: `header` then `MESSAGE` (the formatted line without
/// its trailing newline, cut at [`MAX_MESSAGE`]).
pub fn entry(mut header: Vec<u8>, message: &[u8]) -> Vec<u8> {
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    let message = &message[..message.len().min(MAX_MESSAGE)];
    field(&mut header, "MESSAGE", message);
    header
}

/// Appends one field: `NAME=value\n`, or for a value with a newline the
/// binary-safe form `NAME\n` + little-endian u64 length + value + `\n`.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_match_device_and_inode() {
        assert!(matches_stream("8:1234", 8, 1234));
        assert!(matches_stream("8:1234\n", 8, 1234));
        assert!(!matches_stream("8:1235", 8, 1234));
        assert!(!matches_stream("9:1234", 8, 1234));
        assert!(!matches_stream("garbage", 8, 1234));
        assert!(!matches_stream("", 8, 1234));
    }

    #[test]
    fn entry_has_priority_identifier_location_and_message() {
        let h = header(
            &Level::WARN,
            "autostop::agent",
            Some("src/agent/mod.rs"),
            Some(42),
        );
        let e = entry(h, b"service=web event=ready\n");
        assert_eq!(
            String::from_utf8(e).expect("utf-8"),
            "PRIORITY=4\nSYSLOG_IDENTIFIER=autostop\nTARGET=autostop::agent\n\
             CODE_FILE=src/agent/mod.rs\nCODE_LINE=42\nMESSAGE=service=web event=ready\n"
        );
    }

    #[test]
    fn multi_line_messages_use_the_binary_safe_form() {
        let e = entry(header(&Level::ERROR, "t", None, None), b"a\nb\n");
        let mut want = b"PRIORITY=3\nSYSLOG_IDENTIFIER=autostop\nTARGET=t\nMESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(e, want);
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
