//! Revocation (RFC 7009) and introspection (RFC 7662). Both authenticate the client; neither
//! tells a caller anything about tokens that are not its business.

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::client_auth::authenticate;
use super::ctx::{blocking, Ctx, Lockout};
use super::errors::{json as json_response, OAuthError};
use super::form::Form;
use super::grants::token_hash;

/// A JWT access token of ours, verified; None for anything else.
fn own_access_token(ctx: &Ctx<'_>, token: &str) -> Option<(crate::auth::jwt::Verified, serde_json::Value)> {
    // Any audience: introspection and revocation concern the token, not a route.
    let v = ctx.snap.trust.validate_any_audience(token, &ctx.snap.config.tokens.issuer, ctx.now).ok()?;
    let claims = serde_json::from_slice(&v.payload).ok()?;
    Some((v, claims))
}

/// `POST /oauth2/revoke`: a refresh token revokes its family; an access token's `jti` is denied
/// until it expires. Unknown or foreign tokens still answer 200 (RFC 7009 section 2.2).
pub async fn revoke(ctx: &Ctx<'_>, parts: &Parts, form: &Form) -> Result<Response<Full<Bytes>>, OAuthError> {
    let client = authenticate(ctx, parts, form, Lockout::Required).await?;
    let token = form.get("token").ok_or(OAuthError::InvalidRequest("token is required"))?;
    let hint = form.get("token_type_hint");
    let store = ctx.gw.store.clone();
    if hint != Some("access_token") {
        let (hash, cid, s) = (token_hash(token), client.id.clone(), store.clone());
        if blocking(move || s.revoke_family(&hash, Some(&cid))).await? {
            return Ok(ok());
        }
    }
    if let Some((v, _)) = own_access_token(ctx, token) {
        if let (Some(jti), true) = (v.jti.clone(), v.client_id.as_deref() == Some(client.id.as_str())) {
            let exp = v.exp;
            blocking(move || store.deny_jti(&jti, exp)).await?;
        }
    }
    Ok(ok())
}

fn ok() -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!({}))
}

/// `POST /oauth2/introspect`, for clients with `introspect = true`.
pub async fn introspect(ctx: &Ctx<'_>, parts: &Parts, form: &Form) -> Result<Response<Full<Bytes>>, OAuthError> {
    let client = authenticate(ctx, parts, form, Lockout::Required).await?;
    if !client.introspect {
        return Err(OAuthError::UnauthorizedClient("the client may not introspect"));
    }
    let token = form.get("token").ok_or(OAuthError::InvalidRequest("token is required"))?;
    let inactive = || json_response(StatusCode::OK, &json!({ "active": false }));
    if let Some((v, mut claims)) = own_access_token(ctx, token) {
        if v.jti.as_deref().is_some_and(|j| ctx.gw.store.is_jti_denied(j, ctx.now)) {
            return Ok(inactive());
        }
        claims["active"] = true.into();
        claims["token_type"] = "Bearer".into();
        return Ok(json_response(StatusCode::OK, &claims));
    }
    let (store, hash, now) = (ctx.gw.store.clone(), token_hash(token), ctx.now);
    Ok(match blocking(move || store.current_family(&hash, now)).await? {
        Some(f) => json_response(
            StatusCode::OK,
            &json!({
                "active": true, "token_type": "refresh_token", "client_id": f.client_id, "sub": f.sub,
                "scope": f.scope, "exp": f.expires.min(f.last_used + f.idle_secs), "iat": f.created,
                "iss": ctx.snap.config.tokens.issuer,
            }),
        ),
        None => inactive(),
    })
}
