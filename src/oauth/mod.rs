//! tokengate's own OAuth2 authorization server: the token endpoint (client credentials, password,
//! refresh token), revocation (RFC 7009), introspection (RFC 7662), JWKS and RFC 8414 metadata.
//!
//! Requests arrive here from [`crate::proxy`] by exact path, before route matching.

mod client_auth;
pub mod directory;
mod discovery;
mod errors;
mod form;
mod grants;
mod mtls;
pub mod ratelimit;
mod revoke;
pub mod secrets;

use std::borrow::Cow;

use crate::config::Grant;
use crate::metrics::Limit;
use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;

pub use errors::OAuthError;
use form::Form;

use crate::gateway::{ClientCert, ConnInfo, Gateway};
use crate::snapshot::Snapshot;
use crate::store::{LockoutPolicy, StoreError};
use crate::telemetry::RequestTrace;

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

/// True for the paths this module answers when the gateway issues tokens; a validation-only
/// gateway (`tokens.issue_tokens = false`) answers none of them: they go through routing like
/// any other path (404 unless a route covers them).
pub fn is_oauth_path(snap: &Snapshot, path: &str) -> bool {
    snap.issues_tokens() && matches!(path, TOKEN_PATH | REVOKE_PATH | INTROSPECT_PATH | JWKS_PATH | METADATA_PATH)
}

/// What every handler needs: the gateway, the snapshot of this request, and the time.
pub struct Ctx<'s> {
    /// Process-wide state (store, limits).
    pub gw: &'s Gateway,
    /// Tables and keys of this request's generation.
    pub snap: &'s Snapshot,
    /// Unix time of the request.
    pub now: u64,
    /// The client connection (TLS or not, client certificate), for DPoP's `htu` and mTLS.
    pub conn: &'s ConnInfo,
    /// The request's client certificate (mutual TLS, or a trusted load balancer's header).
    pub cert: Option<&'s ClientCert>,
    /// The request's trace, parent of the grant's span.
    pub trace: &'s RequestTrace,
}

/// Runs blocking store work off the async threads; store failures become 503.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, OAuthError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "state store failed");
            Err(OAuthError::Unavailable)
        }
        Err(_) => Err(OAuthError::Unavailable),
    }
}

/// Whether per-name lockout counting may pause while the store is failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// The request needs the store anyway (password, refresh, revocation): a store failure
    /// answers 503.
    Required,
    /// Client credentials need nothing else from the store, so an outage must not stop them:
    /// the secret is still checked in full and the per-IP limit still applies, but the client's
    /// failures are neither read nor counted until the store answers again.
    BestEffort,
}

impl Ctx<'_> {
    fn lockout_policy(&self) -> LockoutPolicy {
        let l = &self.snap.config.lockout;
        LockoutPolicy {
            max_failures: l.max_failures,
            window_secs: l.window_secs,
            base_wait_secs: l.base_wait_secs,
            max_wait_secs: l.max_wait_secs,
        }
    }

    /// Verifies `secret` against `phc` (a dummy hash when None) with lockout on `lock_key`.
    /// Locked, unknown and wrong all cost one full argon2 verify and all return false.
    pub async fn verify_secret(
        &self,
        phc: Option<String>,
        secret: String,
        lock_key: Option<String>,
        lockout: Lockout,
    ) -> Result<bool, OAuthError> {
        // Bounded concurrency: each verify holds ~19 MiB, so a flood cannot exhaust memory.
        let _permit = self.gw.hash_permits.clone().acquire_owned().await.map_err(|_| OAuthError::Unavailable)?;
        let (store, now, policy) = (self.gw.store.clone(), self.now, self.lockout_policy());
        blocking(move || {
            let matches =
                crate::oauth::secrets::verify(phc.as_deref().unwrap_or(crate::oauth::secrets::dummy_hash()), &secret)
                    && phc.is_some();
            counted(store.as_ref(), lock_key, now, &policy, lockout, matches)
        })
        .await
    }

    /// Counts one client authentication that needs no secret (a client certificate) for lockout
    /// on `lock_key`, as [`Ctx::verify_secret`] does: true when it `matches` and the key is not
    /// locked.
    pub async fn count_attempt(&self, lock_key: String, matches: bool, lockout: Lockout) -> Result<bool, OAuthError> {
        let (store, now, policy) = (self.gw.store.clone(), self.now, self.lockout_policy());
        blocking(move || counted(store.as_ref(), Some(lock_key), now, &policy, lockout, matches)).await
    }
}

