//! Fetching a provider's documents over HTTPS: its JWKS and its discovery document.
//!
//! A fetched key set decides whose tokens pass, so the client is strict: `https://` only (plain
//! `http://` to loopback addresses only), certificates always verified, redirects followed only
//! within the same host, bodies over 1 MiB refused, and connect and whole-answer timeouts.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::fetchable_url;

/// Largest JWKS or discovery document accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Redirects followed (same host only) before giving up.
const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed; the text goes to the log, `/issuers` and nothing else.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("answer larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("redirect refused: {0}")]
    Redirect(String),
    #[error("{0}")]
    Document(String),
}

/// A successful GET: the body and what `Cache-Control` said about it.
pub struct Fetched {
    /// The whole body (at most [`MAX_BODY`]).
    pub body: Bytes,
    /// `max-age` of the answer's `Cache-Control`, if any.
    pub max_age: Option<u64>,
}

/// An HTTPS client for one provider (its own trust roots), reused across fetches.
pub struct Fetcher {
    /// Pooled client; keep-alive saves a handshake when refreshes come close together.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Bound on connecting, and separately on the whole exchange including the body.
    timeout: Duration,
}

impl Fetcher {
    /// A client trusting the CAs in `ca` (PEM), or the webpki roots.
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<Fetcher, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(ca, "[[issuers]] ca")?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Fetcher { client, timeout })
    }

    /// GETs `uri`, following same-host redirects, within the timeout.
    pub async fn get(&self, uri: &Uri) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.timeout, self.get_following(uri.clone()))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn get_following(&self, mut uri: Uri) -> Result<Fetched, FetchError> {
        for _ in 0..=MAX_REDIRECTS {
            let req = http::Request::get(uri.clone())
                .header(header::ACCEPT, "application/json, application/jwk-set+json")
                .header(header::USER_AGENT, concat!("tokengate/", env!("CARGO_PKG_VERSION")))
                .body(Empty::new())
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let resp = self.client.request(req).await.map_err(|e| FetchError::Transport(transport_reason(&e)))?;
            let status = resp.status();
            if status.is_redirection() {
                uri = redirect_target(&uri, resp.headers().get(header::LOCATION))?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(FetchError::Status(status.as_u16()));
            }
            let declared =
                resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_BODY as u64) {
                return Err(FetchError::TooLarge);
            }
            let max_age = super::cache_control::max_age(
                resp.headers().get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()),
            );
            let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    FetchError::TooLarge
                } else {
                    FetchError::Transport(format!("reading the answer: {e}"))
                }
            })?;
            return Ok(Fetched { body: body.to_bytes(), max_age });
        }
        Err(FetchError::Redirect(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// The `jwks_uri` of `issuer`'s discovery document: OpenID Connect's
    /// `{issuer}/.well-known/openid-configuration`, then RFC 8414's
    /// `{issuer}/.well-known/oauth-authorization-server`. The document's `issuer` must equal
    /// `issuer` exactly (OpenID Connect Discovery 4.3), else a provider could speak for another.
    pub async fn discover(&self, issuer: &str) -> Result<Uri, FetchError> {
        let base = issuer.trim_end_matches('/');
        let mut last = FetchError::Document("no discovery document".into());
        for doc in ["openid-configuration", "oauth-authorization-server"] {
            let url = format!("{base}/.well-known/{doc}");
            let uri = fetchable_url(&url).map_err(|e| FetchError::Document(format!("{url}: {e}")))?;
            match self.get(&uri).await {
                Ok(f) => return jwks_uri_of(&f.body, issuer),
                // Not found: the other document may exist. Anything else is this provider's answer.
                Err(FetchError::Status(404)) => last = FetchError::Document(format!("{url}: HTTP status 404")),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// The `jwks_uri` of a discovery document, checked: its `issuer` equals `issuer` exactly and the
/// URL is one tokengate fetches from.
pub fn jwks_uri_of(body: &[u8], issuer: &str) -> Result<Uri, FetchError> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| FetchError::Document(format!("discovery document is not JSON: {e}")))?;
    match doc.get("issuer").and_then(|v| v.as_str()) {
        Some(i) if i == issuer => {}
        Some(i) => {
            return Err(FetchError::Document(format!("discovery document names issuer {i:?}, not {issuer:?}")));
        }
        None => return Err(FetchError::Document("discovery document has no \"issuer\"".into())),
    }
    let jwks = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| FetchError::Document("discovery document has no \"jwks_uri\"".into()))?;
    fetchable_url(jwks).map_err(|e| FetchError::Document(format!("discovery jwks_uri {jwks:?}: {e}")))
}

/// Where a redirect from `from` leads, if it stays on the same host and scheme rules.
fn redirect_target(from: &Uri, location: Option<&http::HeaderValue>) -> Result<Uri, FetchError> {
    let loc = location.and_then(|v| v.to_str().ok()).ok_or_else(|| FetchError::Redirect("no Location".into()))?;
    let scheme = from.scheme_str().unwrap_or("https");
    let target = if loc.starts_with("//") {
        format!("{scheme}:{loc}")
    } else if loc.starts_with('/') {
        let authority = from.authority().map(|a| a.as_str()).unwrap_or_default();
        format!("{scheme}://{authority}{loc}")
    } else {
        loc.to_string()
    };
    let to = fetchable_url(&target).map_err(|e| FetchError::Redirect(format!("{target}: {e}")))?;
    let same_host = to.host().zip(from.host()).is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
    if !same_host {
        return Err(FetchError::Redirect(format!("to another host ({target})")));
    }
    if from.scheme_str() == Some("https") && to.scheme_str() != Some("https") {
        return Err(FetchError::Redirect(format!("from https to plain http ({target})")));
    }
    Ok(to)
}

/// A client error in words: "connection refused", "the certificate of idp.example expired on
/// ...; [[issuers]] ca pins ...".
fn transport_reason(e: &hyper_util::client::legacy::Error) -> String {
    crate::tls::verify::describe(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(from: &str, to: &str) -> Result<Uri, FetchError> {
        redirect_target(&from.parse().unwrap(), Some(&http::HeaderValue::from_str(to).unwrap()))
    }

    #[test]
    fn redirects_stay_on_the_host() {
        assert_eq!(redirect("https://idp/a", "/b?x=1").unwrap(), "https://idp/b?x=1");
        assert_eq!(redirect("https://idp:8443/a", "/b").unwrap(), "https://idp:8443/b");
        assert_eq!(redirect("https://idp/a", "https://IDP/c").unwrap(), "https://IDP/c");
        for (to, why) in [
            ("https://evil/c", "another host"),
            ("//evil/c", "another host"),
            ("http://idp/c", "loopback"),
            ("ftp://idp/c", "https://"),
        ] {
            let e = redirect("https://idp/a", to).unwrap_err().to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
        assert!(redirect("http://127.0.0.1:9/a", "https://127.0.0.1:9/b").is_ok(), "upgrading is fine");
        assert!(redirect_target(&"https://idp/a".parse().unwrap(), None).is_err());
    }

    #[test]
    fn discovery_document_must_name_the_same_issuer() {
        let doc = |iss: &str, jwks: &str| format!(r#"{{"issuer":"{iss}","jwks_uri":"{jwks}"}}"#);
        let ok = jwks_uri_of(doc("https://idp/r", "https://idp/r/certs").as_bytes(), "https://idp/r").unwrap();
        assert_eq!(ok, "https://idp/r/certs");
        for (body, why) in [
            (doc("https://idp/r/", "https://idp/c"), "names issuer"),
            (doc("https://other", "https://idp/c"), "names issuer"),
            (doc("https://idp/r", "http://idp/c"), "loopback"),
            (r#"{"jwks_uri":"https://idp/c"}"#.into(), "no \"issuer\""),
            (r#"{"issuer":"https://idp/r"}"#.into(), "no \"jwks_uri\""),
            ("<html>".into(), "not JSON"),
        ] {
            let e = jwks_uri_of(body.as_bytes(), "https://idp/r").unwrap_err().to_string();
            assert!(e.contains(why), "{body}: {e}");
        }
    }
}
