//! The one access token of a request head and, when it is refused, the answer: how RFC 6750
//! (`Bearer`) and RFC 9449 (`DPoP`) say a token is sent and a refusal is worded. Both the proxy's
//! authorization (`proxy::authz`) and the admin listener's own bearer check use it, so the two
//! listeners read and refuse tokens alike without the admin importing the proxy's request path.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::dpop::nonce::Nonces;
use crate::auth::dpop::ProofError;
use crate::auth::jwt::TokenError;
use crate::respond::json_error;

/// Why a request may not pass.
#[derive(Debug)]
pub enum Rejection {
    /// No credentials at all (or another scheme): 401 without an error code (RFC 6750 3.1).
    NoToken,
    /// The same on a route that takes DPoP-bound tokens only: a DPoP challenge (RFC 9449 7.1).
    NoDpopToken,
    /// Ambiguous or malformed credentials: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// The token failed validation: 401 `invalid_token`.
    InvalidToken(TokenError),
    /// Valid token without the route's scopes: 403 `insufficient_scope`.
    InsufficientScope,
    /// Valid token whose claims fail one of the route's rules (this claim): 403
    /// `insufficient_scope`, naming the claim, never the values it needed.
    ClaimRule(std::sync::Arc<str>),
    /// The DPoP proof is missing or wrong: 401 `invalid_dpop_proof` (or `use_dpop_nonce`).
    Proof(ProofError),
    /// A token sent with the `DPoP` scheme failed: 401 `invalid_token` in a DPoP challenge.
    DpopToken(TokenError),
    /// The route takes DPoP-bound tokens only and got a bearer token: 401, DPoP challenge.
    DpopRequired,
}

/// How the token was presented (RFC 6750 or RFC 9449 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with a proof in the `DPoP` header (RFC 9449).
    Dpop,
}

/// Finds exactly one bearer token: in `Authorization`, never also in the query string.
pub fn bearer_token(parts: &Parts) -> Result<&str, Rejection> {
    credentials(parts).map(|(_, token)| token)
}

/// Finds exactly one access token and its scheme (`Bearer` or `DPoP`): in `Authorization`,
/// never also in the query string.
pub fn credentials(parts: &Parts) -> Result<(Scheme, &str), Rejection> {
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
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Err(Rejection::NoToken);
    };
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    if token.is_empty() || token.contains(&b' ') {
        return Err(Rejection::InvalidRequest("malformed Authorization header"));
    }
    let token = std::str::from_utf8(token).map_err(|_| Rejection::InvalidToken(TokenError::Malformed))?;
    Ok((scheme, token))
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

/// The header carrying a fresh server nonce (RFC 9449 8).
static DPOP_NONCE: header::HeaderName = header::HeaderName::from_static("dpop-nonce");

/// The RFC 6750 `WWW-Authenticate` realm of every challenge.
const REALM: &str = "Bearer realm=\"tokengate\"";

/// RFC 6750 section 3 / RFC 9449 section 7.1: status, `WWW-Authenticate` and a small JSON body.
/// `scope_text` goes into a 403's challenge; DPoP challenges carry `dpop_algs` and a fresh nonce
/// from `nonces`. Never echoes the token.
pub fn challenge(r: &Rejection, scope_text: &str, dpop_algs: &str, nonces: &Nonces) -> Response<Full<Bytes>> {
    let dpop = |error: &str, desc: &str| {
        format!("DPoP error=\"{error}\", error_description=\"{desc}\", algs=\"{}\"", dpop_algs)
    };
    let (status, www, error, desc): (StatusCode, String, &str, String) = match r {
        Rejection::Proof(ProofError::UseNonce) => {
            let desc = ProofError::UseNonce.to_string();
            let mut resp = json_error(StatusCode::UNAUTHORIZED, "use_dpop_nonce", &desc);
            let nonce = nonces.issue(crate::auth::unix_now());
            for (name, value) in [(header::WWW_AUTHENTICATE, dpop("use_dpop_nonce", &desc)), (DPOP_NONCE.clone(), nonce)] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(name, v);
                }
            }
            return resp;
        }
        Rejection::Proof(e) => {
            let desc = e.to_string();
            (StatusCode::UNAUTHORIZED, dpop("invalid_dpop_proof", &desc), "invalid_dpop_proof", desc)
        }
        Rejection::DpopToken(e) => {
            let desc = e.to_string();
            (StatusCode::UNAUTHORIZED, dpop("invalid_token", &desc), "invalid_token", desc)
        }
        Rejection::DpopRequired => {
            let desc = "this route requires a DPoP-bound token".to_string();
            (StatusCode::UNAUTHORIZED, dpop("invalid_token", &desc), "invalid_token", desc)
        }
        Rejection::NoDpopToken => (
            StatusCode::UNAUTHORIZED,
            format!("DPoP algs=\"{}\"", dpop_algs),
            "unauthorized",
            "a DPoP-bound token is required".into(),
        ),
        Rejection::NoToken => {
            (StatusCode::UNAUTHORIZED, REALM.to_string(), "unauthorized", "a bearer token is required".into())
        }
        Rejection::InvalidRequest(d) => (
            StatusCode::BAD_REQUEST,
            format!("{REALM}, error=\"invalid_request\", error_description=\"{d}\""),
            "invalid_request",
            (*d).into(),
        ),
        Rejection::InvalidToken(e) => (
            StatusCode::UNAUTHORIZED,
            format!("{REALM}, error=\"invalid_token\", error_description=\"{e}\""),
            "invalid_token",
            e.to_string(),
        ),
        Rejection::ClaimRule(claim) => (
            StatusCode::FORBIDDEN,
            format!("{REALM}, error=\"insufficient_scope\", error_description=\"the token's claims do not satisfy this route\""),
            "insufficient_scope",
            format!("the token's claim {claim} does not satisfy this route"),
        ),
        Rejection::InsufficientScope => (
            StatusCode::FORBIDDEN,
            format!(
                "{REALM}, error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"{scope_text}\""
            ),
            "insufficient_scope",
            format!("requires scope: {scope_text}"),
        ),
    };
    let mut resp = json_error(status, error, &desc);
    if let Ok(v) = HeaderValue::from_str(&www) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
