//! Client authentication at the token, revocation and introspection endpoints:
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523), a certificate
//! client naming itself (RFC 8705, checked in `oauth::mtls`), or a public client naming itself.
//! Exactly one method per request; failures all look alike.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header;
use http::request::Parts;

use super::ctx::{Ctx, Lockout};
use super::errors::{Challenge, ClientFailure, OAuthError};
use super::form::Form;
use crate::auth::jwt;
use crate::oauth::directory::Client;

/// RFC 7523 section 2.2 assertion type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client presented itself.
enum Presented<'a> {
    Secret { id: String, secret: String },
    Assertion { id: Option<&'a str>, jwt: &'a str },
    Public { id: &'a str },
}

/// Decodes one half of a Basic credential: form-urlencoded per RFC 6749 section 2.3.1.
fn form_decode(s: &str) -> Option<String> {
    // Malformed escapes ("%zz", a trailing "%") are refused, not passed through.
    let b = s.as_bytes();
    if b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'%' && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()))
    {
        return None;
    }
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().ok().map(|c| c.into_owned())
}

fn basic_credentials(value: &str) -> Result<(String, String), OAuthError> {
    let bad = OAuthError::InvalidClient(ClientFailure::MalformedBasic);
    let decoded = STANDARD.decode(value.trim()).map_err(|_| bad.clone())?;
    let text = String::from_utf8(decoded).map_err(|_| bad.clone())?;
    let (id, secret) = text.split_once(':').ok_or(bad.clone())?;
    let (id, secret) = (form_decode(id).ok_or(bad.clone())?, form_decode(secret).ok_or(bad.clone())?);
    if id.is_empty() {
        return Err(bad);
    }
    Ok((id, secret))
}

fn presented<'a>(parts: &Parts, form: &'a Form) -> Result<Presented<'a>, OAuthError> {
    let mut auths = parts.headers.get_all(header::AUTHORIZATION).iter();
    let auth = auths.next();
    if auths.next().is_some() {
        return Err(OAuthError::InvalidRequest("more than one Authorization header"));
    }
    let basic = auth
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_once(' ').unwrap_or((v, "")))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials);
    let post_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let methods =
        basic.is_some() as u8 + post_secret.is_some() as u8 + (assertion.is_some() || assertion_type.is_some()) as u8;
    if methods > 1 {
        return Err(OAuthError::InvalidRequest("more than one client authentication method"));
    }
    if let Some(b) = basic {
        let (id, secret) = basic_credentials(b)?;
        if form.get("client_id").is_some_and(|c| c != id) {
            return Err(OAuthError::InvalidRequest("client_id does not match the Basic credentials"));
        }
        return Ok(Presented::Secret { id, secret });
    }
    if let Some(secret) = post_secret {
        let id = form.get("client_id").ok_or(OAuthError::InvalidRequest("client_id is required"))?;
        return Ok(Presented::Secret { id: id.to_owned(), secret: secret.to_owned() });
    }
    if assertion.is_some() || assertion_type.is_some() {
        if assertion_type != Some(JWT_BEARER) {
            return Err(OAuthError::InvalidRequest("unsupported client_assertion_type"));
        }
        let jwt = assertion.ok_or(OAuthError::InvalidRequest("client_assertion is required"))?;
        return Ok(Presented::Assertion { id: form.get("client_id"), jwt });
    }
    match form.get("client_id") {
        Some(id) => Ok(Presented::Public { id }),
        None => Err(OAuthError::InvalidClient(ClientFailure::NoCredentials)),
    }
}

/// How `invalid_client` answers this request: with a Basic challenge when it used Basic or no
/// client authentication at all (no secret or assertion in the body, no client certificate).
/// Read from the request alone, so the answer cannot tell which clients exist or how they
/// authenticate.
pub fn challenge(parts: &Parts, form: &Form, cert_presented: bool) -> Challenge {
    let basic =
        parts.headers.get_all(header::AUTHORIZATION).iter().any(|v| {
            v.as_bytes().split(|&b| b == b' ').next().is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic"))
        });
    let in_body = ["client_secret", "client_assertion", "client_assertion_type"].iter().any(|k| form.get(k).is_some());
    if basic || !(in_body || cert_presented) {
        Challenge::Basic
    } else {
        Challenge::None
    }
}

/// The client id this request claims (Basic, `client_id`, or the assertion's unverified `iss`),
/// for the log line of a refusal; None when it names none or cannot be read.
pub fn claimed_client_id(parts: &Parts, form: &Form) -> Option<String> {
    match presented(parts, form).ok()? {
        Presented::Secret { id, .. } => Some(id),
        Presented::Assertion { id, jwt } => id.map(str::to_owned).or_else(|| jwt::unverified_issuer(jwt)),
        Presented::Public { id } => Some(id.to_owned()),
    }
}

