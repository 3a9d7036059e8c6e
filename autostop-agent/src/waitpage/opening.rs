//! What the first bytes of a steered connection say about its protocol.
//!
//! The agent answers a client itself only when it is sure the client speaks
//! HTTP/1 (dynamic mode's wait page and status poll, error replies); every
//! other client is held and its bytes replayed to the app byte for byte. So
//! the rule below errs one way: a byte sequence is [`Opening::Http1`] only
//! when it begins like an HTTP/1 request line, and anything it cannot place
//! is [`Opening::Other`] (held, never refused).
//!
//! The rule, on the bytes received so far:
//!
//! - [`Opening::Tls`]: a TLS handshake record, `0x16 0x03` (a ClientHello,
//!   as nginx's `proxy_pass https://…` sends).
//! - [`Opening::Http2`]: the HTTP/2 connection preface
//!   `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4), known from `PRI `
//!   on: `PRI` is reserved for it and no HTTP/1 method.
//! - [`Opening::Http1`]: `METHOD SP` then `/` (origin form), `*` (asterisk
//!   form) or a letter (absolute or authority form), where METHOD is 1 to
//!   20 characters of `A-Z` and `-` (every registered method). Lower-case
//!   or longer custom methods are `Other`: held, and answered by the app.
//! - [`Opening::Undecided`]: nothing yet, or a prefix that may still become
//!   one of the above (`GE`, `GET `, `PRI`, a lone `0x16`).
//! - [`Opening::Other`]: everything else (SSH's banner reply, database
//!   protocols, garbage).
//!
//! A client that sends nothing at all is the caller's business: it waits a
//! short while for the first bytes, then treats the connection as a
//! protocol where the server speaks first (held, like blocking mode).

/// The HTTP/2 client connection preface.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest HTTP/1 method accepted as one (`PROPPATCH`, `UPDATEREDIRECTREF`
/// fit).
const MAX_METHOD: usize = 20;

/// The protocol a connection's first bytes announce (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Not enough bytes to tell.
    Undecided,
    /// An HTTP/1 request line.
    Http1,
    /// The HTTP/2 connection preface (prior knowledge, cleartext).
    Http2,
    /// A TLS handshake record.
    Tls,
    /// Some other protocol.
    Other,
}

/// Classifies the bytes received so far (see the module docs).
pub fn opening(bytes: &[u8]) -> Opening {
    let Some(&first) = bytes.first() else {
        return Opening::Undecided;
    };
    if first == 0x16 {
        return match bytes.get(1) {
            None => Opening::Undecided,
            Some(0x03) => Opening::Tls,
            Some(_) => Opening::Other,
        };
    }
    if bytes.starts_with(b"PRI ") {
        return if HTTP2_PREFACE.starts_with(bytes) || bytes.starts_with(HTTP2_PREFACE) {
            Opening::Http2
        } else {
            Opening::Other
        };
    }
    let method = bytes
        .iter()
        .take_while(|&&b| b.is_ascii_uppercase() || b == b'-')
        .count();
    if method == 0 || method > MAX_METHOD {
        return Opening::Other;
    }
    match (bytes.get(method), bytes.get(method.saturating_add(1))) {
        (None, _) | (Some(b' '), None) => Opening::Undecided,
        (Some(b' '), Some(&c)) if c == b'/' || c == b'*' || c.is_ascii_alphabetic() => {
            Opening::Http1
        }
        _ => Opening::Other,
    }
}

/// Whether the bytes received so far may be an HTTP/1 request, so an error
/// can be answered in HTTP: an HTTP/1 request line, or a prefix of one that
/// starts with an upper-case letter (`GE` from a client that stalled).
pub fn looks_like_http(bytes: &[u8]) -> bool {
    match opening(bytes) {
        Opening::Http1 => true,
        Opening::Undecided => bytes.first().is_some_and(u8::is_ascii_uppercase),
        _ => false,
    }
}

