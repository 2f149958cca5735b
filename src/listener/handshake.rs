//! The HTTPS listener's TLS: a certificate resolver that reads the current snapshot (the
//! certificate for the handshake's server name, `tls::sni`), so a reloaded certificate applies to
//! the next handshake without touching open connections, and the handshake itself under its
//! deadline. Client certificates (mutual TLS) go the same way, whichever certificate is served: a
//! verifier that asks the current snapshot whether to request one, whether to insist, and which
//! certificates pass, so `tls.client_ca` and `tls.client_auth` reload like the certificate.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_rustls::TlsAcceptor;

use crate::config::ClientAuthMode;

use crate::metrics::{Limit, Metrics};
use crate::snapshot::Snapshot;

/// Picks the certificate for the client's server name (SNI) from whatever snapshot is current at
/// handshake time: a lookup and an `Arc` clone, nothing allocated.
#[derive(Debug)]
pub struct SnapshotCertResolver {
    /// The live snapshot cell, shared with the proxy and the reloader.
    pub current: Arc<ArcSwap<Snapshot>>,
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certificates.resolve(hello.server_name()).clone())
    }
}

/// Asks for client certificates as the snapshot current at handshake time says (`tls.client_auth`)
/// and accepts what its `tls.client_ca` (and, when a client uses `self_signed_tls_client_auth`, a
/// self-signature) lets through: see `tls::client_cert` for the two layers. rustls consults it
/// on every handshake, so a reload applies to the next one.
#[derive(Debug)]
pub struct SnapshotClientVerifier {
    /// The live snapshot cell, shared with the proxy and the reloader.
    pub current: Arc<ArcSwap<Snapshot>>,
    /// The signature algorithms a client may sign the handshake with (the provider's).
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SnapshotClientVerifier {
    fn offer_client_auth(&self) -> bool {
        let snap = self.current.load();
        snap.client_tls.is_some() && snap.config.tls.client_auth != ClientAuthMode::None
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().config.tls.client_auth == ClientAuthMode::Required
    }

    /// No CA names are hinted: the hint would have to outlive the snapshot it came from, and
    /// clients (curl, rustls, browsers with one certificate) send their certificate without one.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let snap = self.current.load();
        let tls =
            snap.client_tls.as_ref().ok_or(rustls::Error::General("client certificates are not accepted".into()))?;
        tls.verify_handshake(end_entity, intermediates, now).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The HTTPS listener's rustls config: TLS 1.2 and 1.3, ALPN h2 then http/1.1, client
/// certificates as the current snapshot says.
pub fn server_config(current: Arc<ArcSwap<Snapshot>>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        SnapshotClientVerifier { current: current.clone(), algorithms: provider.signature_verification_algorithms };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SnapshotCertResolver { current }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The TLS handshake, within its deadline; `None` (logged, and counted when it timed out) if it failed.
pub(super) async fn tls_handshake(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    limit: Duration,
    metrics: &Metrics,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let peer = tcp.peer_addr().ok();
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.record_limit(Limit::TlsHandshakeTimeout);
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}
