//! The token endpoint's grants: `client_credentials`, `password` and `refresh_token` (rotated on
//! every use, with reuse detection revoking the whole family per RFC 9700 section 2.2.2).

use crate::config::Grant;
use std::collections::BTreeSet;

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::client_auth::authenticate;
use super::ctx::{blocking, Ctx, Lockout};
use super::errors::{json as json_response, OAuthError};
use super::form::Form;
use crate::auth::dpop::{check_request, Expect, ProofError};
use crate::auth::jwt::{self, Confirmation, ACCESS_TOKEN_TYP};
use crate::oauth::directory::Client;
use crate::oauth::secrets;
use crate::store::{Family, Grace, Rotation, TokenHash};
use opentelemetry::trace::{Span as _, SpanKind, Status};
use opentelemetry::KeyValue;

/// SHA-256 of a refresh token: only this is stored.
pub fn token_hash(token: &str) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses a `scope` parameter (RFC 6749 3.3): space-separated tokens of printable ASCII
/// without `"` or `\`; duplicates collapse.
fn parse_scope(s: &str) -> Result<BTreeSet<&str>, OAuthError> {
    let mut out = BTreeSet::new();
    for t in s.split(' ') {
        if t.is_empty() || !t.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)) {
            return Err(OAuthError::InvalidScope);
        }
        out.insert(t);
    }
    Ok(out)
}

/// The scope to grant: the request's (each allowed), or `default` when none was requested.
fn grant_scope<'a>(
    requested: Option<&'a str>,
    allowed: &dyn Fn(&str) -> bool,
    default: impl Iterator<Item = &'a str>,
) -> Result<String, OAuthError> {
    let set: BTreeSet<&str> = match requested {
        Some(r) => parse_scope(r)?,
        None => default.filter(|s| allowed(s)).collect(),
    };
    if set.iter().any(|s| !allowed(s)) {
        return Err(OAuthError::InvalidScope);
    }
    Ok(set.into_iter().collect::<Vec<_>>().join(" "))
}

/// What the grant's span records: never a token, secret or password.
#[derive(Default)]
struct GrantNote {
    /// The `grant_type`, once recognized.
    grant: Option<Grant>,
    /// The authenticated client's id (an unauthenticated one is not recorded: it may be a typo
    /// of a secret or an attacker's guess).
    client_id: Option<String>,
}

/// Handles `POST /oauth2/token`, in a `token` span when the request is recorded.
pub async fn token(ctx: &Ctx<'_>, parts: &Parts, form: &Form) -> Result<Response<Full<Bytes>>, OAuthError> {
    let Some(mut span) = ctx.trace.child("token", SpanKind::Internal) else {
        return grant(ctx, parts, form, &mut None).await;
    };
    let mut note = Some(GrantNote::default());
    let result = grant(ctx, parts, form, &mut note).await;
    let note = note.unwrap_or_default();
    span.set_attribute(KeyValue::new("oauth.grant_type", note.grant.map_or("unsupported", Grant::as_str)));
    if let Some(id) = note.client_id {
        span.set_attribute(KeyValue::new("oauth.client_id", id));
    }
    match &result {
        Ok(_) => span.set_attribute(KeyValue::new("oauth.result", "issued")),
        Err(e) => {
            span.set_attribute(KeyValue::new("oauth.result", e.code()));
            span.set_status(Status::error(e.code()));
        }
    }
    span.end();
    result
}

