//! Delivery against local receivers (no root): https with a test CA made on
//! the fly (rcgen), an untrusted certificate, plain http, an endless answer
//! and a silent receiver; the log lines never carry the URL's path or
//! query.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use super::*;

const SECRET_PATH: &str = "/hooks/SECRET-PATH";
const SECRET_QUERY: &str = "token=SECRET-QUERY";

/// A CA (its PEM in `ca_file`) and a server configuration with a
/// certificate for `localhost` and 127.0.0.1 that it signed.
struct TestCa {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn test_ca() -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::from(leaf_key),
        )
        .expect("server config");
    TestCa {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}

/// Reads one request (head and Content-Length body) and answers 204.
async fn answer_one(mut io: impl AsyncRead + AsyncWrite + Unpin) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(&raw) {
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= head + length {
                break;
            }
        }
    }
    let _ = io
        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        .await;
    let _ = io.shutdown().await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// An https receiver on 127.0.0.1: every request it took, in order.
async fn tls_receiver(server: Arc<rustls::ServerConfig>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let request = answer_one(tls).await;
                sink.lock().expect("lock").push(request);
            }
        }
    });
    (port, got)
}

/// Log lines written while the guard lives (this thread only).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn assert_no_secret(logs: &str) {
    assert!(!logs.is_empty(), "nothing was logged");
    for secret in ["SECRET", "/hooks", "token="] {
        assert!(!logs.contains(secret), "{secret:?} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn https_with_the_ca_file_delivers_the_json() {
    let ca = test_ca();
    let (port, got) = tls_receiver(Arc::clone(&ca.server)).await;
    let logs = Logs::default();
    let _guard = logs.capture();
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{port}{SECRET_PATH}?{SECRET_QUERY}");
        let delivery = Delivery::with_roots(&url, Some(&ca.ca_file), false).expect("delivery");
        let body = r#"{"event":"start_failed","service":"web"}"#;
        assert!(
            delivery.deliver(body, &CancellationToken::new()).await,
            "{host}"
        );
    }
    let requests = got.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert!(
            request.starts_with(&format!("POST {SECRET_PATH}?{SECRET_QUERY} HTTP/1.1\r\n")),
            "{request}"
        );
        assert!(request
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(request.ends_with(r#"{"event":"start_failed","service":"web"}"#));
    }
    let text = logs.text();
    assert!(
        text.contains(&format!("https://localhost:{port}")),
        "{text}"
    );
    assert!(text.contains("alert webhook: delivered"), "{text}");
    assert_no_secret(&text);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_logged_without_the_path() {
    let served = test_ca();
    let other = test_ca();
    let (port, got) = tls_receiver(Arc::clone(&served.server)).await;
    let logs = Logs::default();
    let _guard = logs.capture();
    let url = format!("https://localhost:{port}{SECRET_PATH}?{SECRET_QUERY}");
    let delivery = Delivery::with_roots(&url, Some(&other.ca_file), false).expect("delivery");
    assert!(!delivery.deliver("{}", &CancellationToken::new()).await);
    assert!(
        got.lock().expect("lock").is_empty(),
        "a request got through"
    );
    let text = logs.text();
    assert_eq!(
        text.matches("alert webhook: delivery failed").count(),
        3,
        "{text}"
    );
    assert!(text.contains("certificate"), "the reason is logged: {text}");
    assert!(text.contains("alert webhook: alert dropped"), "{text}");
    assert_no_secret(&text);
}

#[tokio::test]
async fn plain_http_delivers_and_reads_at_most_the_answer_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let written = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        // An answer that would never end: 1 GB announced, sent forever.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n";
        let mut sent = stream.write_all(head).await.map_or(0, |()| head.len());
        let chunk = vec![b'x'; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let delivery =
        Delivery::with_roots(&format!("http://{addr}/hook"), None, false).expect("delivery");
    assert!(delivery.deliver("{}", &CancellationToken::new()).await);
    drop(delivery);
    let sent = written.await.expect("server");
    assert!(sent < 64 << 20, "the client kept reading: {sent} bytes");
}

#[tokio::test]
async fn a_silent_receiver_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let mut delivery =
        Delivery::with_roots(&format!("http://{addr}/hook"), None, false).expect("delivery");
    delivery.attempt_timeout = Duration::from_millis(200);
    let error = delivery.attempt("{}").await.expect_err("no answer");
    assert!(error.contains("no answer within"), "{error}");
    held.abort();
}

#[test]
fn ca_file_problems_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let bad_block = dir.path().join("bad.pem");
    std::fs::write(
        &bad_block,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.path().join("missing.pem");
    for path in [not_pem, bad_block, missing, dir.path().to_path_buf()] {
        let err = tls::client_config(Some(&path), false).expect_err("unusable");
        let text = err.to_string();
        assert!(text.starts_with("agent.alert_ca_file"), "{text}");
    }
    assert!(matches!(
        tls::client_config(None, false),
        Err(AlertError::NoRoots)
    ));
    // Plain http needs no CA; a bad URL is refused naming the field.
    assert!(check("http://127.0.0.1:9/hook", None).is_ok());
    let err = check("ftp://x/SECRET", None).expect_err("ftp");
    assert!(
        err.to_string().starts_with("agent.alert_webhook: "),
        "{err}"
    );
}
