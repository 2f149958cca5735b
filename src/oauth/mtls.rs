//! RFC 8705 at the token endpoint: client authentication by certificate (section 2:
//! `tls_client_auth`, `self_signed_tls_client_auth`) and certificate-bound access tokens
//! (section 3). The certificate is the request's: its connection's, or the one a trusted load
//! balancer passed in `tls.client_cert_header` (see `proxy::cert_from_header`).

use rustls_pki_types::UnixTime;

use super::ctx::{Ctx, Lockout};
use super::errors::{ClientFailure, OAuthError};
use crate::oauth::directory::{Client, TlsAuth};

/// Authenticates a certificate client that named itself (`client_id` in the form): the right
/// certificate and no lockout, or `invalid_client` like every other failed method. Failures are
/// counted for lockout on the client, as wrong secrets are.
pub async fn authenticate<'s>(
    ctx: &Ctx<'s>,
    client: &'s Client,
    auth: &TlsAuth,
    lockout: Lockout,
) -> Result<&'s Client, OAuthError> {
    let verdict = check(ctx, auth);
    let allowed = ctx.count_attempt(format!("client:{}", client.id), verdict.is_ok(), lockout).await?;
    match verdict {
        Err(why) => Err(OAuthError::InvalidClient(why)),
        Ok(()) if !allowed => Err(OAuthError::InvalidClient(ClientFailure::CertificateLockedOut)),
        Ok(()) => Ok(client),
    }
}

/// Whether the request's certificate is the one `auth` wants.
fn check(ctx: &Ctx<'_>, auth: &TlsAuth) -> Result<(), ClientFailure> {
    let cert = ctx.cert.ok_or(ClientFailure::NoCertificate)?;
    match auth {
        TlsAuth::Pki(subject) => {
            // The chain is verified here whatever the handshake let through: with a
            // `self_signed_tls_client_auth` client configured, the handshake also accepts
            // self-signed certificates, and a header certificate had no handshake with us.
            let tls = ctx.snap.client_tls.as_ref().ok_or(ClientFailure::CertificateUntrusted)?;
            if !tls.chains(&cert.der, &cert.intermediates, UnixTime::since_unix_epoch(since_epoch(ctx.now))) {
                return Err(ClientFailure::CertificateUntrusted);
            }
            if !subject.matches(&cert.der) {
                return Err(ClientFailure::CertificateSubject);
            }
            Ok(())
        }
        TlsAuth::SelfSigned(registered) => {
            // A thumbprint is public: a plain comparison.
            if registered.contains(&cert.x5t_s256) {
                Ok(())
            } else {
                Err(ClientFailure::CertificateNotRegistered)
            }
        }
    }
}

fn since_epoch(now: u64) -> std::time::Duration {
    std::time::Duration::from_secs(now)
}

/// The `x5t#S256` the client's access tokens are bound to: the request's certificate when the
/// client binds (`tls_client_certificate_bound_access_tokens`), None when it does not. A binding
/// client without a certificate is refused: a bearer token is not what it registered for. A
/// refresh re-binds to the certificate of the refresh request.
pub fn bound_thumbprint(ctx: &Ctx<'_>, client: &Client) -> Result<Option<String>, OAuthError> {
    if !client.bind_certificate {
        return Ok(None);
    }
    match ctx.cert {
        Some(c) => Ok(Some(c.x5t_s256.clone())),
        None => Err(OAuthError::InvalidRequest(
            "the client's tokens are certificate-bound (tls_client_certificate_bound_access_tokens) and the request came without a client certificate",
        )),
    }
}
