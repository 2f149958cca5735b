//! Talking to upstreams: the pooled hyper-util client, and the built-in `echo` demo service.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;

use crate::config::ServerConfig;
use crate::tls::{client_config, TlsError};

/// The pooled HTTP/1.1 + h2 client, plain or TLS, that forwards client bodies as they stream in.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>;

/// Builds a pooled client; `ca` replaces the webpki roots for `https://` upstreams.
pub fn client(server: &ServerConfig, ca: Option<&Path>) -> Result<HttpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(server.upstream_connect_timeout_secs)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    // The timer is what makes pool_idle_timeout actually close idle connections.
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(server.upstream_idle_timeout_secs))
        .pool_max_idle_per_host(1024)
        .build(https))
}

/// The `echo` upstream: answers JSON with the method, path and headers it received, and the
/// number of body bytes (counted as they stream, never buffered).
pub async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|k| {
            // Credentials stay out of the echo: it is a demo that people paste into tickets.
            if k == http::header::AUTHORIZATION || k == http::header::COOKIE {
                return (k.as_str().to_owned(), json!("<redacted>"));
            }
            let vals: Vec<&str> = parts.headers.get_all(k).iter().map(|v| v.to_str().unwrap_or("<binary>")).collect();
            (k.as_str().to_owned(), json!(vals.join(", ")))
        })
        .collect();
    let body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
