//! Talking to upstreams: connection pools ([`pool`]), idle timeouts of the bodies forwarded both
//! ways ([`idle`]), the per-connection state those bodies share with the client connection
//! ([`conn_watch`]), named groups of endpoints ([`group`]) with their balancers ([`balance`]),
//! health ([`health`], probed by [`probe`]) and endpoint sets ([`endpoints`]) that follow their
//! host names' addresses ([`dns`], resolved as [`lookup`] says), retries ([`retry`], [`replay`]), and the
//! built-in `echo` demo service.

pub mod balance;
pub mod conn_watch;
pub mod dns;
pub mod endpoints;
pub mod group;
pub mod health;
pub mod idle;
pub mod lookup;
pub mod pool;
pub mod probe;
pub mod replay;
pub mod retry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::config::{ServerConfig, UpstreamProtocol};
use crate::tls::{client_config, TlsError};

pub use idle::BodyError;
pub use pool::{Connector, ExchangeLimits, Pool, UpstreamBody};

/// The connector of every pool: TCP with TCP_NODELAY, keep-alive probes and the connect timeout;
/// TLS for `https://` upstreams, trusting webpki roots or, when given, only the CAs in `ca`, and
/// offering h2 and HTTP/1.1 by ALPN (only HTTP/1.1 with `protocol = "http1"`); host names
/// resolved by `lookup`. An h2c pool dials plain TCP and speaks h2 on it without asking (see
/// [`pool`]).
pub fn connector(
    server: &ServerConfig,
    ca: Option<&Path>,
    protocol: UpstreamProtocol,
    lookup: lookup::Lookup,
) -> Result<Connector, TlsError> {
    let mut http = HttpConnector::new_with_resolver(lookup);
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(server.upstream_connect_timeout_secs)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_config(ca, "upstream_ca")?).https_or_http();
    Ok(match protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::H2c | UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(http),
    })
}

/// The `echo` upstream: answers JSON with the method, path and headers it received, and the
/// number of body bytes (counted as they stream, never buffered).
pub async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|k| {
            // Credentials stay out of the echo: it is a demo that people paste into tickets.
            if k == http::header::AUTHORIZATION || k == http::header::COOKIE {
                return (k.as_str().to_owned(), json!("<redacted>"));
            }
            let vals: Vec<&str> = parts.headers.get_all(k).iter().map(|v| v.to_str().unwrap_or("<binary>")).collect();
            (k.as_str().to_owned(), json!(vals.join(", ")))
        })
        .collect();
    let body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// Idle connections kept per upstream; more are closed when they finish.
const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// What makes two routes' upstreams share a pool: same origin, same trust, same timeouts.
#[derive(PartialEq, Eq)]
struct PoolKey {
    /// `scheme://authority`.
    origin: String,
    /// The route's own CA file and its bytes (a rewritten CA file is a new pool).
    ca: Option<(std::path::PathBuf, Vec<u8>)>,
    /// `[server]` connect and idle timeouts, in seconds.
    timeouts: (u64, u64),
    /// `[server]` response head caps and body idle timeouts.
    limits: ExchangeLimits,
    /// The HTTP version spoken: an h2c pool and an HTTP/1.1 one to one origin are two pools.
    protocol: UpstreamProtocol,
    /// `[server] resolvers`: who resolves the host name.
    resolvers: Vec<std::net::SocketAddr>,
}

/// The pools of one snapshot, one per distinct upstream. A reload adopts the previous snapshot's
/// pool for an unchanged upstream, so its warm connections survive the reload.
#[derive(Default)]
pub struct Pools {
    /// Every pool built (or adopted) so far, with its key.
    by_key: Vec<(PoolKey, Arc<Pool>)>,
    /// The resolver of `[server] resolvers`; None: the system's `getaddrinfo`.
    resolver: Option<Arc<hickory_resolver::TokioResolver>>,
}

impl Pools {
    /// No pools yet; new ones resolve host names with `resolver` (None: the system's).
    pub fn new(resolver: Option<Arc<hickory_resolver::TokioResolver>>) -> Pools {
        Pools { by_key: Vec::new(), resolver }
    }

    /// The pool for `scheme://authority` (trusting `ca` for https) speaking `protocol` (unset:
    /// by the scheme), shared with other routes of this snapshot, adopted from `previous` when
    /// it had the same, or else new.
    pub fn get(
        &mut self,
        server: &ServerConfig,
        (scheme, authority): (&Scheme, &Authority),
        ca: Option<&Path>,
        protocol: Option<UpstreamProtocol>,
        previous: Option<&Pools>,
    ) -> Result<Arc<Pool>, TlsError> {
        let protocol = UpstreamProtocol::resolve(protocol, scheme.as_str());
        let ca_bytes = match ca {
            Some(p) => Some((
                p.to_owned(),
                std::fs::read(p).map_err(|e| TlsError::File { path: p.display().to_string(), msg: e.to_string() })?,
            )),
            None => None,
        };
        let key = PoolKey {
            origin: format!("{scheme}://{authority}"),
            ca: ca_bytes,
            timeouts: (server.upstream_connect_timeout_secs, server.upstream_idle_timeout_secs),
            limits: ExchangeLimits::from(server),
            protocol,
            resolvers: server.resolvers.clone(),
        };
        if let Some((_, pool)) = self.by_key.iter().find(|(k, _)| *k == key) {
            return Ok(pool.clone());
        }
        let adopted = previous.and_then(|p| p.by_key.iter().find(|(k, _)| *k == key)).map(|(_, pool)| pool.clone());
        let pool = match adopted {
            Some(pool) => pool,
            None => {
                let idle = Duration::from_secs(server.upstream_idle_timeout_secs);
                let connector = connector(server, ca, protocol, lookup::Lookup::for_server(self.resolver.as_ref()))?;
                let pool = Pool::new(
                    (scheme.clone(), authority.clone()),
                    connector,
                    protocol,
                    MAX_IDLE_PER_UPSTREAM,
                    idle,
                    key.limits,
                )
                .map_err(|e| TlsError::File { path: key.origin.clone(), msg: e.to_string() })?;
                Arc::new(pool)
            }
        };
        self.by_key.push((key, pool.clone()));
        Ok(pool)
    }
}
