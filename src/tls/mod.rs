//! TLS material: certificate loading, first-start self-signed generation, and the client config
//! for `https://` upstreams. The listener's certificates by server name are in [`sni`]; the
//! listener's side (a resolver reading the current snapshot) is in `listener::handshake`, so
//! building a snapshot never depends on the listener. Client certificates (mutual TLS, RFC 8705)
//! are in [`client_cert`].

pub mod client_cert;
pub mod sni;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::reason::pem_reason;

/// Why the certificate could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

fn err(path: &Path, msg: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// Loads a PEM chain and private key into a rustls `CertifiedKey`, checking that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| err(p, crate::reason::io_reason(&e)));
    certified_key_from_pem(&read(cert)?, cert, &read(key)?, key)
}

/// [`load_certified_key`] on PEM text already read (`cert`/`key` name it in errors).
fn certified_key_from_pem(
    cert_pem: &[u8],
    cert: &Path,
    key_pem: &[u8],
    key: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|e| err(cert, pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(err(cert, "holds no certificate"));
    }
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| err(key, pem_reason(&e)))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| err(key, format!("does not match the certificate, or is not a usable key ({e})")))?;
    Ok(Arc::new(ck))
}

/// A self-signed certificate for localhost / 127.0.0.1 / ::1, as (certificate PEM, key PEM).
fn self_signed_pem(cert: &Path) -> Result<(String, String), TlsError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| err(cert, e))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Writes a self-signed certificate for localhost / 127.0.0.1 / ::1 at `cert` and `key`.
pub fn write_self_signed(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let (cert_pem, key_pem) = self_signed_pem(cert)?;
    crate::auth::keys::write_private(key, &key_pem).map_err(|e| err(key, e))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(cert, crate::reason::io_reason(&e)))?;
    }
    std::fs::write(cert, cert_pem).map_err(|e| err(cert, crate::reason::io_reason(&e)))
}

/// A self-signed certificate made in memory only, for `tokengate check` to go on as a first
/// start would without writing anything.
pub fn self_signed_in_memory(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let (cert_pem, key_pem) = self_signed_pem(cert)?;
    certified_key_from_pem(cert_pem.as_bytes(), cert, key_pem.as_bytes(), key)
}

/// A rustls client config trusting webpki roots, or only what `ca_file` holds: its CAs, and its
/// certificates as they are (see [`verify`]). `key` is the config key that sets `ca_file` (or
/// names the peer), for the words of a refused certificate.
pub fn client_config(ca_file: Option<&Path>, key: &'static str) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let pinned = match ca_file {
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Vec::new()
        }
        Some(path) => {
            let certs = verify::read_pinned(path).map_err(|m| err(path, m))?;
            for (i, c) in certs.iter().enumerate() {
                roots.add(c.clone()).map_err(|_| err(path, format!("certificate {} cannot be read", i + 1)))?;
            }
            certs
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let anchors = verify::Anchors { key, file: ca_file.map(Path::to_path_buf) };
    let path_of = || ca_file.map_or_else(|| key.to_owned(), |p| p.display().to_string());
    let verifier = verify::ServerVerifier::new(roots, pinned, anchors, provider.clone())
        .map_err(|e| TlsError::File { path: path_of(), msg: e.to_string() })?;
    // ALPN is left empty: hyper-rustls sets it from the HTTP versions the connector enables.
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::File { path: path_of(), msg: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}
