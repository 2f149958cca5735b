//! The request path: normalize the path once, pick the route, authorize, rewrite headers,
//! forward (streaming both ways), and log. The snapshot is loaded once per request, so a
//! request finishes on the configuration it started with even if a reload happens meanwhile.

pub mod authz;
pub mod cors;
pub mod failure;
pub mod grpc;

pub use failure::rejection_reasons;
pub mod headers;
mod quota;
pub mod routes;
mod target;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::proxy::authz::authorize;
use crate::proxy::failure::Failure;

use crate::auth::bearer::Rejection;
use crate::auth::jwt;
use crate::auth::token_cache::Admitted;
use crate::config::{HashOn, ServerConfig};
use crate::gateway::{ClientCert, ConnInfo, Gateway};
use crate::metrics::Limit;
use crate::proxy::routes::{normalize_path, Lookup};
use crate::snapshot::{Route, Snapshot, Upstream};
use crate::telemetry::RequestTrace;
use crate::tls::client_cert::CertHeaderError;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use opentelemetry::KeyValue;
use target::{os_error, request_host, upstream_address, upstream_reason, upstream_target};
use upstream::UpstreamBody;

/// Response body: an upstream's streamed body, or one the gateway made.
pub type Body = Either<UpstreamBody, Full<Bytes>>;

fn own(resp: Response<Full<Bytes>>) -> Response<Body> {
    resp.map(Either::Right)
}

/// What the access log records besides the request line; filled only when the event is enabled.
#[derive(Default)]
struct Outcome<'a> {
    /// Whether the `access` event will be emitted (else nothing below is worth copying).
    log: bool,
    /// The metrics and log label: the matched route's prefix, or `oauth`.
    route: Option<&'a str>,
    /// The matched route's scopes, for a 403's challenge.
    scope_text: &'a str,
    /// The normalized path: a refused path is never logged raw.
    path: Option<LoggedPath>,
    verified: Option<Arc<Admitted>>,
    upstream_status: Option<u16>,
    /// The DPoP proof id still to be checked against the shared replay store.
    proof: Option<[u8; 16]>,
    /// The route quota's answer, for the `RateLimit` headers of the response (None when the
    /// route sends them only with a 429).
    quota: Option<(crate::quota::Rate, crate::quota::Decision)>,
    /// The route quota's question to the shared store, when the local allowance ran out.
    pending_quota: Option<quota::Pending>,
    /// The request's trace: its id for the log, the `traceparent` for the upstream, its spans.
    trace: RequestTrace,
    /// The CORS headers the answer gets on its way out (the route's policy, or the server's).
    cors: Option<cors::Actual<'a>>,
    /// The caller's key for an upstream group balanced by `hash` (None: no such group, or no key).
    hash_key: Option<u64>,
}

/// The path the access log shows: the one sent when it was already canonical (a reference count,
/// not a copy), else the canonical one.
enum LoggedPath {
    /// The request's own path (and query, which is not logged).
    Sent(http::uri::PathAndQuery),
    /// The path as normalized.
    Canonical(String),
}

impl LoggedPath {
    fn sent(uri: &http::Uri) -> Option<LoggedPath> {
        uri.path_and_query().map(|p| LoggedPath::Sent(p.clone()))
    }

    fn as_str(&self) -> &str {
        match self {
            LoggedPath::Sent(p) => p.path(),
            LoggedPath::Canonical(p) => p,
        }
    }
}