async fn grant(
    ctx: &Ctx<'_>,
    parts: &Parts,
    form: &Form,
    note: &mut Option<GrantNote>,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    let grant = form.get("grant_type").ok_or(OAuthError::InvalidRequest("grant_type is required"))?;
    let grant = Grant::parse(grant).ok_or(OAuthError::UnsupportedGrantType)?;
    if let Some(n) = note {
        n.grant = Some(grant);
    }
    let lockout = if grant == Grant::ClientCredentials { Lockout::BestEffort } else { Lockout::Required };
    let client = authenticate(ctx, parts, form, lockout).await?;
    if let Some(n) = note {
        n.client_id = Some(client.id.clone());
    }
    // What the issued access token is bound to (RFC 9449 DPoP key, RFC 8705 certificate).
    let cnf = Confirmation {
        x5t_s256: super::mtls::bound_thumbprint(ctx, client)?,
        jkt: dpop_key(ctx, parts, client).await?,
    };
    match grant {
        Grant::ClientCredentials => client_credentials(ctx, client, form, &cnf),
        Grant::Password => password(ctx, client, form, &cnf).await,
        Grant::RefreshToken => refresh(ctx, client, form, &cnf).await,
    }
}

fn client_credentials(
    ctx: &Ctx<'_>,
    client: &Client,
    form: &Form,
    cnf: &Confirmation,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    if !client.grants.client_credentials || client.public {
        return Err(OAuthError::UnauthorizedClient("the client may not use client_credentials"));
    }
    let allowed = |s: &str| client.scopes.iter().any(|c| c == s);
    let scope = grant_scope(form.get("scope"), &allowed, client.default_scopes.iter().map(String::as_str))?;
    issue(ctx, client, &client.id, &scope, None, false, cnf)
}

async fn password(
    ctx: &Ctx<'_>,
    client: &Client,
    form: &Form,
    cnf: &Confirmation,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    if !client.grants.password {
        return Err(OAuthError::UnauthorizedClient("the client may not use the password grant"));
    }
    let username = form.get("username").ok_or(OAuthError::InvalidRequest("username is required"))?;
    let password = form.get("password").ok_or(OAuthError::InvalidRequest("password is required"))?;
    let user = ctx.snap.directory.users.get(username);
    // Unknown, disabled, locked and wrong all pay one argon2 verify and answer the same.
    let phc = user.filter(|u| !u.disabled).map(|u| u.password_hash.clone());
    let lock_key = user.map(|_| format!("user:{username}"));
    if !ctx.verify_secret(phc, password.to_owned(), lock_key, Lockout::Required).await? {
        return Err(OAuthError::InvalidGrant("invalid username or password"));
    }
    let user = user.ok_or(OAuthError::InvalidGrant("invalid username or password"))?;
    let allowed = |s: &str| client.scopes.iter().any(|c| c == s) && user.scopes.iter().any(|u| u == s);
    let scope = grant_scope(form.get("scope"), &allowed, client.default_scopes.iter().map(String::as_str))?;
    let refresh = if client.grants.refresh_token {
        let token = secrets::random_secret();
        let family = Family {
            family_id: jwt::random_id(),
            client_id: client.id.clone(),
            sub: user.sub.clone(),
            scope: scope.clone(),
            created: ctx.now,
            expires: ctx.now + ctx.snap.config.tokens.refresh_ttl_secs,
            idle_secs: ctx.snap.config.tokens.refresh_idle_secs,
            last_used: ctx.now,
            // RFC 9449 5: a public client's refresh token is bound to its DPoP key (a
            // confidential client's is already bound to its authentication).
            jkt: if client.public { cnf.jkt.clone() } else { None },
        };
        let (store, hash) = (ctx.gw.store.clone(), token_hash(&token));
        blocking(move || store.create_family(&family, &hash)).await?;
        Some(token)
    } else {
        None
    };
    issue(ctx, client, &user.sub, &scope, refresh, true, cnf)
}

