//! Small JSON answers the gateway produces itself.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// A JSON body with the given status; never cached.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `{"error": .., "error_description": ..}` with the given status; never cached.
pub fn json_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": error, "error_description": description }))
}