/// Serves one request; never fails (every error becomes a response).
pub async fn handle(
    gw: Arc<Gateway>,
    mut conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let snap = gw.current.load_full();
    let method = req.method().clone();
    // Read before the request moves on: a refused gRPC call is answered in gRPC's terms.
    let grpc = grpc::is_grpc(req.headers());
    let trace = gw.telemetry.start(req.headers(), snap.config.server.trust_forwarded);
    let mut outcome =
        Outcome { log: tracing::enabled!(target: "access", tracing::Level::INFO), trace, ..Default::default() };
    // A refused gRPC call goes out as HTTP 200; metrics, log and trace count it by its refusal.
    let mut refused = None;
    let mut resp = match route_request(&gw, &snap, &mut conn, req, &mut outcome).await {
        Ok(resp) => resp,
        Err(failure) => {
            if let Some(reason) = failure.rejection_reason() {
                gw.metrics.record_rejection(reason);
            }
            if let Some(limit) = failure.limit() {
                gw.metrics.record_limit(limit);
            }
            if let Some(key) = failure.rate_limited_key() {
                gw.metrics.record_rate_limited(outcome.route.unwrap_or("none"), key);
            }
            let resp = failure.response(outcome.scope_text, &snap);
            if grpc {
                refused = Some(resp.status());
                own(grpc::answer(resp).await)
            } else {
                own(resp)
            }
        }
    };
    if let Some(cors) = outcome.cors {
        cors.apply(resp.headers_mut());
    }
    let status = refused.unwrap_or(resp.status()).as_u16();
    let route = outcome.route.unwrap_or("none");
    gw.metrics.record_request(route, status);
    outcome.trace.finish(&method, route, status);
    if outcome.log {
        let v = outcome.verified.as_deref().map(|a| &a.verified);
        let trace_id = outcome.trace.trace_id_hex();
        let line = crate::logging::access::AccessLine {
            method: method.as_str(),
            path: outcome.path.as_ref().map_or("-", LoggedPath::as_str),
            status,
            latency_us: start.elapsed().as_micros() as u64,
            route,
            sub: v.and_then(|v| v.sub.as_deref()).unwrap_or("-"),
            client_id: v.and_then(|v| v.client_id.as_deref()).unwrap_or("-"),
            upstream_status: outcome.upstream_status.unwrap_or(0),
            // Hex digits only: always UTF-8.
            trace_id: std::str::from_utf8(&trace_id).unwrap_or("-"),
        };
        crate::logging::access::log(&line);
    }
    Ok(resp)
}

async fn route_request<'s>(
    gw: &Gateway,
    snap: &'s Snapshot,
    conn: &mut ConnInfo,
    req: Request<Incoming>,
    out: &mut Outcome<'s>,
) -> Result<Response<Body>, Failure> {
    let (mut parts, mut body) = req.into_parts();
    if let Some(name) = &snap.client_cert_header {
        if let Err(e) = cert_from_header(snap, name, conn, &mut parts.headers) {
            Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
            if crate::oauth::is_oauth_path(snap, parts.uri.path()) {
                out.route = Some("oauth");
                return Ok(own(crate::oauth::refuse_cert_header(parts.uri.path(), e)));
            }
            return Err(Failure::BadClientCert(e));
        }
    }
    let conn = &*conn;
    // Boxed futures below: the token endpoint's and the discarding ones would otherwise be
    // allocated and copied inline for every proxied request too.
    let mut admitted = admit(gw, snap, conn, &mut parts, out);
    if admitted.as_ref().err().is_some_and(Failure::is_unknown_kid) {
        // A remote issuer may have rotated: refetch its keys (single flight, rate-limited) and
        // look once more. Boxed: rare, and it must not grow every request's future.
        if Box::pin(authz::refetch_keys(snap, &parts)).await {
            admitted = admit(gw, snap, conn, &mut parts, out);
        }
    }
    match admitted {
        Ok(Next::Preflight(resp)) => {
            Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
            Ok(own(resp))
        }
        Ok(Next::TokenEndpoint) => {
            let resp = Box::pin(crate::oauth::handle(gw, snap, conn, &parts, &mut body, &out.trace)).await;
            // Whatever it answered, the rest of the body is read first; after a form was read
            // there is nothing left and this returns at once.
            Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
            Ok(own(resp))
        }
        Ok(Next::Forward(route)) => {
            if let Some(id) = out.proof.take() {
                // Boxed: only DPoP requests on a shared store await this.
                if let Err(failure) = Box::pin(shared_replay_check(gw, snap, &id)).await {
                    Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
                    return Err(failure);
                }
            }
            if let (Some(pending), Some(q)) = (out.pending_quota.take(), &route.quota) {
                // Boxed: only a request whose allowance ran out awaits the store.
                match Box::pin(quota::ask_store(gw, snap, q, pending)).await {
                    Ok(answer) => out.quota = Some(answer).filter(|_| q.headers),
                    Err(failure) => {
                        Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
                        return Err(failure);
                    }
                }
            }
            let quota = out.quota.take();
            let mut resp = forward(gw, snap, route, conn, parts, body, out).await?;
            if let Some((rate, decision)) = quota {
                headers::set_rate_limit(resp.headers_mut(), rate, &decision);
            }
            Ok(resp)
        }
        Err(failure) => {
            Box::pin(discard_body(&snap.config.server, &parts.headers, body)).await;
            Err(failure)
        }
    }
}

