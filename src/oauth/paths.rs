//! Where the token endpoint and its neighbours are served, and their absolute URLs.

/// Token endpoint path.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Revocation endpoint path.
pub const REVOKE_PATH: &str = "/oauth2/revoke";
/// Introspection endpoint path.
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
/// JWKS path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// RFC 8414 metadata path.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The absolute URL of one of our endpoints: the issuer is the public base URL.
pub fn endpoint_url(issuer: &str, path: &str) -> String {
    format!("{}{path}", issuer.trim_end_matches('/'))
}
