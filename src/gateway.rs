//! Process-wide state shared by every connection of both paths (proxy and token endpoint), and
//! the facts about one client connection. Kept apart from both paths so neither imports the other.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::admin::AdminState;
use crate::metrics::Metrics;
use crate::proxy::upstream::conn_watch::ConnWatch;
use crate::snapshot::Snapshot;
/// Defined with the other certificate helpers (nothing there imports this module); named here too,
/// beside the connection facts that carry it.
pub use crate::tls::client_cert::ClientCert;

/// Process-wide state shared by every connection.
pub struct Gateway {
    /// The current snapshot; swapped whole by the reloader.
    pub current: Arc<ArcSwap<Snapshot>>,
    /// Counters and histograms served on the admin listener.
    pub metrics: Arc<Metrics>,
    /// Readiness and reload status.
    pub admin: Arc<AdminState>,
    /// Durable token state: refresh families, denied jtis, assertion jtis, lockouts.
    pub store: Arc<dyn crate::store::Store>,
    /// Bounds concurrent argon2 verifications (each holds ~19 MiB).
    pub hash_permits: Arc<tokio::sync::Semaphore>,
    /// Per-IP request counts at the token endpoint.
    pub ip_limits: crate::oauth::ratelimit::IpLimiter,
    /// DPoP proof ids already used, in this process (shared through `store` on Redis too).
    pub dpop_replay: crate::auth::dpop::replay::ReplayMemory,
    /// Trace context propagation and span export (`[tracing]`, fixed at start).
    pub telemetry: crate::telemetry::Telemetry,
    /// The key set this process publishes, announced to the fleet on the shared store.
    pub key_news: crate::key_news::Announcer,
}

/// Facts about the client connection a request arrived on; cloned for each of its requests.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address, for per-IP limits.
    pub peer: SocketAddr,
    /// Whether the connection is TLS, for `X-Forwarded-Proto`.
    pub tls: bool,
    /// The client's address as the `X-Forwarded-For` value, formatted once per connection.
    pub client_address: HeaderValue,
    /// What the connection's response bodies and its I/O tell each other.
    pub watch: Arc<ConnWatch>,
    /// The certificate the client presented on a mutual-TLS connection (RFC 8705), once per
    /// connection: certificate-bound tokens and `tls_client_auth` are checked against it.
    pub client_cert: Option<Arc<ClientCert>>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, metrics: Arc<Metrics>) -> ConnInfo {
        let watch = Arc::new(ConnWatch::new(metrics));
        ConnInfo {
            peer,
            tls,
            client_address: crate::proxy::headers::client_address_value(peer.ip()),
            watch,
            client_cert: None,
        }
    }
}