/// A DPoP proof this process had not seen must also be new to every instance sharing the store
/// (RFC 9449 11.1). With the shared store unreachable, this process's memory (already checked)
/// is all there is: the proof passes, and only a replay to another instance in that time could.
async fn shared_replay_check(gw: &Gateway, snap: &Snapshot, id: &[u8; 16]) -> Result<(), Failure> {
    let Some(check) = gw.store.remember_proof(id, snap.config.dpop.replay_window()) else { return Ok(()) };
    match check.await {
        Ok(true) | Err(_) => Ok(()),
        Ok(false) => Err(Failure::Rejected(Rejection::Proof(crate::auth::dpop::ProofError::Replayed))),
    }
}

/// `tls.client_cert_header`: always removed from the request. From a peer in
/// `tls.client_cert_header_peers` it is the request's client certificate (the load balancer
/// terminated TLS and checked the client's key); absent or empty (nginx's
/// `$ssl_client_escaped_cert` when the client sent none), the request has none: a certificate
/// the balancer itself presented to us is not its client's. From anyone else it is ignored: the
/// connection's own certificate, if any, stays.
fn cert_from_header(
    snap: &Snapshot,
    name: &http::HeaderName,
    conn: &mut ConnInfo,
    headers: &mut http::HeaderMap,
) -> Result<(), CertHeaderError> {
    let taken = headers::take_client_cert(headers, name);
    if !snap.config.tls.client_cert_header_peers.iter().any(|c| c.contains(conn.peer.ip())) {
        return Ok(());
    }
    conn.client_cert = None;
    let Some(value) = taken?.filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace)) else { return Ok(()) };
    let chain = crate::tls::client_cert::from_header(value.as_bytes())?;
    conn.client_cert = ClientCert::from_chain(&chain).map(Arc::new);
    Ok(())
}

/// Where an admitted request goes next.
enum Next<'s> {
    /// One of our own OAuth endpoints, which reads the body itself.
    TokenEndpoint,
    /// A CORS preflight, answered by the route's policy (no token, never forwarded).
    Preflight(Response<Full<Bytes>>),
    /// The route's upstream; `parts` already carry the target and rewritten headers.
    Forward(&'s Route),
}

