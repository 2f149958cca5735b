//! The HTTPS listener's TLS: a certificate resolver that reads the current snapshot, so a
//! reloaded certificate applies to the next handshake without touching open connections, and the
//! handshake itself under its deadline.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::admin::metrics::{Limit, Metrics};
use crate::snapshot::Snapshot;

/// Picks the certificate of whatever snapshot is current at handshake time.
#[derive(Debug)]
pub struct SnapshotCertResolver {
    /// The live snapshot cell, shared with the proxy and the reloader.
    pub current: Arc<ArcSwap<Snapshot>>,
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key.clone())
    }
}

/// The HTTPS listener's rustls config: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(current: Arc<ArcSwap<Snapshot>>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
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
