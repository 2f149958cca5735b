//! tokengate: a TLS-terminating reverse proxy that is its own OAuth2 token endpoint and checks a
//! JWT bearer token on every request.
//!
//! # Layout
//! Two paths share one process. The **request path** runs top to bottom:
//!
//! - [`listener`]: binds the HTTPS, plain and admin listeners, accepts under the connection
//!   limits, runs TLS handshakes (the certificate for the client's server name read from the
//!   current snapshot), picks HTTP/1.1 or h2 per connection, drains on shutdown.
//! - `proxy`: one request: normalize the path and pick the route (`proxy::routes`), answer a
//!   browser's CORS preflight or add the route's CORS headers (`proxy::cors`), authorize
//!   (`proxy::authz`, over `auth`), spend the caller's quota (`proxy::quota`), rewrite headers
//!   (`proxy::headers`), forward through a per-upstream connection pool (`proxy::upstream`), or
//!   to an `[[upstreams]]` group's endpoint (balanced, ejected on failures: `upstream::group`), log.
//!   What a client connection and the response bodies sent on it share (`ConnWatch`) lives in
//!   `proxy::upstream::conn_watch`, below the gateway state that hands it to each request.
//! - `auth`: the tokens themselves: strict JWT parsing and validation, minting, keys and JWKS,
//!   other providers' key sets fetched by URL and kept current off the request path
//!   (`auth::remote`), DPoP proofs with their nonces and replay memory (`auth::dpop`), the
//!   verified-token cache. Used by both paths; of a request it knows only the head's access token
//!   and how a refusal is worded (`auth::bearer`, shared by the proxy and the admin listener).
//! - `quota`: per-caller rate limits (GCRA tables per route), checked after authorization
//!   (`proxy::quota`); with a Redis store, counted across instances from local allowances
//!   (`quota::lease`) granted by one script.
//!
//! The **token path** branches off the request path by exact URL:
//!
//! - `oauth`: our own token endpoint (client credentials, password, refresh; client
//!   authentication by secret, assertion or certificate, `oauth::mtls`), revocation,
//!   introspection and discovery; the client and user tables (`oauth::directory`), argon2id
//!   secrets (`oauth::secrets`) and per-IP limits (`oauth::ratelimit`).
//! - [`store`]: durable token state (refresh families, revocations, lockouts) behind one trait:
//!   redb in one file, or Redis shared by several instances.
//!
//! Shared by both:
//!
//! - [`config`]: the `gateway.toml` schema, and which keys need a restart.
//! - [`snapshot`]: everything reloadable (config, keys, issuers, routes, tables, certificate) as one
//!   immutable value; `snapshot::reload` rebuilds and swaps it atomically on file changes and
//!   SIGHUP, keeping the old one when the new one is bad.
//! - `key_news`: key changes reach the fleet at once: an issuing gateway announces its key set
//!   on the shared store, trusting ones refetch it (through `store` and `auth::remote`).
//! - `gateway`: process-wide state (the snapshot cell, store, metrics, limiters) that both paths
//!   receive; `error`: the errors of building a snapshot and starting.
//! - `admin`: health, readiness, reload status, Prometheus metrics, operator revocation (its
//!   bearer check through `auth::bearer`, not the proxy).
//! - `metrics`: every Prometheus series (the remote key sets' in `metrics::jwks`), in a leaf module
//!   that imports nothing of the crate: any layer records into it, `admin` encodes it.
//! - [`bench`](mod@bench): `tokengate bench`, a load generator for token-validating gateways.
//! - [`commands`]: `check`, `keygen`, `mint`, `hash-secret`, `add-client`.
//! - `telemetry`: distributed tracing: W3C `traceparent` in and out, spans exported over OTLP/HTTP
//!   by a batch thread behind a bounded queue (off the request path).
//! - [`logging`]: the log, written by its own thread behind a bounded queue (off the request path).
//! - [`tls`] (certificate material; the listener's certificates by server name in `tls::sni`;
//!   client certificates for mutual TLS in `tls::client_cert`), `reason` (file errors in words), `respond`, [`signals`]: small shared pieces.
//!
//! Files use each other one way, a folder's `mod.rs` and its parts included: what two files
//! share lives in a third below both (`config::error`, `oauth::ctx`, `auth::jwt::error`), and
//! `tests/layout.rs` fails on any import cycle between files.
//!
//! Modules are private; what the binary, tests and benches use is re-exported below.
#![forbid(unsafe_code)]

mod admin;
mod auth;
pub mod bench;
pub mod commands;
pub mod config;
mod error;
mod gateway;
mod key_news;
pub mod listener;
pub mod logging;
mod metrics;
mod oauth;
mod proxy;
mod quota;
mod reason;
mod respond;
pub mod signals;
pub mod snapshot;
pub mod store;
mod telemetry;
pub mod tls;

pub use auth::{dpop, jwt, keys, token_cache};
pub use error::{BuildError, StartError};
pub use gateway::{ConnInfo, Gateway};
pub use listener as server;
pub use metrics::ExportCounters;
pub use oauth::secrets;
pub use proxy::{headers, routes};
pub use telemetry::{traceparent, RequestTrace, Telemetry};
