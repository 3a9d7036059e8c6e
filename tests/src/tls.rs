//! A local https receiver for webhook tests: a CA made on the fly (rcgen;
//! no key is ever committed), its PEM in a temp file for
//! `agent.alert_ca_file`, and a thread serving a certificate for
//! `localhost` and 127.0.0.1 signed by it, answering 204 to every request
//! and recording each one. Stopped on drop.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection, StreamOwned};

use crate::eventually;

/// The receiver; its requests are kept in arrival order.
pub struct TlsReceiver {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TlsReceiver {
    /// Makes the CA and the certificate and starts serving.
    pub fn start() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("writing the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::from(key))
            .expect("server TLS config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, halt) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                if let Some(request) = answer(Arc::clone(&config), tcp) {
                    sink.lock().expect("requests lock").push(request);
                }
            }
        });
        Self {
            port,
            ca_file,
            _dir: dir,
            requests,
            stop,
        }
    }

    /// Every request received so far (head and body, as text).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// Waits for the first request.
    pub fn wait_request(&self, timeout: Duration) -> String {
        assert!(
            eventually(timeout, || !self.requests().is_empty()),
            "the https receiver got no request within {timeout:?}"
        );
        self.requests().remove(0)
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// TLS handshake, one request (head plus Content-Length body), 204.
fn answer(config: Arc<ServerConfig>, tcp: TcpStream) -> Option<String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let connection = ServerConnection::new(config).ok()?;
    let mut tls = StreamOwned::new(connection, tcp);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return Some(text);
            }
        }
    }
}