/// Everything decided from the request head alone: Host, path, route, token, headers, target.
fn admit<'s>(
    gw: &Gateway,
    snap: &'s Snapshot,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    out: &mut Outcome<'s>,
) -> Result<Next<'s>, Failure> {
    headers::check_host(parts.version, &parts.uri, &parts.headers).map_err(Failure::BadHost)?;
    if crate::oauth::is_oauth_path(snap, parts.uri.path()) {
        out.route = Some("oauth");
        if out.log {
            // An exact path: nothing to normalize.
            out.path = LoggedPath::sent(&parts.uri);
        }
        return Ok(Next::TokenEndpoint);
    }
    // Answers no route makes (400, 404, 405) carry the server's CORS headers, a route's its own.
    out.cors = snap.cors.as_deref().map(|c| c.actual(&parts.headers));
    // The canonical path, when it differs from the one sent; most requests need no copy.
    let rewritten = match normalize_path(parts.uri.path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(e) => return Err(Failure::BadPath(e.to_string())),
    };
    if out.log {
        out.path = match &rewritten {
            Some(p) => Some(LoggedPath::Canonical(p.clone())),
            None => LoggedPath::sent(&parts.uri),
        };
    }
    let path = rewritten.as_deref().unwrap_or(parts.uri.path());
    if let Some((route, answer)) = preflight(snap, parts, path) {
        (out.route, out.cors) = (Some(route.prefix.as_str()), None);
        return Ok(Next::Preflight(answer));
    }
    let found = match snap.routes.find(request_host(parts), &parts.method, path) {
        Lookup::Found(f) => f,
        Lookup::MethodNotAllowed(allow) => return Err(Failure::MethodNotAllowed(allow.to_owned())),
        Lookup::NotFound => return Err(Failure::NoRoute),
    };
    let route: &Route = found.value;
    out.route = Some(route.prefix.as_str());
    out.cors = route.cors.as_deref().map(|c| c.actual(&parts.headers));
    out.scope_text = route.scope_text.as_str();
    let cx = authz::Context {
        tls: conn.tls,
        cert_thumbprint: conn.client_cert.as_ref().map(|c| c.x5t_s256.as_str()),
        store: gw.store.as_ref(),
        replay: &gw.dpop_replay,
        cache_hit: std::cell::Cell::new(None),
    };
    let span = out.trace.child("authorize", SpanKind::Internal);
    let capture = |name: &str| found.capture(path, name);
    let granted = authorize(snap, &cx, route, parts, &capture, jwt::now());
    if let Some(span) = span {
        end_authorize_span(span, &cx, &granted);
    }
    let granted = granted.map_err(Failure::Rejected)?;
    let verified = granted.admitted;
    out.proof = granted.proof;
    if let Some(q) = &route.quota {
        match quota::spend(gw, snap, &route.prefix, q, conn, verified.as_deref()) {
            quota::Spent::Decided(rate, decision) => {
                out.quota = Some(quota::allow(q, rate, decision)?).filter(|_| q.headers)
            }
            quota::Spent::Ask(pending) => out.pending_quota = Some(pending),
        }
    }
    if out.log {
        out.verified = verified.clone();
    }
    if let Upstream::Group(g) = &route.upstream {
        out.hash_key = g.hash_on.as_ref().and_then(|on| hash_key(on, conn, parts, verified.as_deref()));
    }
    let target = upstream_target(route, found.matched_len, &parts.uri, rewritten.as_deref());
    rewrite_request_headers(snap, route, conn, parts, verified.as_deref());
    parts.uri = target.ok_or(Failure::Unforwardable)?;
    Ok(Next::Forward(route))
}

