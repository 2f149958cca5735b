//! Deciding whether a request may pass a route: one access token (RFC 6750 `Bearer`, or RFC 9449
//! `DPoP` with its proof), valid for the route, proven when it is sender-constrained, with the
//! route's scopes. The token itself is found, and a rejection worded, by [`crate::auth::bearer`]
//! (through [`super::failure`] on this path).

use http::request::Parts;

use std::sync::Arc;

use crate::auth::bearer::{bearer_token, credentials, Rejection, Scheme};
use crate::auth::dpop::replay::ReplayMemory;
use crate::auth::dpop::{check_request, Expect, ProofError};
use crate::auth::jwt::{Confirmation, TokenError};
use crate::auth::token_cache::Admitted;
use crate::config::DpopMode;
use crate::snapshot::{Route, Snapshot};
use crate::store::Store;

/// The `DPoP` request header (RFC 9449 4.1).
pub static DPOP: http::HeaderName = http::HeaderName::from_static("dpop");

/// What authorization needs of the connection and the process (not the gateway itself, which
/// the admin listener's use of this module must not depend on).
pub struct Context<'a> {
    /// Whether the connection is TLS: the scheme of the URI the client addressed.
    pub tls: bool,
    /// base64url SHA-256 of the connection's client certificate, if it presented one.
    pub cert_thumbprint: Option<&'a str>,
    /// Denied jtis and the shared replay store.
    pub store: &'a dyn Store,
    /// This process's DPoP replay memory.
    pub replay: &'a ReplayMemory,
    /// Set by [`authorize`] once a token was looked up: true when the verified-token cache
    /// answered, false when its signature was verified (the authorization span says which).
    pub cache_hit: std::cell::Cell<Option<bool>>,
}

/// A request allowed through: the token's claims, and for a DPoP request the proof's id, still
/// to be remembered where other instances see it (an await the caller does, not this function).
pub struct Granted {
    /// None on a public route.
    pub admitted: Option<Arc<Admitted>>,
    /// The DPoP proof id, when a proof was checked.
    pub proof: Option<[u8; 16]>,
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

/// Checks the request against the route. The DPoP replay check here is this process's memory;
/// the caller confirms `Granted::proof` with a shared store.
pub fn authorize<'p>(
    snap: &Snapshot,
    cx: &Context<'_>,
    route: &Route,
    parts: &Parts,
    capture: &impl Fn(&str) -> Option<&'p str>,
    now: u64,
) -> Result<Granted, Rejection> {
    if route.public {
        return Ok(Granted { admitted: None, proof: None });
    }
    let (scheme, token) = credentials(parts).map_err(|e| match e {
        Rejection::NoToken if route.dpop == DpopMode::Require => Rejection::NoDpopToken,
        other => other,
    })?;
    // Under the DPoP scheme a refused token is told in a DPoP challenge (RFC 9449 7.1).
    let refuse = |e: TokenError| match scheme {
        Scheme::Bearer => Rejection::InvalidToken(e),
        Scheme::Dpop => Rejection::DpopToken(e),
    };
    let mut cache_hit = false;
    let admitted = snap.token_cache.validate_noting(&snap.trust, token, route.audience.as_deref(), now, &mut cache_hit);
    cx.cache_hit.set(Some(cache_hit));
    let admitted = admitted.map_err(refuse)?;
    let verified = &admitted.verified;
    if verified.jti.as_deref().is_some_and(|j| cx.store.is_jti_denied(j, now)) {
        return Err(refuse(TokenError::Revoked));
    }
    let cnf = verified.cnf.as_deref();
    if let Some(cnf) = cnf {
        check_certificate(cnf, cx.cert_thumbprint).map_err(refuse)?;
    }
    let proof = match (cnf.and_then(|c| c.jkt.as_deref()), scheme) {
        (Some(jkt), Scheme::Dpop) => Some(check_proof(snap, cx, parts, token, jkt, now)?),
        // RFC 9449 7.2: a DPoP-bound token must not pass as a bearer token.
        (Some(_), Scheme::Bearer) => return Err(Rejection::InvalidToken(TokenError::WrongBinding)),
        // The DPoP scheme with a token bound to no key: nothing the proof proves applies to it.
        (None, Scheme::Dpop) => return Err(Rejection::DpopToken(TokenError::WrongBinding)),
        (None, Scheme::Bearer) if route.dpop == DpopMode::Require => return Err(Rejection::DpopRequired),
        (None, Scheme::Bearer) => None,
    };
    if verified.missing_scope(&route.scopes).is_some() {
        return Err(Rejection::InsufficientScope);
    }
    if !route.require.is_empty() {
        // A payload that is not an object satisfies no rule (`present = false` included).
        let refused = |r: &crate::auth::claims::Rule| Rejection::ClaimRule(r.claim().shown().clone());
        match admitted.claims() {
            Some(claims) => {
                if let Some(rule) = crate::auth::claims::first_failing(&route.require, claims, capture) {
                    return Err(refused(rule));
                }
            }
            None => return Err(refused(&route.require[0])),
        }
    }
    Ok(Granted { admitted: Some(admitted), proof })
}

/// RFC 8705 section 3: a certificate-bound token passes only on a connection presenting that
/// certificate. Checked on every request, cache hit or not: the certificate belongs to the
/// connection, not to the token.
fn check_certificate(cnf: &Confirmation, presented: Option<&str>) -> Result<(), TokenError> {
    if let Some(want) = &cnf.x5t_s256 {
        // Thumbprints are public (the token carries one): a plain comparison.
        if presented != Some(want.as_str()) {
            return Err(TokenError::WrongBinding);
        }
    }
    Ok(())
}

/// RFC 9449 7.1: exactly one proof, for this request and this token, signed by the key the token
/// is bound to, fresh, with the server's nonce when nonces are required, and not seen before by
/// this process. Returns the proof id for the shared replay check.
fn check_proof(
    snap: &Snapshot,
    cx: &Context<'_>,
    parts: &Parts,
    token: &str,
    jkt: &str,
    now: u64,
) -> Result<[u8; 16], Rejection> {
    let cfg = &snap.config.dpop;
    let proof = single_proof(parts).map_err(Rejection::Proof)?;
    let uri = crate::proxy::headers::client_uri(parts, cx.tls, snap.config.server.trust_forwarded)
        .ok_or(Rejection::Proof(ProofError::WrongUri))?;
    let expect = Expect::new(cfg, parts.method.as_str(), &uri, Some(token));
    check_request(proof, &expect, Some(jkt), cfg, &snap.nonces, cx.replay, now)
        .map(|accepted| accepted.id)
        .map_err(Rejection::Proof)
}

/// The one `DPoP` header of a request (RFC 9449 4.3 step 1).
pub fn single_proof(parts: &Parts) -> Result<&str, ProofError> {
    let mut all = parts.headers.get_all(&DPOP).iter();
    let first = all.next().ok_or(ProofError::Missing)?;
    if all.next().is_some() {
        return Err(ProofError::Several);
    }
    first.to_str().map_err(|_| ProofError::Malformed)
}
