//! JWT access-token validation (the hot path) and minting.
//!
//! Parsing is strict and done by hand over serde, because a validator must refuse what a lenient
//! decoder would "repair": padded or non-canonical base64, duplicate claims, claims of the wrong
//! JSON type, `crit` headers, and algorithms the token picks for itself. Checks run cheapest
//! first, so that garbage and expired tokens never reach the signature math.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::de::{self, Deserializer, IgnoredAny};
use serde::Deserialize;

use crate::keys::{Alg, KeyError, KeySet, SigningKey};

/// `typ` of RFC 9068 access tokens.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a token was refused. Every variant maps to 401 `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is too large")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token header is invalid")]
    BadHeader,
    #[error("token claims are invalid")]
    BadClaims,
    #[error("token has a critical header extension")]
    Crit,
    #[error("token type is not accepted")]
    WrongType,
    #[error("token issuer is not trusted")]
    UntrustedIssuer,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is issued in the future")]
    IssuedInFuture,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token has been revoked")]
    Revoked,
}

impl TokenError {
    /// Short label for the rejection metric.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::BadClaims => "bad_claims",
            TokenError::Crit => "crit",
            TokenError::WrongType => "wrong_typ",
            TokenError::UntrustedIssuer => "untrusted_issuer",
            TokenError::AlgorithmNotAllowed => "alg_not_allowed",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "iat_future",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Revoked => "revoked",
        }
    }
}

/// One trusted issuer: its keys and the rules its tokens must meet.
pub struct Issuer {
    /// Keys by kid; each bound to one algorithm.
    pub keys: KeySet,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<Alg>,
    /// Audiences accepted when the route names none.
    pub audiences: Vec<String>,
    /// Required header `typ` (lowercase, without `application/`), if any.
    pub require_typ: Option<String>,
    /// Clock skew tolerated on time claims.
    pub leeway: u64,
}

/// Every issuer whose tokens the proxy accepts, keyed by exact `iss`.
pub struct Trust {
    /// Exact `iss` -> issuer.
    pub issuers: HashMap<String, Issuer>,
    /// Tokens longer than this are refused before parsing.
    pub max_token_bytes: usize,
}

/// A token that passed every check; what the proxy needs from it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sub`, for the identity header and the access log.
    pub sub: Option<String>,
    /// `client_id` (RFC 9068), for the identity header and the access log.
    pub client_id: Option<String>,
    /// Space-separated granted scopes.
    pub scope: Option<String>,
    /// `jti`, for revocation.
    pub jti: Option<String>,
    /// `exp`, so caches never outlive the token.
    pub exp: u64,
    /// Decoded payload JSON, for `claims_to_headers` (parsed again only when a route asks).
    pub payload: Vec<u8>,
}

impl Verified {
    /// The first required scope the token lacks, if any.
    pub fn missing_scope<'a>(&self, required: &'a [String]) -> Option<&'a str> {
        let granted = self.scope.as_deref().unwrap_or("");
        required.iter().find(|r| !granted.split(' ').any(|g| g == r.as_str())).map(String::as_str)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default, deserialize_with = "some_string")]
    typ: Option<String>,
    #[serde(default, deserialize_with = "some_string")]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(deserialize_with = "numeric_date")]
    exp: u64,
    #[serde(default, deserialize_with = "some_date")]
    nbf: Option<u64>,
    #[serde(default, deserialize_with = "some_date")]
    iat: Option<u64>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default, deserialize_with = "some_string")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "some_string")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "some_string")]
    scope: Option<String>,
    #[serde(default, deserialize_with = "some_string")]
    jti: Option<String>,
}

/// NumericDate as a non-negative JSON integer; floats, strings and null are type errors.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    u64::deserialize(d)
}

/// A present claim must have the right type: `null` is not "absent".
fn some_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
}

fn some_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

fn decode_segment(seg: &str) -> Result<Vec<u8>, TokenError> {
    // URL_SAFE_NO_PAD refuses '=', '+', '/', whitespace and non-zero trailing bits.
    B64.decode(seg).map_err(|_| TokenError::Malformed)
}

fn typ_matches(typ: Option<&str>, want: &str) -> bool {
    typ.is_some_and(|t| {
        let t = if t.len() > 12 && t[..12].eq_ignore_ascii_case("application/") { &t[12..] } else { t };
        t.eq_ignore_ascii_case(want)
    })
}

impl Trust {
    /// Validates a bearer token for a route whose audience is `audience` (None: the issuer's own).
    pub fn validate(&self, token: &str, audience: Option<&str>, now: u64) -> Result<Verified, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header: Header = serde_json::from_slice(&decode_segment(h)?).map_err(|_| TokenError::BadHeader)?;
        if header.crit.is_some() {
            return Err(TokenError::Crit);
        }
        let payload = decode_segment(p)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
        let issuer = self.issuers.get(&claims.iss).ok_or(TokenError::UntrustedIssuer)?;
        let alg =
            Alg::parse(&header.alg).filter(|a| issuer.algorithms.contains(a)).ok_or(TokenError::AlgorithmNotAllowed)?;
        if let Some(want) = &issuer.require_typ {
            if !typ_matches(header.typ.as_deref(), want) {
                return Err(TokenError::WrongType);
            }
        }
        let leeway = issuer.leeway;
        if now > claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(TokenError::IssuedInFuture);
        }
        let aud_ok = |want: &str| match &claims.aud {
            Some(Audience::One(a)) => a == want,
            Some(Audience::Many(v)) => v.iter().any(|a| a == want),
            None => false,
        };
        let aud_pass = match audience {
            Some(want) => aud_ok(want),
            None => issuer.audiences.iter().any(|a| aud_ok(a)),
        };
        if !aud_pass {
            return Err(TokenError::WrongAudience);
        }
        let key = issuer.keys.find(header.kid.as_deref(), alg).ok_or(TokenError::UnknownKey)?;
        let sig = decode_segment(s)?;
        if !key.verify(&token.as_bytes()[..h.len() + 1 + p.len()], &sig) {
            return Err(TokenError::BadSignature);
        }
        Ok(Verified {
            sub: claims.sub,
            client_id: claims.client_id,
            scope: claims.scope,
            jti: claims.jti,
            exp: claims.exp,
            payload,
        })
    }
}

/// Signs `claims` with `key` as a compact JWS with header `{alg, kid, typ}`.
pub fn sign(key: &SigningKey, typ: &str, claims: &serde_json::Value) -> Result<String, KeyError> {
    let header = serde_json::json!({ "alg": key.alg.as_str(), "kid": key.kid, "typ": typ });
    let mut out = B64.encode(header.to_string());
    out.push('.');
    out.push_str(&B64.encode(claims.to_string()));
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&B64.encode(sig));
    Ok(out)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random identifier of 128 bits, base64url.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails if the OS has no entropy source; a zero jti is then still unique per
    // process start only, so treat that as fatal in the caller's log rather than panicking here.
    let _ = aws_lc_rs::rand::fill(&mut b);
    B64.encode(b)
}

/// Does a claims JSON hold a claim named `name`, rendered as a header value (arrays joined by ' ')?
pub fn claim_as_header_text(payload: &serde_json::Value, name: &str) -> Option<String> {
    match payload.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            parts.map(|p| p.join(" "))
        }
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Alg, D::Error> {
        let s = String::deserialize(d)?;
        Alg::parse(&s).ok_or_else(|| de::Error::custom(format!("unknown algorithm {s:?}")))
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
