//! Process-wide state shared by every connection of both paths (proxy and token endpoint), and
//! the facts about one client connection. Kept apart from both paths so neither imports the other.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::admin::metrics::Metrics;
use crate::admin::AdminState;
use crate::snapshot::Snapshot;

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
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo { peer, tls, client_address: crate::proxy::headers::client_address_value(peer.ip()) }
    }
}
