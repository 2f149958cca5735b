//! JWT access-token validation (the hot path) and minting.
//!
//! Parsing is strict and done by hand over serde, because a validator must refuse what a lenient
//! decoder would "repair": padded or non-canonical base64, duplicate claims, claims of the wrong
//! JSON type, `crit` headers, and algorithms the token picks for itself. Checks run cheapest
//! first, so that garbage and expired tokens never reach the signature math.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use crate::auth::keys::{Alg, KeyError, KeySet, SigningKey, VerifyKey};
use crate::auth::remote::{KeyEpoch, RemoteKeys};

mod error;
mod parse;

pub use error::TokenError;
pub use parse::Confirmation;
use parse::{parse, Audience, Claims, Parsed, Scratch};

/// `typ` of RFC 9068 access tokens.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Where an issuer's verification keys live.
pub enum IssuerKeys {
    /// Fixed for the snapshot: our own keys, or a JWKS file.
    Static(KeySet),
    /// Fetched by URL and swapped by a background task between snapshots.
    Remote(Arc<RemoteKeys>),
}

impl From<KeySet> for IssuerKeys {
    fn from(set: KeySet) -> Self {
        IssuerKeys::Static(set)
    }
}

/// One trusted issuer: its keys and the rules its tokens must meet.
pub struct Issuer {
    /// Keys by kid; each bound to one algorithm.
    pub keys: IssuerKeys,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<Alg>,
    /// Audiences accepted when the route names none.
    pub audiences: Vec<String>,
    /// Required header `typ` (lowercase, without `application/`), if any.
    pub require_typ: Option<String>,
    /// Clock skew tolerated on time claims.
    pub leeway: u64,
    /// Claim holding the granted scopes when it is not `scope` (e.g. `scp`: a string or an array).
    pub scope_claim: Option<String>,
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
    /// `exp`, for revocation entries (deny until then).
    pub exp: u64,
    /// `exp` plus the issuer's leeway: caches never keep the token past this second.
    pub valid_until: u64,
    /// Decoded payload JSON, for `claims_to_headers` (parsed again only when a route asks).
    pub payload: Vec<u8>,
    /// For a remote issuer's token: the key set generation that verified it (a cached success
    /// is redone once the provider's keys changed).
    pub key_epoch: Option<KeyEpoch>,
    /// `cnf`: the DPoP key or client certificate a sender-constrained token is bound to (None:
    /// a bearer token). Boxed: most tokens have none, and `Verified` sits in every cache entry.
    pub cnf: Option<Box<Confirmation>>,
}

impl Verified {
    /// The first required scope the token lacks, if any.
    pub fn missing_scope<'a>(&self, required: &'a [String]) -> Option<&'a str> {
        let granted = self.scope.as_deref().unwrap_or("");
        required.iter().find(|r| !granted.split(' ').any(|g| g == r.as_str())).map(String::as_str)
    }
}

fn typ_matches(typ: Option<&str>, want: &str) -> bool {
    typ.is_some_and(|t| {
        let t = if t.len() > 12 && t[..12].eq_ignore_ascii_case("application/") { &t[12..] } else { t };
        t.eq_ignore_ascii_case(want)
    })
}

impl Claims<'_> {
    fn check_times(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        if now > self.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if self.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(())
    }

    fn has_audience(&self, want: &str) -> bool {
        match &self.aud {
            Some(Audience::One(a)) => a == want,
            Some(Audience::Many(v)) => v.iter().any(|a| a == want),
            None => false,
        }
    }
}

impl Parsed<'_> {
    /// Signature check with `key`; the decoded signature stays on the stack.
    fn signature_ok(&self, key: &VerifyKey) -> Result<bool, TokenError> {
        // 8192-bit RSA, the largest key aws-lc-rs verifies with, signs 1024 bytes.
        let mut stack = [0u8; 1032];
        let mut heap = Vec::new();
        Ok(key.verify(self.signing_input, parse::decode_into(self.signature, &mut stack, &mut heap)?))
    }

    fn check_signature(&self, keys: &KeySet, alg: Alg) -> Result<(), TokenError> {
        let key = keys.find(self.header.kid.as_deref(), alg).ok_or(TokenError::UnknownKey)?;
        if !self.signature_ok(key)? {
            return Err(TokenError::BadSignature);
        }
        Ok(())
    }
}

