//! Discovery documents: the JWKS (public halves only) and RFC 8414 server metadata. Both come
//! from the snapshot, so they change with a reload.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::paths::{endpoint_url, INTROSPECT_PATH, JWKS_PATH, REVOKE_PATH, TOKEN_PATH};
use crate::auth::keys::OwnKeys;
use crate::config::TlsClientAuthMethod;
use crate::snapshot::Snapshot;

fn public_json(body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Short caching: keys rotate, and verifiers should see a new key within a minute.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    resp
}

/// `GET /.well-known/jwks.json`
pub fn jwks(own: &OwnKeys) -> Response<Full<Bytes>> {
    public_json(&own.jwks())
}

/// `GET /.well-known/oauth-authorization-server`
pub fn metadata(snap: &Snapshot, own: &OwnKeys) -> Response<Full<Bytes>> {
    let iss = &snap.config.tokens.issuer;
    let mut scopes: Vec<&str> =
        snap.directory.clients.values().flat_map(|c| c.scopes.iter().map(String::as_str)).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut algs: Vec<&str> = own.keys.values().map(|k| k.alg.as_str()).collect();
    algs.sort_unstable();
    algs.dedup();
    let mut auth_methods = vec!["client_secret_basic", "client_secret_post", "private_key_jwt"];
    for m in [TlsClientAuthMethod::TlsClientAuth, TlsClientAuthMethod::SelfSignedTlsClientAuth] {
        if snap.config.clients.iter().any(|c| c.token_endpoint_auth_method == Some(m)) {
            auth_methods.push(m.as_str());
        }
    }
    let mut doc = json!({
        "issuer": iss,
        "token_endpoint": endpoint_url(iss, TOKEN_PATH),
        "jwks_uri": endpoint_url(iss, JWKS_PATH),
        "revocation_endpoint": endpoint_url(iss, REVOKE_PATH),
        "introspection_endpoint": endpoint_url(iss, INTROSPECT_PATH),
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256", "PS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": scopes,
        "id_token_signing_alg_values_supported": algs,
        "dpop_signing_alg_values_supported": snap.config.dpop.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    });
    // RFC 8705 section 3.3: the server can issue certificate-bound tokens.
    if snap.config.tls.mtls_enabled() {
        doc["tls_client_certificate_bound_access_tokens"] = true.into();
    }
    public_json(&doc)
}
