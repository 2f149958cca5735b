//! Over-the-wire tests of tokengate's own OAuth2 authorization server: the token endpoint with an
//! independent OAuth2 client (the `oauth2` crate) and an independent JWT verifier
//! (`jsonwebtoken` against the served JWKS), client authentication, refresh rotation, error
//! codes, brute-force defences, revocation, introspection, discovery, restart and reload.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/dpop_client.rs"]
#[allow(dead_code)]
mod dpop_client;
mod oauth2_http;
mod support;

mod abuse;
mod challenges;
mod client_auth;
mod grants;
mod lifecycle;
mod refresh;
mod revocation;
mod strict_client;
