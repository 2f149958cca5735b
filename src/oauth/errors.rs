//! RFC 6749 section 5.2 error answers, in one place so every endpoint answers alike.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// An error the token, revocation or introspection endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// Malformed request: missing, repeated or unsupported parameters.
    InvalidRequest(&'static str),
    /// Client authentication failed; `basic` adds `WWW-Authenticate: Basic`.
    InvalidClient {
        /// Whether the client tried HTTP Basic.
        basic: bool,
    },
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
}

impl OAuthError {
    /// The answer: status, JSON body, `Cache-Control: no-store`, `Pragma: no-cache`.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let (status, code, desc) = match self {
            OAuthError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", *d),
            OAuthError::InvalidClient { .. } => {
                (StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
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
            OAuthError::InvalidClient { basic: true } => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tokengate\""));
            }
            OAuthError::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
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