/// Authenticates the client of this request, or answers `invalid_client` / `invalid_request`.
/// `lockout` says whether a store failure while counting secret failures answers 503.
pub async fn authenticate<'s>(
    ctx: &Ctx<'s>,
    parts: &Parts,
    form: &Form,
    lockout: Lockout,
) -> Result<&'s Client, OAuthError> {
    match presented(parts, form)? {
        Presented::Secret { id, secret } => {
            let client = ctx.snap.directory.clients.get(&id);
            if client.is_some_and(|c| c.tls_auth.is_some()) {
                // Same cost as a wrong secret: one verify against the dummy hash.
                ctx.verify_secret(None, secret, None, lockout).await?;
                return Err(OAuthError::InvalidClient(ClientFailure::CertificateClientOtherMethod));
            }
            let ok = check_secret(ctx, client, &id, secret, lockout).await?;
            match client {
                Some(c) if ok => Ok(c),
                None => Err(OAuthError::InvalidClient(ClientFailure::UnknownClient)),
                Some(c) if c.secret_hash.is_none() => Err(OAuthError::InvalidClient(ClientFailure::NoSecret)),
                Some(_) => Err(OAuthError::InvalidClient(ClientFailure::WrongSecret)),
            }
        }
        Presented::Assertion { id, jwt } => check_assertion(ctx, id, jwt).await,
        Presented::Public { id } => match ctx.snap.directory.clients.get(id) {
            Some(c) if c.public => Ok(c),
            Some(c) => match &c.tls_auth {
                Some(auth) => super::mtls::authenticate(ctx, c, auth, lockout).await,
                None => Err(OAuthError::InvalidClient(ClientFailure::NotPublic)),
            },
            None => Err(OAuthError::InvalidClient(ClientFailure::UnknownClient)),
        },
    }
}

/// Full argon2 check unless this exact secret was verified recently; unknown clients and locked
/// ones pay the same cost and get the same answer as a wrong secret.
async fn check_secret(
    ctx: &Ctx<'_>,
    client: Option<&Client>,
    id: &str,
    secret: String,
    lockout: Lockout,
) -> Result<bool, OAuthError> {
    let phc = client.and_then(|c| c.secret_hash.clone());
    if let Some(phc) = &phc {
        if ctx.snap.directory.verified.recently_verified(id, &secret, phc) {
            return Ok(true);
        }
    }
    let lock_key = client.map(|_| format!("client:{id}"));
    let ok = ctx.verify_secret(phc.clone(), secret.clone(), lock_key, lockout).await?;
    if ok {
        if let Some(phc) = &phc {
            ctx.snap.directory.verified.remember(id, &secret, phc);
        }
    }
    Ok(ok)
}

async fn check_assertion<'s>(ctx: &Ctx<'s>, id: Option<&str>, token: &str) -> Result<&'s Client, OAuthError> {
    let bad = OAuthError::InvalidClient;
    let iss = jwt::unverified_issuer(token).ok_or(bad(ClientFailure::AssertionIssuer))?;
    if id.is_some_and(|i| i != iss) {
        return Err(bad(ClientFailure::AssertionIssuer));
    }
    let client = ctx.snap.directory.clients.get(&iss).ok_or(bad(ClientFailure::UnknownClient))?;
    let keys = client.assertion_keys.as_ref().ok_or(bad(ClientFailure::NoAssertionKeys))?;
    let issuer = ctx.snap.config.tokens.issuer.as_str();
    let endpoint = super::paths::endpoint_url(issuer, super::paths::TOKEN_PATH);
    let leeway = ctx.snap.config.tokens.leeway_secs;
    let a = jwt::verify_assertion(token, keys, &client.id, &[endpoint.as_str(), issuer], ctx.now, leeway)
        .map_err(|e| bad(ClientFailure::AssertionRejected(e.reason())))?;
    let (store, cid, now) = (ctx.gw.store.clone(), client.id.clone(), ctx.now);
    let first = super::ctx::blocking(move || store.use_jti_once(&cid, &a.jti, a.exp, now)).await?;
    if !first {
        return Err(bad(ClientFailure::AssertionReplayed));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded_and_strict() {
        let enc = |s: &str| STANDARD.encode(s);
        assert_eq!(basic_credentials(&enc("app:s3cret")).unwrap(), ("app".into(), "s3cret".into()));
        assert_eq!(basic_credentials(&enc("a%3Ab:x%2By+z")).unwrap(), ("a:b".into(), "x+y z".into()));
        assert_eq!(basic_credentials(&enc("app:with:colon")).unwrap(), ("app".into(), "with:colon".into()));
        for bad in
            ["!!notbase64", &enc("nocolon"), &enc(":secret"), &enc("a%zz:b"), &STANDARD.encode([0xff, b':', b'x'])]
        {
            let malformed = OAuthError::InvalidClient(ClientFailure::MalformedBasic);
            assert_eq!(basic_credentials(bad).unwrap_err(), malformed, "{bad}");
        }
    }
}
