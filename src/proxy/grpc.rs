//! gRPC callers get gRPC answers: a request the gateway refuses (token, scope, route, quota,
//! upstream failure) reaches a gRPC client as a status it understands, not as an HTTP error it
//! reports as "unexpected HTTP status" (gRPC over HTTP/2, "Responses": a trailers-only response).
//!
//! One place for every refusal: [`answer`] turns the HTTP answer that
//! [`super::failure::Failure::response`] made into the gRPC one, so a new refusal is mapped by
//! its HTTP status without a change here.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What `grpc-message` percent-encodes besides non-ASCII: controls and `%` itself (gRPC over
/// HTTP/2, "Responses": printable ASCII other than `%` goes as it is).
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// gRPC status codes the gateway answers with (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// Whether the request is a gRPC call: `content-type: application/grpc` or `application/grpc+...`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/grpc") && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status of a refusal the gateway answered with HTTP `status`. A 400 carrying an RFC
/// 6750 challenge is a malformed credential, so UNAUTHENTICATED like a 401. The rest follows
/// gRPC's HTTP-to-gRPC mapping, except where the gateway knows better: its own upstream time-out
/// is DEADLINE_EXCEEDED, a spent quota RESOURCE_EXHAUSTED, and no route UNIMPLEMENTED.
pub fn code_of(status: StatusCode, challenged: bool) -> Code {
    match status.as_u16() {
        401 => Code::Unauthenticated,
        400 if challenged => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 405 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        429 => Code::ResourceExhausted,
        502 | 503 => Code::Unavailable,
        400 => Code::Internal,
        _ => Code::Unknown,
    }
}

/// The gRPC form of the gateway's own HTTP answer `resp`: status 200, `content-type:
/// application/grpc`, no body, and `grpc-status` / `grpc-message` (the answer's
/// `error_description`, percent-encoded) in the one HEADERS frame that ends the stream. The
/// headers a client may act on stay: `www-authenticate` (RFC 6750), `retry-after`, `ratelimit*`.
pub async fn answer(resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = resp.into_parts();
    let challenged = parts.headers.contains_key(header::WWW_AUTHENTICATE);
    let code = code_of(parts.status, challenged);
    // A `Full` body is one frame, ready at once.
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error_description").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("refused").to_owned());
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(code as u16));
    let encoded = utf8_percent_encode(&message, MESSAGE).to_string();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert(GRPC_MESSAGE.clone(), v);
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn grpc_content_types() {
        for yes in ["application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc;x=1"] {
            assert!(is_grpc(&headers(yes)), "{yes}");
        }
        for no in ["application/grpc-web", "application/json", "application/grpcx", "text/plain"] {
            assert!(!is_grpc(&headers(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn refusals_map_to_grpc_codes() {
        assert_eq!(code_of(StatusCode::UNAUTHORIZED, true), Code::Unauthenticated);
        assert_eq!(code_of(StatusCode::BAD_REQUEST, true), Code::Unauthenticated);
        assert_eq!(code_of(StatusCode::BAD_REQUEST, false), Code::Internal);
        assert_eq!(code_of(StatusCode::FORBIDDEN, true), Code::PermissionDenied);
        assert_eq!(code_of(StatusCode::BAD_GATEWAY, false), Code::Unavailable);
        assert_eq!(code_of(StatusCode::GATEWAY_TIMEOUT, false), Code::DeadlineExceeded);
        assert_eq!(code_of(StatusCode::TOO_MANY_REQUESTS, false), Code::ResourceExhausted);
        assert_eq!(code_of(StatusCode::NOT_FOUND, false), Code::Unimplemented);
    }

    #[tokio::test]
    async fn answer_is_trailers_only_with_the_description() {
        let mut http = crate::respond::json_error(StatusCode::UNAUTHORIZED, "invalid_token", "expired 5% ago\nü");
        http.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"x\""));
        let resp = answer(http).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "16");
        assert_eq!(h["grpc-message"], "expired 5%25 ago%0A%C3%BC");
        assert_eq!(h["www-authenticate"], "Bearer realm=\"x\"");
        assert!(http_body::Body::is_end_stream(resp.body()));
    }
}
