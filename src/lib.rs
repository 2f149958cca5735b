//! tokengate: a TLS-terminating reverse proxy that checks a JWT bearer token on every request.
//!
//! # Layout
//! A request flows top to bottom through these modules:
//!
//! - [`server`]: binds the HTTPS, plain and admin listeners, accepts (capped by
//!   [`conn_limits`]), runs TLS handshakes; drains on shutdown.
//! - [`conn`]: one connection: HTTP/1.1 or h2 from ALPN or a peek at the preface, served by
//!   hyper's builder for that protocol; h2 behind a first-byte deadline ([`first_byte`]).
//! - [`proxy`]: one request: normalize the path ([`routes`]), pick the route, authorize
//!   ([`authz`] → [`jwt`]), rewrite headers ([`headers`]), forward through a per-upstream
//!   connection pool ([`upstream::pool`]), log.
//! - [`jwt`]: strict token parsing and validation, cheapest checks first; minting;
//!   [`token_cache`] remembers verified tokens per snapshot.
//! - [`keys`]: signing and verification keys, parsed once; JWKS in and out.
//! - [`snapshot`]: everything reloadable (config, keys, issuers, routes, certificate) as one
//!   immutable value; [`reload`] rebuilds and swaps it atomically on file changes and SIGHUP.
//! - [`tls`]: certificates, self-signed first start, and the resolver reading the snapshot.
//! - [`oauth`]: our own token endpoint (client credentials, password, refresh), revocation,
//!   introspection and discovery; client and user tables in [`directory`], argon2id secrets in
//!   [`secrets`], durable state (refresh families, revocations, lockouts) behind [`store`],
//!   per-IP limits in [`ratelimit`].
//! - [`admin`] and [`metrics`]: health, readiness, reload status, Prometheus metrics, and the
//!   operator's revocation of a client's refresh tokens.
//! - [`bench`](mod@bench): `tokengate bench`, a load generator for token-validating gateways.
//! - [`config`]: the `gateway.toml` schema; [`commands`]: `check`, `keygen`, `mint`,
//!   `hash-secret`, `add-client`.
//! - [`respond`], [`logging`], [`signals`]: small shared pieces.

pub mod admin;
pub mod authz;
pub mod bench;
pub mod commands;
pub mod config;
pub mod conn;
pub mod conn_limits;
pub mod directory;
pub mod first_byte;
pub mod headers;
pub mod jwt;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod respond;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod signals;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod token_cache;
pub mod upstream;
