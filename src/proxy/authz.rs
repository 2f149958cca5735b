//! Deciding whether a request may pass a route: one bearer token, valid for the route, with the
//! route's scopes. Rejections become RFC 6750 answers in [`super::failure`].

use http::header;
use http::request::Parts;

use std::sync::Arc;

use crate::auth::jwt::{Confirmation, TokenError};
use crate::auth::token_cache::Admitted;
use crate::snapshot::{Route, Snapshot};
use crate::store::Store;
use crate::tls::client_cert::ClientCert;

/// Why a request may not pass.
#[derive(Debug)]
pub enum Rejection {
    /// No credentials at all (or another scheme): 401 without an error code (RFC 6750 3.1).
    NoToken,
    /// Ambiguous or malformed credentials: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// The token failed validation: 401 `invalid_token`.
    InvalidToken(TokenError),
    /// Valid token without the route's scopes: 403 `insufficient_scope`.
    InsufficientScope,
}

/// Finds exactly one bearer token: in `Authorization`, never also in the query string.
pub fn bearer_token(parts: &Parts) -> Result<&str, Rejection> {
    let mut auths = parts.headers.get_all(header::AUTHORIZATION).iter();
    let first = auths.next();
    if auths.next().is_some() {
        return Err(Rejection::InvalidRequest("more than one Authorization header"));
    }
    if query_has_access_token(parts.uri.query()) {
        return Err(Rejection::InvalidRequest(if first.is_some() {
            "token sent both in the header and the query"
        } else {
            "tokens in the query string are not accepted"
        }));
    }
    let Some(value) = first else { return Err(Rejection::NoToken) };
    // Bytes, not `to_str`: its per-byte check of a kilobyte token was the most expensive part of
    // this function; the token is checked strictly by validation (or matched exactly in the cache).
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Rejection::NoToken);
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    if token.is_empty() || token.contains(&b' ') {
        return Err(Rejection::InvalidRequest("malformed Authorization header"));
    }
    let token = std::str::from_utf8(token).map_err(|_| Rejection::InvalidToken(TokenError::Malformed))?;
    Ok(token)
}

fn query_has_access_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("access_token") || k.eq_ignore_ascii_case("access%5ftoken"))
        })
    })
}

/// For a token refused for its unknown `kid`: when its issuer's keys are fetched by URL, asks
/// for a refetch and waits for it (bounded). True when the caller should validate again.
pub async fn refetch_keys(snap: &Snapshot, parts: &Parts) -> bool {
    let Ok(token) = bearer_token(parts) else { return false };
    match snap.trust.remote_for(token) {
        Some(remote) => remote.clone().refetch_unknown_kid().await,
        None => false,
    }
}

/// Checks the request against the route; `Ok(None)` for public routes. `client_cert` is the
/// request's client certificate (`ConnInfo::client_cert`), for certificate-bound tokens.
pub fn authorize(
    snap: &Snapshot,
    store: &dyn Store,
    route: &Route,
    client_cert: Option<&ClientCert>,
    parts: &Parts,
    now: u64,
) -> Result<Option<Arc<Admitted>>, Rejection> {
    if route.public {
        return Ok(None);
    }
    let token = bearer_token(parts)?;
    let admitted = snap
        .token_cache
        .validate(&snap.trust, token, route.audience.as_deref(), now)
        .map_err(Rejection::InvalidToken)?;
    let verified = &admitted.verified;
    if verified.jti.as_deref().is_some_and(|j| store.is_jti_denied(j, now)) {
        return Err(Rejection::InvalidToken(TokenError::Revoked));
    }
    if let Some(cnf) = verified.cnf.as_deref() {
        check_binding(cnf, client_cert)?;
    }
    if verified.missing_scope(&route.scopes).is_some() {
        return Err(Rejection::InsufficientScope);
    }
    Ok(Some(admitted))
}

/// A sender-constrained token passes only with proof of what it is bound to. Checked on every
/// request, cache hit or not: the proof belongs to the connection, not to the token.
fn check_binding(cnf: &Confirmation, client_cert: Option<&ClientCert>) -> Result<(), Rejection> {
    if let Some(want) = &cnf.x5t_s256 {
        // RFC 8705 section 3: the certificate of this very connection. Thumbprints are public
        // (the token carries one): a plain comparison.
        let ok = client_cert.is_some_and(|c| c.x5t_s256 == *want);
        if !ok {
            return Err(Rejection::InvalidToken(TokenError::WrongBinding));
        }
    }
    if cnf.jkt.is_some() {
        // DPoP proofs are not accepted yet: a DPoP-bound token never passes as a bearer token.
        return Err(Rejection::InvalidToken(TokenError::WrongBinding));
    }
    Ok(())
}
