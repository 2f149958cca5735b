//! tokengate: a TLS-terminating reverse proxy that checks a JWT bearer token on every request.
//! (layout overview written at the end)
pub mod config;
pub mod jwt;
pub mod keys;
