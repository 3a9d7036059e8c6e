//! TLS for the alert webhook: rustls on the `ring` provider, trusting the
//! system's CA store (Debian's ca-certificates, via rustls-native-certs:
//! kept current by the OS, no compiled-in list to go stale) plus, when set,
//! the PEM certificates of `agent.alert_ca_file` (private CAs, tests).

use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer},
    ClientConfig, RootCertStore,
};

use super::AlertError;

/// Largest CA file read: a bundle of a few hundred certificates.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The client TLS settings: system roots, then the certificates of
/// `ca_file`. An unreadable or certificate-less CA file is an error naming
/// `agent.alert_ca_file`; no root at all is an error too (nothing https
/// could be verified). `with_system` false skips the system store (tests).
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    with_system: bool,
) -> Result<ClientConfig, AlertError> {
    let mut roots = RootCertStore::empty();
    if with_system {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "alert webhook: part of the system CA store could not be read");
        }
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(path) = ca_file {
        let certs = read_ca_file(path)?;
        for cert in certs {
            roots.add(cert).map_err(|e| AlertError::CaFile {
                path: path.display().to_string(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(AlertError::NoRoots);
    }
    config(roots)
}

fn config(roots: RootCertStore) -> Result<ClientConfig, AlertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(AlertError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates in a PEM file (a regular file of at most 1 MiB).
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, AlertError> {
    let fail = |reason: String| AlertError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    // O_NONBLOCK: a FIFO put there by mistake must not block the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| fail(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(fail("larger than 1 MiB".into()));
    }
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// Settings for a plain-http webhook, whose connector never uses them.
pub(crate) fn unused_config() -> Result<ClientConfig, AlertError> {
    config(RootCertStore::empty())
}