impl Trust {
    /// Validates a bearer token for a route whose audience is `audience` (None: the issuer's own).
    pub fn validate(&self, token: &str, audience: Option<&str>, now: u64) -> Result<Verified, TokenError> {
        self.check(token, Some(audience), None, now)
    }

    /// Validates a token of one issuer with any audience (revocation, introspection).
    pub fn validate_any_audience(&self, token: &str, issuer: &str, now: u64) -> Result<Verified, TokenError> {
        self.check(token, None, Some(issuer), now)
    }

    /// Validates a token of `issuer` only, for that issuer's own audiences (the admin listener).
    pub fn validate_from(&self, token: &str, issuer: &str, now: u64) -> Result<Verified, TokenError> {
        self.check(token, Some(None), Some(issuer), now)
    }

    /// The issuer named `iss`. A gateway trusts a handful: comparing them costs less than SipHash.
    fn issuer(&self, iss: &str) -> Option<&Issuer> {
        if self.issuers.len() <= 8 {
            self.issuers.iter().find(|(name, _)| name.as_str() == iss).map(|(_, issuer)| issuer)
        } else {
            self.issuers.get(iss)
        }
    }

    /// `audience`: None skips the audience check; Some(None) uses the issuer's audiences.
    fn check(
        &self,
        token: &str,
        audience: Option<Option<&str>>,
        only_issuer: Option<&str>,
        now: u64,
    ) -> Result<Verified, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let mut scratch = Scratch::default();
        let parsed = parse(token, &mut scratch)?;
        let (header, claims) = (&parsed.header, &parsed.claims);
        if only_issuer.is_some_and(|i| i != claims.iss) {
            return Err(TokenError::UntrustedIssuer);
        }
        let issuer = self.issuer(&claims.iss).ok_or(TokenError::UntrustedIssuer)?;
        let alg = header.alg.filter(|a| issuer.algorithms.contains(a)).ok_or(TokenError::AlgorithmNotAllowed)?;
        if let Some(want) = &issuer.require_typ {
            if !typ_matches(header.typ.as_deref(), want) {
                return Err(TokenError::WrongType);
            }
        }
        claims.check_times(now, issuer.leeway)?;
        let aud_pass = match audience {
            None => true,
            Some(Some(want)) => claims.has_audience(want),
            Some(None) => issuer.audiences.iter().any(|a| claims.has_audience(a)),
        };
        if !aud_pass {
            return Err(TokenError::WrongAudience);
        }
        let key_epoch = match &issuer.keys {
            IssuerKeys::Static(set) => {
                parsed.check_signature(set, alg)?;
                None
            }
            IssuerKeys::Remote(remote) => {
                let (set, epoch) = remote.current();
                parsed.check_signature(&set, alg)?;
                Some(epoch)
            }
        };
        let owned = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().map(str::to_owned);
        let cnf = match &claims.cnf {
            // A confirmation method this gateway cannot check: the token must not pass as bearer.
            Some(c) if c.jkt.is_none() && c.x5t_s256.is_none() => return Err(TokenError::BadClaims),
            Some(c) => Some(Box::new(c.clone())),
            None => None,
        };
        let mut verified = Verified {
            sub: owned(&claims.sub),
            client_id: owned(&claims.client_id),
            scope: owned(&claims.scope),
            jti: owned(&claims.jti),
            exp: claims.exp,
            valid_until: claims.exp.saturating_add(issuer.leeway),
            // The claims borrowed the payload up to here; now it can move.
            payload: std::mem::take(&mut scratch.payload),
            key_epoch,
            cnf,
        };
        if let Some(name) = &issuer.scope_claim {
            verified.scope = scope_from(&verified.payload, name);
        }
        Ok(verified)
    }
}

