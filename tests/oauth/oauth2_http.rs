//! The `oauth2` crate as an independent OAuth2 client: its async HTTP client trait implemented
//! over the shared hyper/tokio-rustls connection, and the client/response types the tests use.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, RequestTokenError, StandardErrorResponse,
    StandardRevocableToken, StandardTokenResponse,
};
use rustls_pki_types::CertificateDer;

use crate::common::*;

/// Extra token fields: the ID token of a password grant with `openid`.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct IdFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdFields {}

pub type TokenResp = StandardTokenResponse<IdFields, BasicTokenType>;

pub(crate) type OBase = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
>;

pub type OClient = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

pub type OError = RequestTokenError<std::io::Error, StandardErrorResponse<BasicErrorResponseType>>;

/// The RFC 6749 error code an `oauth2` crate request failed with (panics on transport errors).
pub fn server_error(e: &OError) -> BasicErrorResponseType {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().clone(),
        other => panic!("expected an OAuth2 error response, got {other:?}"),
    }
}

/// The `oauth2` crate's async HTTP client, implemented over the shared hyper/tokio-rustls `Conn`.
pub struct Http {
    pub(crate) addr: SocketAddr,
    pub(crate) cert: CertificateDer<'static>,
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, std::io::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let pq = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
            let mut r = http::Request::builder()
                .method(parts.method)
                .uri(pq)
                .body(full(body))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            *r.headers_mut() = parts.headers;
            let mut conn = Conn::tls(self.addr, std::slice::from_ref(&self.cert), false).await;
            let resp = conn.send(r).await;
            let mut out = http::Response::builder()
                .status(resp.status)
                .body(resp.body.to_vec())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            *out.headers_mut() = resp.headers;
            Ok(out)
        })
    }
}