/// Whether an end of stream after `bytes` means the client hung up rather
/// than half-closed its side while it waits for an answer. HTTP/1 (as
/// nginx treats its own clients), HTTP/2 and TLS clients never half-close
/// before a response, and a client that sent nothing has nothing to wait
/// for; a client of an unknown protocol might (`printf cmd | nc -N`), so
/// its half-close is kept and forwarded with its bytes.
pub fn eof_is_hang_up(bytes: &[u8]) -> bool {
    match opening(bytes) {
        Opening::Http1 | Opening::Http2 | Opening::Tls => true,
        Opening::Undecided => bytes.is_empty(),
        Opening::Other => false,
    }
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

    /// The start of a TLS ClientHello as clients send it: record header
    /// (handshake, legacy version 3.1, length 512), handshake header
    /// (ClientHello, length 508), legacy version 3.3, 32 random bytes and
    /// the start of a 32-byte session id.
    const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\
        \x9b\x1c\x5e\x2f\x07\x8a\x44\x61\xd0\x3e\x91\x25\x6f\xb2\x0c\x77\
        \xe4\x13\x58\xaa\x19\x40\x6d\xc3\x82\x5f\x0b\x96\x2a\xf1\x34\x7e\
        \x20\x4c\x11\xd8\x63\x95\x0e\xba\x7c\x22\x8f\x31\xe6";

    #[test]
    fn classifies_first_bytes() {
        use Opening::*;
        let table: &[(&[u8], Opening)] = &[
            (b"", Undecided),
            (b"G", Undecided),
            (b"GET", Undecided),
            (b"GET ", Undecided),
            (b"GET /", Http1),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Http1),
            (b"POST /api HTTP/1.1", Http1),
            (b"OPTIONS * HTTP/1.1", Http1),
            (b"GET http://x/ HTTP/1.1", Http1),
            (b"CONNECT example.org:443 HTTP/1.1", Http1),
            (b"M-SEARCH * HTTP/1.1", Http1),
            (b"UPDATEREDIRECTREF / HTTP/1.1", Http1),
            (b"P", Undecided),
            (b"PRI", Undecided),
            (b"PRI ", Http2),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Http2),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00",
                Http2,
            ),
            (b"PRI /x HTTP/1.1", Other),
            (b"PRIX / HTTP/1.1", Http1),
            (b"\x16", Undecided),
            (b"\x16\x03", Tls),
            (CLIENT_HELLO, Tls),
            (b"\x16\x01", Other),
            (b"get / HTTP/1.1", Other),
            (b"GET\t/", Other),
            (b"GET  /", Other),
            (b"GET\x00/", Other),
            (b" GET /", Other),
            (b"SSH-2.0-OpenSSH_9.2\r\n", Other),
            (b"\x00\x00\x00\x01", Other),
            (b"*1\r\n$4\r\nPING\r\n", Other),
            (b"HELLOWORLDHELLOWORLDX / HTTP/1.1", Other),
            (b"HELLOWORLDHELLOWORLD / HTTP/1.1", Http1),
        ];
        for (bytes, want) in table {
            assert_eq!(
                opening(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn every_prefix_of_a_request_line_stays_undecided_or_http1() {
        let line = b"PROPFIND /dav/file HTTP/1.1\r\n";
        for n in 0..=line.len() {
            let got = opening(&line[..n]);
            assert!(
                matches!(got, Opening::Undecided | Opening::Http1),
                "{n}: {got:?}"
            );
        }
        let preface = HTTP2_PREFACE;
        for n in 4..=preface.len() {
            assert_eq!(opening(&preface[..n]), Opening::Http2, "{n}");
        }
    }

    #[test]
    fn looks_like_http_table() {
        let yes: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"POST /api HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"PROPFIND /dav HTTP/1.1",
            b"GET http://x/ HTTP/1.1",
            b"GET ",
            b"GE",
        ];
        let no: &[&[u8]] = &[
            b"",
            b"\x16\x03\x01\x02\x00",
            b"\x16",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"get / HTTP/1.1",
            b"SSH-2.0-OpenSSH_9.2",
            b" GET /",
            b"GET\x00/",
            b"\x00\x00\x00\x01",
            b"HELLOWORLDHELLOWORLDX / HTTP/1.1",
        ];
        for b in yes {
            assert!(looks_like_http(b), "{:?}", String::from_utf8_lossy(b));
        }
        for b in no {
            assert!(!looks_like_http(b), "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn end_of_stream_is_a_hang_up_except_after_unknown_bytes() {
        let gone: &[&[u8]] = &[b"", b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0", CLIENT_HELLO];
        let half_closed: &[&[u8]] = &[b"ruok", b"\x00\x01", b"GE", b"\x16"];
        for b in gone {
            assert!(eof_is_hang_up(b), "{:?}", String::from_utf8_lossy(b));
        }
        for b in half_closed {
            assert!(!eof_is_hang_up(b), "{:?}", String::from_utf8_lossy(b));
        }
    }
}
