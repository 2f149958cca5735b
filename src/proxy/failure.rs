//! Every way the proxy path can fail, and the one place each becomes its answer: status, body
//! (RFC 6750 challenge or small JSON), and metric label. Handlers return a [`Failure`]; only
//! [`Failure::response`] decides what the client sees, so two paths cannot answer the same
//! failure differently.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::upstream::pool::UpstreamError;
use super::upstream::BodyError;
use crate::auth::bearer::{challenge, Rejection};
use crate::auth::dpop::ProofError;
use crate::metrics::Limit;
use crate::respond::json_error;
use crate::snapshot::Snapshot;
use crate::tls::client_cert::CertHeaderError;

/// Why the proxy answered instead of the upstream.
#[derive(Debug)]
pub enum Failure {
    /// `Host` missing, repeated or disagreeing with the target: 400.
    BadHost(&'static str),
    /// A path the gateway refuses to interpret (encoded separators, dot segments past the root...): 400.
    BadPath(String),
    /// No route matches the path: 404.
    NoRoute,
    /// Routes match the host and path, none the method: 405 with `Allow` (these methods).
    MethodNotAllowed(String),
    /// The token does not let the request pass: RFC 6750 (401, 400 or 403).
    Rejected(Rejection),
    /// The rewritten target is not a valid URI: 400.
    Unforwardable,
    /// The upstream did not answer within the route's timeout: 504.
    UpstreamTimeout,
    /// The upstream could not be reached or broke the connection: 502.
    UpstreamUnreachable,
    /// The upstream's response head is over a limit (ours, or the h2 client's advertised one): 502.
    UpstreamHeadTooLarge(Limit),
    /// The client stalled mid-upload before the upstream answered: 408 (counted where it fired).
    RequestBodyTimeout,
    /// A trusted load balancer's client-certificate header could not be read: 400.
    BadClientCert(CertHeaderError),
    /// The route's per-caller quota is spent: 429 with `Retry-After` and `RateLimit` headers.
    RateLimited {
        /// The caller's rate on this route.
        rate: crate::quota::Rate,
        /// What the quota said.
        decision: crate::quota::Decision,
        /// What the route counts per, for the metric.
        key: &'static str,
    },
}

/// The `tokengate_token_rejections_total` label (and the authorization span's reason) of a rejection.
pub fn rejection_label(r: &Rejection) -> &'static str {
    match r {
        Rejection::NoToken | Rejection::NoDpopToken => "missing",
        Rejection::InvalidRequest(_) => "invalid_request",
        Rejection::InvalidToken(e) | Rejection::DpopToken(e) => e.reason(),
        Rejection::InsufficientScope => "insufficient_scope",
        Rejection::ClaimRule(_) => "claim_rule",
        Rejection::Proof(e) => e.reason(),
        Rejection::DpopRequired => "dpop_required",
    }
}

/// Every token-rejection label [`Failure::rejection_reason`] can produce.
pub fn rejection_reasons() -> impl Iterator<Item = &'static str> {
    ["missing", "invalid_request", "insufficient_scope", "claim_rule", "dpop_required"]
        .into_iter()
        .chain(crate::auth::jwt::TokenError::ALL.iter().map(|e| e.reason()))
        .chain(ProofError::ALL.iter().map(|e| e.reason()))
}

impl Failure {
    /// A token refused only because no key of its issuer has its `kid` (a refetch may help).
    pub fn is_unknown_kid(&self) -> bool {
        matches!(self, Failure::Rejected(Rejection::InvalidToken(crate::auth::jwt::TokenError::UnknownKey)))
    }

    /// The label of `tokengate_token_rejections_total` when this is a token rejection.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        let Failure::Rejected(r) = self else { return None };
        Some(rejection_label(r))
    }

    /// What went wrong with the upstream, for the upstream call's span ("" for other failures).
    pub fn upstream_error_kind(&self) -> &'static str {
        match self {
            Failure::UpstreamTimeout => "timeout",
            Failure::UpstreamUnreachable => "unreachable",
            Failure::UpstreamHeadTooLarge(_) => "response head too large",
            Failure::RequestBodyTimeout => "request body timeout",
            _ => "",
        }
    }

    /// The key kind of a route quota that refused the request.
    pub fn rate_limited_key(&self) -> Option<&'static str> {
        match self {
            Failure::RateLimited { key, .. } => Some(key),
            _ => None,
        }
    }

    /// What a failed exchange with the upstream is answered with.
    pub fn upstream(e: &UpstreamError) -> Failure {
        match e {
            UpstreamError::Http(h) if h.is_parse_too_large() => {
                Failure::UpstreamHeadTooLarge(Limit::UpstreamHeaderBytes)
            }
            UpstreamError::Http(h) if matches!(BodyError::find(h), Some(BodyError::ClientIdle(_))) => {
                Failure::RequestBodyTimeout
            }
            _ => Failure::UpstreamUnreachable,
        }
    }

    /// The `limit` label of `tokengate_limit_hits_total` when a limit is what failed here.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Failure::UpstreamHeadTooLarge(limit) => Some(*limit),
            _ => None,
        }
    }

    /// The answer. `scope_text` is the matched route's scopes, for a 403's challenge; `snap`
    /// gives DPoP challenges their `algs` and nonce. Never echoes the token.
    pub fn response(&self, scope_text: &str, snap: &Snapshot) -> Response<Full<Bytes>> {
        match self {
            Failure::BadHost(why) => json_error(StatusCode::BAD_REQUEST, "invalid_request", why),
            Failure::BadPath(why) => json_error(StatusCode::BAD_REQUEST, "invalid_request", why),
            Failure::NoRoute => json_error(StatusCode::NOT_FOUND, "not_found", "no route for this path"),
            Failure::MethodNotAllowed(allow) => {
                let mut resp = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "no route serves this method here",
                );
                if let Ok(v) = HeaderValue::from_str(allow) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                resp
            }
            Failure::Unforwardable => {
                json_error(StatusCode::BAD_REQUEST, "invalid_request", "request target cannot be forwarded")
            }
            Failure::UpstreamTimeout => {
                json_error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "the upstream did not answer in time")
            }
            Failure::UpstreamUnreachable => {
                json_error(StatusCode::BAD_GATEWAY, "bad_gateway", "the upstream could not be reached")
            }
            Failure::UpstreamHeadTooLarge(_) => {
                json_error(StatusCode::BAD_GATEWAY, "bad_gateway", "the upstream's response head is too large")
            }
            Failure::RequestBodyTimeout => {
                json_error(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body stopped arriving")
            }
            Failure::BadClientCert(e) => json_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
            Failure::RateLimited { rate, decision, .. } => {
                let mut resp =
                    json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry later");
                let h = resp.headers_mut();
                h.insert(header::RETRY_AFTER, HeaderValue::from(decision.retry_after_secs));
                super::headers::set_rate_limit(h, *rate, decision);
                resp
            }
            Failure::Rejected(r) => challenge(r, scope_text, &snap.dpop_algs, &snap.nonces),
        }
    }
}