async fn refresh(
    ctx: &Ctx<'_>,
    client: &Client,
    form: &Form,
    cnf: &Confirmation,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    if !client.grants.refresh_token {
        return Err(OAuthError::UnauthorizedClient("the client may not use refresh tokens"));
    }
    let presented =
        token_hash(form.get("refresh_token").ok_or(OAuthError::InvalidRequest("refresh_token is required"))?);
    let invalid = OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked");
    let (store, now) = (ctx.gw.store.clone(), ctx.now);
    let current = blocking(move || store.current_family(&presented, now)).await?;
    // Every check that can refuse runs before the rotation: a refused request must not consume
    // the token. A token that is not current still goes to `rotate`, which detects reuse (or
    // answers a retry within the grace, checking its DPoP key itself).
    let checked = match current.filter(|f| f.client_id == client.id) {
        Some(f) => {
            if let Some(bound) = &f.jkt {
                if cnf.jkt.as_deref() != Some(bound.as_str()) {
                    let why = if cnf.jkt.is_none() { ProofError::Missing } else { ProofError::WrongKey };
                    return Err(OAuthError::InvalidDpopProof(why));
                }
            }
            Some(refreshable(ctx, client, form, &f)?)
        }
        None => None,
    };
    let next = secrets::random_secret();
    let (store, next_hash, cid) = (ctx.gw.store.clone(), token_hash(&next), client.id.clone());
    let (grace_secs, jkt) = (ctx.snap.config.tokens.refresh_reuse_grace_secs, cnf.jkt.clone());
    let rotation = blocking(move || {
        let grace = Grace { secs: grace_secs, jkt: jkt.as_deref() };
        store.rotate_with_grace(&presented, &next_hash, &cid, &grace, now)
    })
    .await?;
    match (rotation, checked) {
        (Rotation::Rotated(_), Some((scope, sub))) => issue(ctx, client, &sub, &scope, Some(next), false, cnf),
        (Rotation::Retried(f), checked) => {
            ctx.gw.metrics.refresh_reuse_grace.inc();
            tracing::info!(
                client_id = %client.id,
                family_id = %f.family_id,
                "refresh token retried within the reuse grace: a fresh pair, the one issued before is dead"
            );
            // Checked after the rotation: the token was not current before it. A refusal here
            // leaves the family's current token undelivered; a corrected retry may still come
            // within the window.
            let (scope, sub) = match checked {
                Some(c) => c,
                None => refreshable(ctx, client, form, &f)?,
            };
            issue(ctx, client, &sub, &scope, Some(next), false, cnf)
        }
        (Rotation::Reused, _) => {
            tracing::warn!(client_id = %client.id, "refresh token reuse: family revoked");
            Err(invalid)
        }
        _ => Err(invalid),
    }
}

/// What a refresh of `f` grants (scope, sub): its user still enabled, the scope narrowed, never
/// widened, and never beyond what client and user hold today.
fn refreshable(ctx: &Ctx<'_>, client: &Client, form: &Form, f: &Family) -> Result<(String, String), OAuthError> {
    let invalid = OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked");
    let user = ctx.snap.directory.user_by_sub(&f.sub).filter(|u| !u.disabled).ok_or(invalid)?;
    let original: BTreeSet<&str> = f.scope.split(' ').filter(|s| !s.is_empty()).collect();
    let allowed =
        |s: &str| original.contains(s) && client.scopes.iter().any(|c| c == s) && user.scopes.iter().any(|u| u == s);
    Ok((grant_scope(form.get("scope"), &allowed, original.iter().copied())?, f.sub.clone()))
}

