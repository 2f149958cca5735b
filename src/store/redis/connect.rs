//! The redis-rs client a store connects with: straight to `state.url`, or through a relay that
//! adds tokengate's own TLS or finds the primary through the sentinels.

use std::sync::Arc;
use std::time::Duration;

use redis::{Client, ConnectionAddr, IntoConnectionInfo};

use super::relay::{Dial, Relay};
use super::{sentinel, tls_relay};
use crate::store::StoreError;

/// How to reach the server; built from `[state]` by [`crate::store::open`].
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL, credentials included.
    pub url: String,
    /// Prepended to every key.
    pub key_prefix: String,
    /// `state.ca`: the PEM file trusted for `rediss://` (CAs, or the server's own certificate),
    /// instead of the public roots.
    pub ca: Option<std::path::PathBuf>,
    /// Bound on each store operation, and on each connection attempt.
    pub timeout: Duration,
    /// `state.sentinels` and `state.sentinel_master`: find the primary through these instead of
    /// `url`'s host (whose credentials and database still apply).
    pub sentinels: Option<(Vec<String>, String)>,
    /// `state.wait_replicas`: replicas that must confirm a change before it is answered.
    pub wait_replicas: u32,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &crate::config::redacted_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("sentinels", &self.sentinels)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

/// The redis-rs client for `state.url`: direct for a plain `redis://` server; through a [`Relay`]
/// on `handle` for `rediss://` (which verifies the server as every other TLS peer is verified) and
/// for sentinels (which find the primary anew on every connection).
pub(super) fn client_for(
    opts: &RedisOptions,
    handle: &tokio::runtime::Handle,
) -> Result<(Client, Option<Relay>), StoreError> {
    let unavailable = |m: String| StoreError::Unavailable(format!("state.url: {m}"));
    let tls = opts.url.strip_prefix("rediss://");
    if tls.is_none() && opts.sentinels.is_none() {
        return Ok((Client::open(opts.url.as_str()).map_err(|e| unavailable(e.to_string()))?, None));
    }
    // Read as a plain URL (redis-rs is built without TLS): credentials and database stay with
    // redis-rs, the host and port go to the relay.
    let plain = tls.map_or_else(|| opts.url.clone(), |rest| format!("redis://{rest}"));
    let info = plain.into_connection_info().map_err(|e| unavailable(e.to_string()))?;
    let dial: Arc<dyn Dial> = match (&opts.sentinels, tls) {
        (Some((sentinels, master)), _) => Arc::new(
            sentinel::SentinelDial::new(sentinels, master, info.clone(), opts.timeout)
                .map_err(StoreError::Unavailable)?,
        ),
        (None, _) => {
            let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
                return Err(unavailable("a rediss:// URL names a host and port".into()));
            };
            let tls = crate::tls::client_config(opts.ca.as_deref(), "state.ca")
                .map_err(|e| StoreError::Unavailable(format!("state.ca: {e}")))?;
            Arc::new(tls_relay::TlsDial::new(&host, port, tls, opts.timeout).map_err(unavailable)?)
        }
    };
    let relay = Relay::start(handle, dial).map_err(unavailable)?;
    let info = info.set_addr(ConnectionAddr::Unix(relay.socket().to_owned()));
    Ok((Client::open(info).map_err(|e| unavailable(e.to_string()))?, Some(relay)))
}
