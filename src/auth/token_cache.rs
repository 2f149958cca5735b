//! A bounded cache of tokens that passed validation, keyed on the token's exact bytes, so a
//! client reusing its token costs a hash lookup instead of a signature check.
//!
//! Safety rules: only successes are cached; an entry is used only until the token's `exp` (plus
//! leeway) and only for the audience it was checked against; the cache lives in the snapshot, so
//! any reload (a removed key, a changed issuer) drops it whole; a remote issuer's token is
//! re-verified once that issuer's fetched key set changed; revocation is checked by the caller
//! after every lookup, hit or miss.

use std::sync::Arc;

use http::HeaderValue;
use quick_cache::sync::Cache;

use crate::auth::jwt::{TokenError, Trust, Verified};

/// A token that passed validation, with its identity header values made once: a cache hit
/// forwards them as they are instead of re-checking and copying the claim text per request.
pub struct Admitted {
    /// What validation produced.
    pub verified: Verified,
    /// `X-Auth-Subject`, `X-Auth-Client-Id` and `X-Auth-Scope` values, from `sub`, `client_id`
    /// and `scope`; None when the claim is absent or not a valid header value (CR/LF in a claim
    /// never becomes a header).
    pub identity: [Option<HeaderValue>; 3],
    /// The payload parsed, once per token, the first time a route reads claims (rules,
    /// `claims_to_headers`); cache hits reuse it. None inside when it is not a JSON object.
    claims: std::sync::OnceLock<Option<serde_json::Value>>,
}

impl Admitted {
    pub fn new(verified: Verified) -> Admitted {
        let value = |c: &Option<String>| c.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        let identity = [value(&verified.sub), value(&verified.client_id), value(&verified.scope)];
        Admitted { verified, identity, claims: std::sync::OnceLock::new() }
    }

    /// The token's claims as JSON (parsed on first use).
    pub fn claims(&self) -> Option<&serde_json::Value> {
        self.claims
            .get_or_init(|| {
                serde_json::from_slice(&self.verified.payload).ok().filter(|v: &serde_json::Value| v.is_object())
            })
            .as_ref()
    }
}

/// One cached success.
#[derive(Clone)]
struct Entry {
    /// Route audience the token was checked against (None: the issuer's own audiences); an Arc
    /// because every hit clones the entry.
    audience: Option<Arc<str>>,
    /// What validation produced, including `valid_until` (`exp` + leeway).
    admitted: Arc<Admitted>,
}

/// Validated tokens by exact token string.
pub struct TokenCache {
    /// None when disabled (`tokens.cache_size = 0`).
    inner: Option<Cache<Box<str>, Entry>>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { inner: (capacity > 0).then(|| Cache::new(capacity)) }
    }

    /// Validates through the cache: a hit skips parsing and the signature check.
    pub fn validate(
        &self,
        trust: &Trust,
        token: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<Arc<Admitted>, TokenError> {
        self.validate_noting(trust, token, audience, now, &mut false)
    }

    /// [`Self::validate`], setting `cache_hit` when the answer came from the cache (no signature
    /// was verified), for the authorization span.
    pub fn validate_noting(
        &self,
        trust: &Trust,
        token: &str,
        audience: Option<&str>,
        now: u64,
        cache_hit: &mut bool,
    ) -> Result<Arc<Admitted>, TokenError> {
        let Some(cache) = &self.inner else {
            return trust.validate(token, audience, now).map(|v| Arc::new(Admitted::new(v)));
        };
        if let Some(e) = cache.get(token) {
            let v = &e.admitted.verified;
            let keys_current = v.key_epoch.as_ref().is_none_or(|k| k.is_current());
            if v.valid_until >= now && e.audience.as_deref() == audience && keys_current {
                *cache_hit = true;
                return Ok(e.admitted);
            }
        }
        let admitted = Arc::new(Admitted::new(trust.validate(token, audience, now)?));
        cache.insert(token.into(), Entry { audience: audience.map(Into::into), admitted: admitted.clone() });
        Ok(admitted)
    }
}