/// The caller's key for a group balanced by `hash`, from what `hash_on` names (before the headers
/// are rewritten: a header is the client's own).
fn hash_key(on: &HashOn, conn: &ConnInfo, parts: &http::request::Parts, admitted: Option<&Admitted>) -> Option<u64> {
    use upstream::balance::hash_bytes;
    let v = admitted.map(|a| &a.verified);
    match on {
        HashOn::Sub => v.and_then(|v| v.sub.as_deref()).map(|s| hash_bytes(s.as_bytes())),
        HashOn::ClientId => v.and_then(|v| v.client_id.as_deref()).map(|s| hash_bytes(s.as_bytes())),
        HashOn::Ip => Some(match conn.peer.ip() {
            std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
        HashOn::Header(name) => parts.headers.get(name.as_str()).map(|h| hash_bytes(h.as_bytes())),
        HashOn::Claim(path) => match path.lookup(admitted?.claims()?)? {
            serde_json::Value::String(s) => Some(hash_bytes(s.as_bytes())),
            other => Some(hash_bytes(other.to_string().as_bytes())),
        },
    }
}

/// A CORS preflight the gateway answers itself: the route serving the method it asks for (an
/// `OPTIONS` would find none, or the wrong one) has a policy. None when no policy applies, and
/// when a route naming `OPTIONS` is there to forward preflights to an upstream that answers them.
fn preflight<'s>(
    snap: &'s Snapshot,
    parts: &http::request::Parts,
    path: &str,
) -> Option<(&'s Route, Response<Full<Bytes>>)> {
    let asked = cors::preflight_method(&parts.method, &parts.headers)?;
    let host = request_host(parts);
    if let Lookup::Found(f) = snap.routes.find(host, &parts.method, path) {
        if snap.config.routes.get(f.value.index).is_some_and(|r| cors::names_options(&r.methods)) {
            return None;
        }
    }
    let Lookup::Found(f) = snap.routes.find(host, &asked, path) else { return None };
    let route: &Route = f.value;
    let answer = route.cors.as_deref()?.preflight(&asked, &parts.headers);
    Some((route, answer))
}

/// Ends the authorization span: allowed or refused (and why), and whether the token came from
/// the verified-token cache or had its signature verified. Never the token itself.
fn end_authorize_span(
    mut span: opentelemetry_sdk::trace::Span,
    cx: &authz::Context<'_>,
    granted: &Result<authz::Granted, Rejection>,
) {
    let check = match cx.cache_hit.get() {
        Some(true) => "cache_hit",
        Some(false) => "signature_verify",
        None => "none",
    };
    span.set_attribute(KeyValue::new("tokengate.authz.token_check", check));
    match granted {
        Ok(_) => span.set_attribute(KeyValue::new("tokengate.authz.result", "allowed")),
        Err(r) => {
            let reason = failure::rejection_label(r);
            span.set_attributes([
                KeyValue::new("tokengate.authz.result", "refused"),
                KeyValue::new("tokengate.authz.reason", reason),
            ]);
        }
    }
    span.end();
}

/// Reads and drops what is left of the body of a request the gateway answers itself, at most
/// `server.discard_body_bytes` within `server.discard_body_timeout_secs`, before the answer goes
/// out. Answering while the client still sends makes hyper end an h2 stream with
/// RST_STREAM(NO_ERROR): RFC 9113 8.1 allows it, but widely installed clients (curl 7.88 with
/// nghttp2 1.52) then report a stream error instead of the answer. nginx discards for the same
/// reason. Past either bound the answer is sent anyway (the h2 stream is reset, an HTTP/1.1
/// connection closed), as it was before.
async fn discard_body(server: &ServerConfig, headers: &http::HeaderMap, mut body: Incoming) {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    // A client waiting for `100 Continue` has not sent its body: the final answer refuses it.
    if body.is_end_stream() || headers.contains_key(header::EXPECT) {
        return;
    }
    let max = server.discard_body_bytes;
    if body.size_hint().lower() > max {
        return;
    }
    let read = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > max {
                tracing::debug!(max, "request body past server.discard_body_bytes: answered without it");
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(server.discard_body_timeout_secs), read).await.is_err() {
        tracing::debug!("request body slower than server.discard_body_timeout_secs: answered without it");
    }
}

fn rewrite_request_headers(
    snap: &Snapshot,
    route: &Route,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    admitted: Option<&Admitted>,
) {
    // Taken out: the pool sets Host from the upstream URI, as a reverse proxy should.
    let host = parts
        .headers
        .remove(header::HOST)
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::strip_identity(h, snap.identity_headers.iter());
    headers::set_forwarded(
        h,
        &conn.client_address,
        if conn.tls { "https" } else { "http" },
        host,
        snap.config.server.trust_forwarded,
    );
    if !route.forward_token {
        h.remove(header::AUTHORIZATION);
        h.remove(&authz::DPOP);
    }
    if let Some(a) = admitted {
        let names = [&headers::X_AUTH_SUBJECT, &headers::X_AUTH_CLIENT_ID, &headers::X_AUTH_SCOPE];
        for (name, value) in names.into_iter().zip(&a.identity) {
            if let Some(value) = value {
                h.insert(name.clone(), value.clone());
            }
        }
        if !route.claims_to_headers.is_empty() {
            if let Some(claims) = a.claims() {
                for (name, claim) in &route.claims_to_headers {
                    headers::set_identity(h, name, crate::auth::claims::as_header_text(claims, claim).as_deref());
                }
            }
        }
    }
}

async fn forward(
    gw: &Gateway,
    snap: &Snapshot,
    route: &Route,
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    body: Incoming,
    out: &mut Outcome<'_>,
) -> Result<Response<Body>, Failure> {
    let mut span = out.trace.child("upstream", SpanKind::Client);
    let traceparent = out.trace.traceparent(span.as_ref());
    headers::set_trace_context(&mut parts.headers, traceparent, out.trace.continued());
    if let Some(span) = &mut span {
        span.set_attributes([
            KeyValue::new("http.request.method", parts.method.as_str().to_owned()),
            KeyValue::new("http.route", route.prefix.clone()),
            KeyValue::new("server.address", upstream_address(snap, route).unwrap_or_else(|| "echo".into())),
        ]);
    }
    let result = send_upstream(gw, snap, route, conn, parts, body, out).await;
    if let Some(mut span) = span {
        match (&result, out.upstream_status) {
            (_, Some(status)) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                if status >= 500 {
                    span.set_status(Status::error(""));
                }
            }
            (Err(f), None) => span.set_status(Status::error(f.upstream_error_kind())),
            (Ok(_), None) => {}
        }
        span.end();
    }
    result
}