/// Lockout around one authentication attempt that `matches` or not: a failure is recorded, a
/// success clears earlier failures; true when it matched and `lock_key` is not locked.
fn counted(
    store: &dyn crate::store::Store,
    lock_key: Option<String>,
    now: u64,
    policy: &LockoutPolicy,
    lockout: Lockout,
    matches: bool,
) -> Result<bool, StoreError> {
    let best_effort = lockout == Lockout::BestEffort;
    // A store known to be failing is not even asked: no request waits out its timeout.
    let mut lock_key = lock_key.filter(|_| !best_effort || store.available());
    let state = match &lock_key {
        Some(k) => match store.lock_state(k, now) {
            Ok(state) => Some(state),
            Err(e) if best_effort => {
                tracing::debug!(error = %e, "lockout read failed; client credentials go on without it");
                lock_key = None;
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let locked = state.is_some_and(|s| s.locked_until.is_some_and(|t| t > now));
    if let Some(k) = &lock_key {
        let counted = if !matches {
            store.record_failure(k, now, policy).map(drop)
        } else if !locked && state.is_some_and(|s| s.failures > 0) {
            store.clear_failures(k)
        } else {
            Ok(())
        };
        match counted {
            Err(e) if best_effort => tracing::debug!(error = %e, "lockout update failed; answered without it"),
            other => other?,
        }
    }
    Ok(matches && !locked)
}

/// A trusted load balancer's client-certificate header that cannot be read, at an OAuth path:
/// `invalid_client`, as any other failed client authentication (and logged as one).
pub fn refuse_cert_header(path: &str, e: crate::tls::client_cert::CertHeaderError) -> Response<Full<Bytes>> {
    let err = OAuthError::InvalidClient(errors::ClientFailure::CertificateHeader(e));
    tracing::info!(target: "token", endpoint = path, error = err.code(), reason = %err.reason(), "token request refused");
    err.response()
}

/// Answers an OAuth path. The token, revocation and introspection endpoints are TLS-only unless
/// `tokens.allow_plain_token_endpoint`; discovery is public everywhere. Reads `body` only as far
/// as it needs: the caller discards the rest.
pub async fn handle(
    gw: &Gateway,
    snap: &Snapshot,
    conn: &ConnInfo,
    parts: &Parts,
    body: &mut Incoming,
    trace: &RequestTrace,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    let ctx = Ctx { gw, snap, now: crate::auth::jwt::now(), conn, cert: conn.client_cert.as_deref(), trace };
    // Not reached in validation-only mode (see `is_oauth_path`); answered as an unknown path.
    let Some(own) = snap.own.as_ref() else {
        return crate::respond::json_error(http::StatusCode::NOT_FOUND, "not_found", "no route for this path");
    };
    match path {
        JWKS_PATH => return discovery::jwks(own),
        METADATA_PATH => return discovery::metadata(snap, own),
        _ => {}
    }
    if !conn.tls && !snap.config.tokens.allow_plain_token_endpoint {
        return OAuthError::InvalidRequest("this endpoint is only served over TLS").response();
    }
    if let Err(retry_after) = gw.ip_limits.check(conn.peer.ip(), ctx.now, snap.config.lockout.per_ip_per_minute) {
        gw.metrics.record_limit(Limit::TokenEndpointRate);
        return OAuthError::TooManyRequests { retry_after }.response();
    }
    let form = match form::read(parts, body).await {
        Ok(form) => form,
        Err(e) => return e.response(),
    };
    let result = match path {
        TOKEN_PATH => grants::token(&ctx, parts, &form).await,
        REVOKE_PATH => revoke::revoke(&ctx, parts, &form).await,
        _ => revoke::introspect(&ctx, parts, &form).await,
    };
    result.unwrap_or_else(|e| {
        log_refusal(path, parts, &form, &e);
        e.response_to(client_auth::challenge(parts, &form, ctx.cert.is_some()))
    })
}

/// One `token` line per refused grant, client or scope: endpoint, grant type, the client id
/// the request claimed, the error and why. Never a secret, password, assertion or token.
fn log_refusal(path: &str, parts: &Parts, form: &Form, e: &OAuthError) {
    if !matches!(
        e,
        OAuthError::InvalidClient(_)
            | OAuthError::InvalidGrant(_)
            | OAuthError::UnauthorizedClient(_)
            | OAuthError::InvalidScope
    ) || !tracing::enabled!(target: "token", tracing::Level::INFO)
    {
        return;
    }
    let client_id = client_auth::claimed_client_id(parts, form);
    // Only a known grant name: the parameter is the client's free text.
    let grant_type = form.get("grant_type").map(|g| Grant::parse(g).map_or("other", Grant::as_str));
    tracing::info!(
        target: "token",
        endpoint = path,
        grant_type = grant_type.unwrap_or("-"),
        client_id = client_id.as_deref().map(printable).unwrap_or(Cow::Borrowed("-")).as_ref(),
        error = e.code(),
        reason = %e.reason(),
        scope = form.get("scope").filter(|_| matches!(e, OAuthError::InvalidScope)).map(printable).as_deref(),
        "token request refused"
    );
}

/// Client-sent text as it may appear in a log: at most 128 characters, control characters
/// escaped, so that a crafted id cannot forge or flood log lines.
fn printable(s: &str) -> Cow<'_, str> {
    if s.len() <= 128 && !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().take(128).flat_map(char::escape_default).collect())
}
