//! RFC 6749 section 5.2 error answers, in one place so every endpoint answers alike.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::dpop::ProofError;

/// An error the token, revocation or introspection endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// Malformed request: missing, repeated or unsupported parameters.
    InvalidRequest(&'static str),
    /// Client authentication failed (why is logged, never told: every failure answers alike).
    InvalidClient(ClientFailure),
    /// The grant (password, refresh token) is invalid, expired, revoked or another client's.
    InvalidGrant(&'static str),
    /// The client may not use this grant (or endpoint).
    UnauthorizedClient(&'static str),
    /// The grant type is unknown.
    UnsupportedGrantType,
    /// The requested scope is unknown or exceeds what is allowed.
    InvalidScope,
    /// The body is larger than allowed (413).
    TooLarge,
    /// Too many requests from this address (429 with Retry-After).
    TooManyRequests {
        /// Seconds until the window resets.
        retry_after: u64,
    },
    /// The state store failed; tokens cannot be issued right now (503).
    Unavailable,
    /// The DPoP proof is missing (for a client that requires one), or wrong (RFC 9449 5).
    InvalidDpopProof(ProofError),
    /// Proofs must carry a server nonce: here is one (RFC 9449 8; the `DPoP-Nonce` header).
    UseDpopNonce(String),
}

/// How a failed client authentication is answered, from how the request tried it (never from
/// why it failed, so the answer tells nothing about the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// The request used Basic, or no client authentication at all: 401 with `Basic`.
    Basic,
    /// Credentials in the body, an assertion or a certificate: 400, no challenge.
    None,
}

/// Why client authentication failed: logged for the operator, never told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// No credentials and no `client_id`.
    NoCredentials,
    /// A `Basic` header that is not base64 of form-encoded `id:secret`.
    MalformedBasic,
    /// No such client.
    UnknownClient,
    /// The client has no secret (it authenticates with an assertion, or is public).
    NoSecret,
    /// Wrong secret, or the client is locked out (the two cannot be told apart by design).
    WrongSecret,
    /// A confidential client named itself without credentials.
    NotPublic,
    /// The assertion's `iss` is unreadable, or differs from `client_id`.
    AssertionIssuer,
    /// The client has no `jwks` or `public_key`.
    NoAssertionKeys,
    /// The assertion failed verification; the label says which check.
    AssertionRejected(&'static str),
    /// The assertion's `jti` was used before.
    AssertionReplayed,
    /// A certificate client (RFC 8705) sent no client certificate.
    NoCertificate,
    /// A `tls_client_auth` client's certificate does not chain to `tls.client_ca`.
    CertificateUntrusted,
    /// A `tls_client_auth` client's certificate shows another subject.
    CertificateSubject,
    /// A `self_signed_tls_client_auth` client's certificate is not one registered for it.
    CertificateNotRegistered,
    /// The right certificate, but the client is locked out by earlier failures.
    CertificateLockedOut,
    /// A certificate client named itself with a secret or an assertion instead.
    CertificateClientOtherMethod,
    /// A trusted load balancer's client-certificate header could not be read.
    CertificateHeader(crate::tls::client_cert::CertHeaderError),
}

impl ClientFailure {
    /// The log text.
    pub fn reason(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ClientFailure::NoCredentials => "no client credentials",
            ClientFailure::MalformedBasic => "malformed Basic credentials",
            ClientFailure::UnknownClient => "unknown client",
            ClientFailure::NoSecret => "the client has no secret",
            ClientFailure::WrongSecret => "wrong secret or client locked out",
            ClientFailure::NotPublic => "a confidential client sent no credentials",
            ClientFailure::AssertionIssuer => "client assertion iss unreadable or not the client_id",
            ClientFailure::NoAssertionKeys => "the client has no assertion keys",
            ClientFailure::AssertionRejected(why) => return Cow::Owned(format!("client assertion rejected: {why}")),
            ClientFailure::AssertionReplayed => "client assertion jti already used",
            ClientFailure::NoCertificate => "no client certificate",
            ClientFailure::CertificateUntrusted => "client certificate does not chain to tls.client_ca",
            ClientFailure::CertificateSubject => "client certificate subject does not match",
            ClientFailure::CertificateNotRegistered => "client certificate not registered for the client",
            ClientFailure::CertificateLockedOut => "client locked out",
            ClientFailure::CertificateClientOtherMethod => "certificate client sent a secret or an assertion",
            ClientFailure::CertificateHeader(e) => return Cow::Owned(e.to_string()),
        })
    }
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) | OAuthError::TooLarge | OAuthError::TooManyRequests { .. } => {
                "invalid_request"
            }
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::Unavailable => "temporarily_unavailable",
            OAuthError::InvalidDpopProof(_) => "invalid_dpop_proof",
            OAuthError::UseDpopNonce(_) => "use_dpop_nonce",
        }
    }

    /// Why, for the log line of a refused request: never a secret, password or token.
    pub fn reason(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            OAuthError::InvalidRequest(d) | OAuthError::InvalidGrant(d) | OAuthError::UnauthorizedClient(d) => d,
            OAuthError::InvalidClient(f) => return f.reason(),
            OAuthError::UnsupportedGrantType => "unknown grant_type",
            OAuthError::InvalidScope => "scope malformed or beyond what the client (and user) may have",
            OAuthError::TooLarge => "body too large",
            OAuthError::TooManyRequests { .. } => "rate limited",
            OAuthError::Unavailable => "state store unavailable",
            OAuthError::InvalidDpopProof(e) => return Cow::Owned(e.to_string()),
            OAuthError::UseDpopNonce(_) => "a DPoP nonce is required",
        })
    }

    /// The answer: status, JSON body, `Cache-Control: no-store`, `Pragma: no-cache`. A failed
    /// client authentication answers 400 without a challenge: see [`OAuthError::response_to`].
    pub fn response(&self) -> Response<Full<Bytes>> {
        self.response_to(Challenge::None)
    }

    /// [`OAuthError::response`], with `invalid_client` answered as `challenge` says (RFC 6749
    /// 5.2): 401 with a Basic challenge to a client that used Basic or no authentication at
    /// all, 400 without one to a client that authenticated in the body, by assertion or by
    /// certificate. RFC 9110 15.5.2 puts a challenge on every 401, and no HTTP scheme names
    /// those methods; a strict client (oauth4webapi) reads a 401's challenge before its body,
    /// so a Basic challenge it never used would hide the `invalid_client` code from it.
    pub fn response_to(&self, challenge: Challenge) -> Response<Full<Bytes>> {
        let proof_error;
        let (status, code, desc) = match self {
            OAuthError::InvalidDpopProof(e) => {
                proof_error = e.to_string();
                (StatusCode::BAD_REQUEST, "invalid_dpop_proof", proof_error.as_str())
            }
            OAuthError::UseDpopNonce(_) => {
                (StatusCode::BAD_REQUEST, "use_dpop_nonce", "sign the DPoP proof with the nonce in DPoP-Nonce")
            }
            OAuthError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", *d),
            OAuthError::InvalidClient(_) => {
                let status = match challenge {
                    Challenge::Basic => StatusCode::UNAUTHORIZED,
                    Challenge::None => StatusCode::BAD_REQUEST,
                };
                (status, "invalid_client", "client authentication failed")
            }
            OAuthError::InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", *d),
            OAuthError::UnauthorizedClient(d) => (StatusCode::BAD_REQUEST, "unauthorized_client", *d),
            OAuthError::UnsupportedGrantType => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type", "the grant type is not supported")
            }
            OAuthError::InvalidScope => {
                (StatusCode::BAD_REQUEST, "invalid_scope", "the requested scope is not allowed")
            }
            OAuthError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is too large"),
            OAuthError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "invalid_request", "too many requests; retry later")
            }
            OAuthError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "token state is unavailable; try again")
            }
        };
        let mut resp = json(status, &serde_json::json!({ "error": code, "error_description": desc }));
        match self {
            OAuthError::InvalidClient(_) if challenge == Challenge::Basic => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tokengate\""));
            }
            OAuthError::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            OAuthError::UseDpopNonce(nonce) => {
                if let Ok(v) = HeaderValue::from_str(nonce) {
                    resp.headers_mut().insert(header::HeaderName::from_static("dpop-nonce"), v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A JSON answer that no cache may keep (RFC 6749 5.1).
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = crate::respond::json(status, body);
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
