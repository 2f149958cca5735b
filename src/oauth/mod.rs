//! tokengate's own OAuth2 authorization server: the token endpoint (client credentials, password,
//! refresh token), revocation (RFC 7009), introspection (RFC 7662), JWKS and RFC 8414 metadata.
//!
//! Requests arrive here from [`crate::proxy`] by exact path, before route matching.

mod client_auth;
mod ctx;
pub mod directory;
mod discovery;
mod errors;
mod form;
mod grants;
mod mtls;
mod paths;
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

use ctx::Ctx;
pub use errors::OAuthError;
use form::Form;
use paths::{INTROSPECT_PATH, JWKS_PATH, METADATA_PATH, REVOKE_PATH, TOKEN_PATH};

use crate::gateway::{ConnInfo, Gateway};
use crate::snapshot::Snapshot;
use crate::telemetry::RequestTrace;

/// True for the paths this module answers when the gateway issues tokens; a validation-only
/// gateway (`tokens.issue_tokens = false`) answers none of them: they go through routing like
/// any other path (404 unless a route covers them).
pub fn is_oauth_path(snap: &Snapshot, path: &str) -> bool {
    snap.issues_tokens() && matches!(path, TOKEN_PATH | REVOKE_PATH | INTROSPECT_PATH | JWKS_PATH | METADATA_PATH)
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