/// [`forward`] past the trace headers: the exchange with the upstream itself.
async fn send_upstream(
    gw: &Gateway,
    snap: &Snapshot,
    route: &Route,
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    body: Incoming,
    out: &mut Outcome<'_>,
) -> Result<Response<Body>, Failure> {
    if let Upstream::Echo = &route.upstream {
        let resp = Box::pin(upstream::echo(Request::from_parts(parts, body))).await;
        out.upstream_status = Some(resp.status().as_u16());
        return Ok(own(resp));
    }
    parts.version = Version::HTTP_11;
    let websocket = headers::is_websocket_upgrade(&parts.headers);
    let mut req = Request::from_parts(parts, body);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let sent = Instant::now();
    let result = match &route.upstream {
        Upstream::Remote { pool, .. } => tokio::time::timeout(route.timeout, pool.send(req, &conn.watch))
            .await
            .map_err(|_| ())
            .map(|r| r.map_err(|e| (e, None))),
        // The group keeps the time itself: a time-out counts against the endpoint it waited on.
        Upstream::Group(g) => match g.send(req, out.hash_key, &conn.watch, route.timeout).await {
            Ok(resp) => Ok(Ok(resp)),
            Err(upstream::group::GroupError { error: Some(e), origin }) => Ok(Err((e, Some(origin)))),
            Err(upstream::group::GroupError { error: None, .. }) => Err(()),
        },
        // Answered above.
        Upstream::Echo => return Err(Failure::Unforwardable),
    };
    gw.metrics.observe_upstream(&route.prefix, sent.elapsed().as_secs_f64());
    let mut resp = match result {
        Err(_) => return Err(Failure::UpstreamTimeout),
        Ok(Err((e, endpoint))) => {
            let os_error = os_error(&e);
            tracing::warn!(
                route = %route.prefix,
                upstream = endpoint.or_else(|| upstream_address(snap, route)).as_deref().unwrap_or("-"),
                os_error = os_error.map(tracing::field::display),
                error = %upstream_reason(&e),
                "upstream request failed"
            );
            return Err(Failure::upstream(&e));
        }
        Ok(Ok(resp)) => resp,
    };
    out.upstream_status = Some(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                    let mut c = hyper_util::rt::TokioIo::new(c);
                    let mut u = hyper_util::rt::TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
            return Ok(resp.map(Either::Left));
        }
    }
    headers::strip_hop_by_hop(resp.headers_mut());
    if !headers::fits_header_list(resp.headers(), conn.watch.max_header_list.load(Ordering::Relaxed)) {
        return Err(Failure::UpstreamHeadTooLarge(Limit::ClientHeaderList));
    }
    Ok(resp.map(Either::Left))
}