/// RFC 9449 section 5: the thumbprint of the key of the request's DPoP proof, None without a
/// proof (refused for a client with `require_dpop`). A proof is checked like the proxy checks
/// one, without `ath` (no token yet), against this endpoint's URI as the client addressed it.
async fn dpop_key(ctx: &Ctx<'_>, parts: &Parts, client: &Client) -> Result<Option<String>, OAuthError> {
    let proof = match crate::proxy::authz::single_proof(parts) {
        Ok(p) => p,
        Err(ProofError::Missing) if !client.require_dpop => return Ok(None),
        Err(e) => return Err(OAuthError::InvalidDpopProof(e)),
    };
    let cfg = &ctx.snap.config.dpop;
    let trust = ctx.snap.config.server.trust_forwarded;
    let uri = crate::proxy::headers::client_uri(parts, ctx.conn.tls, trust)
        .ok_or(OAuthError::InvalidDpopProof(ProofError::WrongUri))?;
    let expect = Expect::new(cfg, parts.method.as_str(), &uri, None);
    let accepted = match check_request(proof, &expect, None, cfg, &ctx.snap.nonces, &ctx.gw.dpop_replay, ctx.now) {
        Ok(a) => a,
        Err(ProofError::UseNonce) => return Err(OAuthError::UseDpopNonce(ctx.snap.nonces.issue(ctx.now))),
        Err(e) => return Err(OAuthError::InvalidDpopProof(e)),
    };
    if let Some(check) = ctx.gw.store.remember_proof(&accepted.id, cfg.replay_window()) {
        // A shared store that cannot answer: this process's memory is all there is (as at the proxy).
        if let Ok(false) = check.await {
            return Err(OAuthError::InvalidDpopProof(ProofError::Replayed));
        }
    }
    Ok(Some(accepted.jkt))
}

/// Signs the access token (and an ID token when `openid` was granted to a user) and answers 200.
fn issue(
    ctx: &Ctx<'_>,
    client: &Client,
    sub: &str,
    scope: &str,
    refresh: Option<String>,
    id_token: bool,
    cnf: &Confirmation,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    let t = &ctx.snap.config.tokens;
    // The endpoint is served only when the gateway issues tokens (`is_oauth_path`).
    let key = &ctx.snap.own.as_ref().ok_or(OAuthError::Unavailable)?.active;
    let exp = ctx.now + t.access_ttl_secs;
    let mut claims = json!({
        "iss": t.issuer, "sub": sub, "aud": client.audience, "exp": exp, "iat": ctx.now,
        "jti": jwt::random_id(), "client_id": client.id, "scope": scope,
    });
    if let Some(bound) = cnf_claim(cnf) {
        claims["cnf"] = bound;
    }
    let access = jwt::sign(key, ACCESS_TOKEN_TYP, &claims).map_err(|_| OAuthError::Unavailable)?;
    // RFC 9449 5.1: a DPoP-bound token is announced as such; a certificate-bound one stays "Bearer".
    let token_type = if cnf.jkt.is_some() { "DPoP" } else { "Bearer" };
    let mut body =
        json!({ "access_token": access, "token_type": token_type, "expires_in": t.access_ttl_secs, "scope": scope });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    if id_token && scope.split(' ').any(|s| s == "openid") {
        let claims =
            json!({ "iss": t.issuer, "sub": sub, "aud": client.id, "exp": exp, "iat": ctx.now, "auth_time": ctx.now });
        body["id_token"] = jwt::sign(key, "JWT", &claims).map_err(|_| OAuthError::Unavailable)?.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// The `cnf` claim of an access token bound to `cnf`, None for a bearer token.
fn cnf_claim(cnf: &Confirmation) -> Option<serde_json::Value> {
    let mut out = serde_json::Map::new();
    if let Some(jkt) = &cnf.jkt {
        out.insert("jkt".into(), jkt.clone().into());
    }
    if let Some(x5t) = &cnf.x5t_s256 {
        out.insert("x5t#S256".into(), x5t.clone().into());
    }
    (!out.is_empty()).then_some(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing_and_granting() {
        assert!(parse_scope("a  b").is_err(), "empty token");
        assert!(parse_scope("a\"b").is_err());
        assert_eq!(parse_scope("b a b").unwrap().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        let allowed = |s: &str| s == "read" || s == "write";
        assert_eq!(grant_scope(Some("write read"), &allowed, std::iter::empty()).unwrap(), "read write");
        assert_eq!(
            grant_scope(Some("read admin"), &allowed, std::iter::empty()).unwrap_err(),
            OAuthError::InvalidScope
        );
        assert_eq!(grant_scope(None, &allowed, ["read", "admin"].into_iter()).unwrap(), "read");
    }
}
