//! Openings of protocols other than HTTP/1, byte for byte as real clients
//! send them, for tests that check the agent holds and replays them
//! unchanged: a TLS 1.3 ClientHello as nginx's `proxy_pass https://…` or
//! curl sends it, and the HTTP/2 prior-knowledge preface with its first
//! SETTINGS frame.

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface followed by a SETTINGS frame (max concurrent streams 100,
/// initial window 65535), as an h2 client opens a cleartext connection.
pub fn http2_opening() -> Vec<u8> {
    let mut out = HTTP2_PREFACE.to_vec();
    // Frame header: length 12, type SETTINGS (4), flags 0, stream 0.
    out.extend_from_slice(&[0, 0, 12, 4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 3, 0, 0, 0, 100]); // MAX_CONCURRENT_STREAMS
    out.extend_from_slice(&[0, 4, 0, 0, 0xff, 0xff]); // INITIAL_WINDOW_SIZE
    out
}

/// A complete TLS record holding a TLS 1.3 ClientHello for `server_name`:
/// TLS 1.3 and 1.2 cipher suites, SNI, ALPN `h2`/`http/1.1`, supported
/// groups, signature algorithms, supported versions and an X25519 key
/// share (fixed bytes: the peer is an echo server, not a TLS stack;
/// `openssl s_server` answers it with a ServerHello).
pub fn tls_client_hello(server_name: &str) -> Vec<u8> {
    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    body.push(32); // legacy_session_id
    body.extend((0..32u8).map(|i| i.wrapping_mul(91).wrapping_add(5)));
    let suites: [u16; 9] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
    ];
    push_u16(&mut body, (suites.len() * 2) as u16);
    for s in suites {
        push_u16(&mut body, s);
    }
    body.extend_from_slice(&[1, 0]); // compression: null only

    let mut ext = Vec::new();
    let name = server_name.as_bytes();
    let mut sni = Vec::new();
    push_u16(&mut sni, (name.len() + 3) as u16);
    sni.push(0); // host_name
    push_u16(&mut sni, name.len() as u16);
    sni.extend_from_slice(name);
    extension(&mut ext, 0x0000, &sni);
    extension(&mut ext, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // x25519, P-256
    extension(&mut ext, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    extension(&mut ext, 0x0010, b"\x00\x0c\x02h2\x08http/1.1"); // ALPN
    extension(
        &mut ext,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );
    extension(&mut ext, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]); // TLS 1.3, 1.2
    extension(&mut ext, 0x002d, &[1, 1]); // psk_dhe_ke
    let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
    share.extend((0..32u8).map(|i| i.wrapping_mul(53).wrapping_add(7)));
    extension(&mut ext, 0x0033, &share);
    push_u16(&mut body, ext.len() as u16);
    body.extend_from_slice(&ext);

    let mut handshake = vec![0x01]; // ClientHello
    push_u24(&mut handshake, body.len());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 label
    push_u16(&mut record, handshake.len() as u16);
    record.extend_from_slice(&handshake);
    record
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_u24(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    push_u16(out, kind);
    push_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}