/// The granted scopes from claim `name` of a verified payload: a space-separated string, or an
/// array of strings (as Okta and Entra ID send `scp`), joined with spaces. Anything else, or a
/// scope containing a space inside an array, grants nothing.
fn scope_from(payload: &[u8], name: &str) -> Option<String> {
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).ok()?;
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let mut out: Vec<&str> = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if !s.is_empty() && !s.contains(' ') => out.push(s),
                    _ => return None,
                }
            }
            Some(out.join(" "))
        }
        _ => None,
    }
}

impl Trust {
    /// The remote key set of the issuer named in `token`, for a token refused with
    /// [`TokenError::UnknownKey`]: the caller may refetch and validate again.
    pub fn remote_for(&self, token: &str) -> Option<&Arc<RemoteKeys>> {
        let mut scratch = Scratch::default();
        let parsed = parse(token, &mut scratch).ok()?;
        match &self.issuer(&parsed.claims.iss)?.keys {
            IssuerKeys::Remote(r) => Some(r),
            IssuerKeys::Static(_) => None,
        }
    }

    /// Every remote key set of this trust (to start their tasks and list them).
    pub fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteKeys>> {
        self.issuers.values().filter_map(|i| match &i.keys {
            IssuerKeys::Remote(r) => Some(r),
            IssuerKeys::Static(_) => None,
        })
    }
}

/// What a verified client assertion (RFC 7523) tells the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// `jti`, to be accepted once.
    pub jti: String,
    /// `exp`, how long the jti must be remembered.
    pub exp: u64,
}

/// Longest lifetime accepted for a client assertion: they are meant to be single-use and short.
pub const MAX_ASSERTION_LIFETIME: u64 = 600;

/// Verifies a `private_key_jwt` client assertion: `iss` = `sub` = `client_id`, `aud` one of
/// `audiences`, short `exp` required, `jti` required, signature by one of the client's keys.
pub fn verify_assertion(
    token: &str,
    keys: &KeySet,
    client_id: &str,
    audiences: &[&str],
    now: u64,
    leeway: u64,
) -> Result<Assertion, TokenError> {
    if token.len() > 8 * 1024 {
        return Err(TokenError::TooLarge);
    }
    let mut scratch = Scratch::default();
    let parsed = parse(token, &mut scratch)?;
    let claims = &parsed.claims;
    if claims.iss != client_id || claims.sub.as_deref() != Some(client_id) {
        return Err(TokenError::UntrustedIssuer);
    }
    let alg = parsed
        .header
        .alg
        .filter(|a| !matches!(a, Alg::HS256 | Alg::HS384 | Alg::HS512))
        .ok_or(TokenError::AlgorithmNotAllowed)?;
    claims.check_times(now, leeway)?;
    if claims.exp > now + MAX_ASSERTION_LIFETIME {
        return Err(TokenError::BadClaims);
    }
    if !audiences.iter().any(|a| claims.has_audience(a)) {
        return Err(TokenError::WrongAudience);
    }
    let jti = claims.jti.as_deref().ok_or(TokenError::BadClaims)?.to_owned();
    // A client's single PEM key is stored without a kid: a one-key set accepts any kid.
    let key =
        keys.find(parsed.header.kid.as_deref(), alg).or_else(|| keys.find(None, alg)).ok_or(TokenError::UnknownKey)?;
    if !parsed.signature_ok(key)? {
        return Err(TokenError::BadSignature);
    }
    Ok(Assertion { jti, exp: claims.exp })
}

/// The `iss` of a token, unverified: only to pick which client's keys verify an assertion.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let mut scratch = Scratch::default();
    parse(token, &mut scratch).ok().map(|p| p.claims.iss.into_owned())
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

/// Seconds since the Unix epoch (the crate's one clock, re-exported where tokens are made).
pub use crate::auth::unix_now as now;

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

#[cfg(test)]
mod tests;
