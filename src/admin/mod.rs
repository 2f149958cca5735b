//! The admin listener: liveness, readiness, reload status, Prometheus metrics, upstream groups'
//! health (`/upstreams`), and the operator's `POST /revoke` of a client's refresh-token families.
//!
//! Reading endpoints are open (probes and scrapers carry no token). State-changing ones act on
//! the whole fleet when the state is shared, and a sidecar's admin port is often reachable on the
//! pod IP, so they need a bearer token of our own issuer with the `admin.scope` scope.
//!
//! It is plain HTTP/1.1 on a separate (by default loopback) port so that orchestrators and
//! scrapers never go through the JWT check. The state it reports is shared with the reloader,
//! which writes it through [`AdminState`]; readers only load atomics, so a scrape never blocks
//! the proxy's hot path.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::bearer::{bearer_token, challenge, Rejection};
use crate::auth::jwt::TokenError;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Content type of the `/metrics` body, as OpenMetrics scrapers expect.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send a request head before its connection is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `serve` waits for open connections to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Outcome of the config reloads so far, as reported by `GET /reload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Number of snapshots swapped in; 1 once the startup config is loaded, 0 before.
    pub generation: u64,
    /// When the last snapshot was swapped in; `UNIX_EPOCH` until the first one.
    pub last_reload: SystemTime,
    /// Message of the last failed attempt if it came after the last success.
    pub last_error: Option<String>,
    /// Restart-only keys the current config changed: they apply at the next start only.
    pub restart_required: Vec<&'static str>,
}

/// What `AdminState::scrape` runs before `GET /metrics` encodes.
pub type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// What the admin endpoints report; shared with the reloader, which updates it.
pub struct AdminState {
    /// Process-wide metrics, encoded by `GET /metrics` and fed by reload outcomes.
    pub metrics: Arc<Metrics>,
    /// Set once a config is loaded and the listeners are bound.
    ready: AtomicBool,
    /// Latest reload status, swapped whole so readers never take a lock.
    reload: ArcSwap<ReloadStatus>,
    /// The token state store, for `POST /revoke`; set once at start.
    pub store: std::sync::OnceLock<Arc<dyn crate::store::Store>>,
    /// Brings the gauges only the current snapshot knows (quota tables) up to date at scrape
    /// time; set once at start by whoever holds the snapshot (the admin does not).
    pub scrape: std::sync::OnceLock<ScrapeHook>,
}

impl AdminState {
    /// New state: generation 0, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: AtomicBool::new(false),
            reload: ArcSwap::from_pointee(ReloadStatus {
                generation: 0,
                last_reload: UNIX_EPOCH,
                last_error: None,
                restart_required: Vec::new(),
            }),
            store: std::sync::OnceLock::new(),
            scrape: std::sync::OnceLock::new(),
        }
    }

    /// Marks the process ready (or not) for `GET /readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `GET /readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A snapshot was swapped in: generation += 1, last_reload = now, last_error = None, and
    /// the restart-only keys it changed (empty at start).
    pub fn reload_succeeded(&self, restart_required: Vec<&'static str>) {
        let now = SystemTime::now();
        self.reload.rcu(|current| ReloadStatus {
            generation: current.generation + 1,
            last_reload: now,
            last_error: None,
            restart_required: restart_required.clone(),
        });
        self.metrics.record_reload(true);
    }

    /// A reload failed; the old snapshot keeps serving.
    pub fn reload_failed(&self, error: String) {
        self.reload.rcu(|current| ReloadStatus {
            generation: current.generation,
            last_reload: current.last_reload,
            last_error: Some(error.clone()),
            restart_required: current.restart_required.clone(),
        });
        self.metrics.record_reload(false);
    }

    /// The current reload status.
    pub fn reload_status(&self) -> Arc<ReloadStatus> {
        self.reload.load_full()
    }
}

/// Serves the admin endpoints on an already-bound listener until `shutdown` resolves.
/// `current` is the live snapshot cell: admin tokens are checked against its trust and
/// `admin.scope`, so a reload (a rotated key, a new scope name) applies at once.
///
/// After `shutdown`, open connections finish their in-flight request and close; this returns
/// once they have, or after a few seconds at most.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    current: Arc<ArcSwap<Snapshot>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let current = Arc::clone(&current);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                let current = Arc::clone(&current);
                async move {
                    // Revocation needs an admin token of our own issuer: a validation-only
                    // gateway has none (revoke at the central issuer), so it is not found here.
                    if req.uri().path() == "/revoke" && current.load().issues_tokens() {
                        return Ok::<_, Infallible>(revoke_client(&state, &current, req).await);
                    }
                    Ok::<_, Infallible>(respond(&state, &current, &req))
                }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                // A closed channel means `serve` itself was dropped: stop as well.
                () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "admin connection error");
            }
        });
    }
    drop(stop_rx);
    drop(listener);
    // Receivers live in the connection tasks, so `closed` resolves once every one has ended.
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, stop_tx.closed()).await.is_err() {
        tracing::debug!("admin connections still open after shutdown drain");
    }
}

/// The admin endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `/healthz`: liveness.
    Healthz,
    /// `/readyz`: readiness.
    Readyz,
    /// `/reload`: reload status as JSON.
    Reload,
    /// `/metrics`: OpenMetrics exposition.
    Metrics,
    /// `/state`: the state store's backend, health and denylist size as JSON.
    State,
    /// `/issuers`: every trusted issuer, its kids, and for remote ones the fetch status.
    Issuers,
    /// `/upstreams`: every `[[upstreams]]` group's endpoints, their health and counts.
    Upstreams,
}

impl Endpoint {
    /// The endpoint at `path`, if any (the query string is ignored).
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Self::Healthz),
            "/readyz" => Some(Self::Readyz),
            "/reload" => Some(Self::Reload),
            "/metrics" => Some(Self::Metrics),
            "/state" => Some(Self::State),
            "/issuers" => Some(Self::Issuers),
            "/upstreams" => Some(Self::Upstreams),
            _ => None,
        }
    }
}

/// Answers one admin request; never fails, whatever the client sent.
fn respond<B>(state: &AdminState, current: &ArcSwap<Snapshot>, req: &Request<B>) -> Response<Full<Bytes>> {
    let Some(endpoint) = Endpoint::from_path(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if req.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok"),
        Endpoint::Readyz if state.is_ready() => text(StatusCode::OK, "ready"),
        Endpoint::Readyz => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        Endpoint::Reload => {
            let body = reload_json(&state.reload_status()).to_string();
            with_body(StatusCode::OK, "application/json", body)
        }
        Endpoint::Metrics => {
            // The follower's gauges are read at scrape time: its age grows between events.
            if let Some(stream) = state.store.get().and_then(|s| s.status().stream) {
                state.metrics.observe_stream("redis", stream.connected, stream.last_event_age_secs);
            }
            state.metrics.observe_log_drops(crate::logging::dropped_lines());
            if let Some(scrape) = state.scrape.get() {
                scrape(&state.metrics);
            }
            with_body(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, state.metrics.encode())
        }
        Endpoint::State => match state.store.get() {
            Some(store) => with_body(StatusCode::OK, "application/json", state_json(&store.status()).to_string()),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no state store yet"),
        },
        Endpoint::Issuers => {
            let snap = current.load();
            with_body(StatusCode::OK, "application/json", issuers_json(&snap.trust, &snap.config).to_string())
        }
        Endpoint::Upstreams => {
            let groups: Vec<serde_json::Value> = current.load().groups.iter().map(|g| g.status_json()).collect();
            with_body(StatusCode::OK, "application/json", serde_json::json!({ "upstreams": groups }).to_string())
        }
    }
}

/// The `/issuers` document: per issuer its kids (never key material) and where they come from;
/// a remote issuer adds its fetch status (last fetch, next fetch, last error).
fn issuers_json(trust: &crate::auth::jwt::Trust, config: &crate::config::Config) -> serde_json::Value {
    use crate::auth::jwt::IssuerKeys;
    let mut names: Vec<&String> = trust.issuers.keys().collect();
    names.sort();
    let list: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| match &trust.issuers[name].keys {
            IssuerKeys::Remote(remote) => remote.status_json(),
            IssuerKeys::Static(set) => {
                let source = if *name == config.tokens.issuer { "own" } else { "jwks_file" };
                serde_json::json!({ "issuer": name, "source": source, "kids": set.kids() })
            }
        })
        .collect();
    serde_json::json!({ "issuers": list })
}

/// Checks that `req` carries a bearer token of our own issuer (its own audiences), not revoked,
/// with `admin.scope`. Ok: the admin's `sub`, for the log.
fn authenticate(state: &AdminState, current: &ArcSwap<Snapshot>, parts: &Parts) -> Result<Option<String>, Rejection> {
    let snap = current.load();
    let token = bearer_token(parts)?;
    let now = crate::auth::unix_now();
    let verified = snap.trust.validate_from(token, &snap.config.tokens.issuer, now).map_err(Rejection::InvalidToken)?;
    let store = state.store.get();
    if verified.jti.as_deref().is_some_and(|j| store.is_some_and(|s| s.is_jti_denied(j, now))) {
        return Err(Rejection::InvalidToken(TokenError::Revoked));
    }
    if verified.missing_scope(std::slice::from_ref(&snap.config.admin.scope)).is_some() {
        return Err(Rejection::InsufficientScope);
    }
    Ok(verified.sub)
}

/// `POST /revoke?client_id=C[&sub=S]`: revokes every refresh-token family of a client (or only
/// those of one user), so an app loses access without anyone changing a password.
async fn revoke_client<B>(state: &AdminState, current: &ArcSwap<Snapshot>, req: Request<B>) -> Response<Full<Bytes>> {
    let (req, _body) = req.into_parts();
    if req.method != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let admin = match authenticate(state, current, &req) {
        Ok(admin) => admin,
        // The proxy's RFC 6750 answer, so both listeners challenge alike.
        Err(refused) => {
            let snap = current.load();
            return challenge(&refused, &snap.config.admin.scope, &snap.dpop_algs, &snap.nonces);
        }
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let get = |k: &str| params.iter().find(|(n, v)| n == k && !v.is_empty()).map(|(_, v)| v.clone());
    let (Some(client_id), Some(store)) = (get("client_id"), state.store.get().cloned()) else {
        return text(StatusCode::BAD_REQUEST, "client_id is required");
    };
    let sub = get("sub");
    tracing::info!(admin = admin.as_deref().unwrap_or("-"), %client_id, sub = sub.as_deref().unwrap_or("*"), "admin revocation");
    let done = tokio::task::spawn_blocking(move || store.revoke_client(&client_id, sub.as_deref())).await;
    match done {
        Ok(Ok(n)) => with_body(StatusCode::OK, "application/json", serde_json::json!({ "revoked": n }).to_string()),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "state store unavailable"),
    }
}

/// The `/state` JSON document: backend, `health` ("ok" or "unavailable" with the last error,
/// which never carries the URL or its password), denied jtis in memory, and the stream follower.
fn state_json(status: &crate::store::StoreStatus) -> serde_json::Value {
    let stream = status
        .stream
        .as_ref()
        .map(|s| serde_json::json!({ "connected": s.connected, "last_event_age_seconds": s.last_event_age_secs }));
    serde_json::json!({
        "backend": status.backend,
        "health": if status.error.is_some() { "unavailable" } else { "ok" },
        "last_error": status.error,
        "denied_jtis": status.denied_jtis,
        "stream": stream,
    })
}

/// The `/reload` JSON document for `status`.
fn reload_json(status: &ReloadStatus) -> serde_json::Value {
    // humantime panics on times before the epoch, which only a badly set clock produces.
    let last_reload = status.last_reload.max(UNIX_EPOCH);
    serde_json::json!({
        "generation": status.generation,
        "last_reload": humantime::format_rfc3339_millis(last_reload).to_string(),
        "last_error": status.last_error,
        "restart_required": status.restart_required,
    })
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_body(status, "text/plain; charset=utf-8", body)
}

/// A response with `status`, a static content type and `body`, never cached.
fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// A parsed HTTP/1.1 response; header names lowercased.
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            let found = self.headers.iter().find(|(n, _)| n == name);
            found.map(|(_, v)| v.as_str())
        }
    }

    struct Server {
        addr: SocketAddr,
        state: Arc<AdminState>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    /// A snapshot of `text`, its generated key kept in memory (`check` mode).
    fn build(text: &str) -> Result<Snapshot, crate::snapshot::BuildError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).expect("write config");
        Snapshot::build(&config, crate::snapshot::BuildMode::Check)
    }

    /// A snapshot of the defaults.
    fn snapshot() -> Arc<ArcSwap<Snapshot>> {
        Arc::new(ArcSwap::from_pointee(build("").expect("default snapshot")))
    }

    #[test]
    fn admin_scope_defaults_and_must_be_one_scope() {
        assert_eq!(build("").expect("defaults").config.admin.scope, "tokengate:admin");
        assert_eq!(build("[admin]\nscope = \"ops\"\n").expect("one scope").config.admin.scope, "ops");
        for bad in ["", "a b"] {
            let err = build(&format!("[admin]\nscope = {bad:?}\n")).expect_err("refused").to_string();
            assert!(err.contains("admin.scope"), "{bad:?}: {err}");
        }
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(AdminState::new(Arc::new(Metrics::new())));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, Arc::clone(&state), snapshot(), shutdown));
        Server { addr, state, stop, task }
    }

    fn parse(raw: &str) -> Reply {
        let (head, body) = raw.split_once("\r\n\r\n").expect("head/body split");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line.split(' ').nth(1).expect("code").parse().expect("numeric");
        let headers =
            lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned())).collect();
        Reply { status, headers, body: body.to_owned() }
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut raw = String::new();
            stream.read_to_string(&mut raw).await.expect("read");
            raw
        };
        let raw = tokio::time::timeout(Duration::from_secs(5), exchange).await.expect("timely reply");
        parse(&raw)
    }

    async fn reload_doc(addr: SocketAddr) -> serde_json::Map<String, serde_json::Value> {
        let reply = request(addr, "GET", "/reload").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let doc: serde_json::Value = serde_json::from_str(&reply.body).expect("json body");
        let doc = doc.as_object().expect("object").clone();
        assert_eq!(doc.len(), 4, "{doc:?}");
        assert!(doc["restart_required"].is_array(), "{doc:?}");
        doc
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let s = start().await;
        let reply = request(s.addr, "GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
        // Query strings do not change the route.
        assert_eq!(request(s.addr, "GET", "/healthz?x=1").await.status, 200);
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_flag() {
        let s = start().await;
        let reply = request(s.addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (503, "not ready"));
        s.state.set_ready(true);
        let reply = request(s.addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ready"));
        s.state.set_ready(false);
        assert_eq!(request(s.addr, "GET", "/readyz").await.status, 503);
    }

    #[tokio::test]
    async fn reload_reports_generation_time_and_errors() {
        let s = start().await;
        let doc = reload_doc(s.addr).await;
        assert_eq!(doc["generation"], 0);
        assert!(doc["last_error"].is_null());

        let before = SystemTime::now() - Duration::from_secs(1);
        s.state.reload_succeeded(Vec::new());
        let doc = reload_doc(s.addr).await;
        assert_eq!(doc["generation"].as_u64(), Some(1));
        assert!(doc["last_error"].is_null());
        let first = doc["last_reload"].as_str().expect("string").to_owned();
        assert!(first.ends_with('Z'), "{first}");
        let first_time = humantime::parse_rfc3339(&first).expect("rfc3339");
        assert!(first_time >= before && first_time <= SystemTime::now(), "{first}");

        s.state.reload_failed("bad key in jwks.pem".to_owned());
        let doc = reload_doc(s.addr).await;
        assert_eq!(doc["generation"].as_u64(), Some(1));
        assert_eq!(doc["last_error"].as_str(), Some("bad key in jwks.pem"));
        assert_eq!(doc["last_reload"].as_str(), Some(first.as_str()));

        tokio::time::sleep(Duration::from_millis(5)).await;
        s.state.reload_succeeded(Vec::new());
        let doc = reload_doc(s.addr).await;
        assert_eq!(doc["generation"].as_u64(), Some(2));
        assert!(doc["last_error"].is_null());
        let second = humantime::parse_rfc3339(doc["last_reload"].as_str().expect("string"));
        assert!(second.expect("rfc3339") > first_time);

        let metrics = request(s.addr, "GET", "/metrics").await.body;
        assert!(metrics.lines().any(|l| l == r#"tokengate_reloads_total{result="ok"} 2"#));
        assert!(metrics.lines().any(|l| l == r#"tokengate_reloads_total{result="failed"} 1"#));
    }

    #[tokio::test]
    async fn metrics_exposes_recorded_series() {
        let s = start().await;
        s.state.metrics.record_request("/api", 200);
        s.state.metrics.record_request("/api", 200);
        s.state.metrics.record_rejection("expired");
        let reply = request(s.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
        let lines: Vec<&str> = reply.body.lines().collect();
        assert!(lines.contains(&r#"tokengate_requests_total{route="/api",status="200"} 2"#));
        assert!(lines.contains(&r#"tokengate_token_rejections_total{reason="expired"} 1"#));
        assert_eq!(lines.last(), Some(&"# EOF"));
    }

    #[tokio::test]
    async fn unknown_paths_404_and_other_methods_405() {
        let s = start().await;
        assert_eq!(request(s.addr, "GET", "/").await.status, 404);
        assert_eq!(request(s.addr, "GET", "/healthz/").await.status, 404);
        assert_eq!(request(s.addr, "POST", "/nope").await.status, 404);
        for (method, path) in [("POST", "/reload"), ("DELETE", "/metrics"), ("HEAD", "/healthz")] {
            let reply = request(s.addr, method, path).await;
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.header("allow"), Some("GET"), "{method} {path}");
        }
    }

    #[tokio::test]
    async fn shutdown_closes_idle_keepalive_connections_promptly() {
        let s = start().await;
        let mut idle = TcpStream::connect(s.addr).await.expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\nok") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
                .await
                .expect("timely read")
                .expect("read");
            assert!(n > 0, "closed early");
            raw.extend_from_slice(&buf[..n]);
        }
        let _ = s.stop.send(());
        // Well under DRAIN_TIMEOUT: the idle connection is closed, not waited out.
        tokio::time::timeout(Duration::from_secs(2), s.task).await.expect("serve returned").expect("join");
        let mut rest = Vec::new();
        let n = idle.read_to_end(&mut rest).await.expect("read after shutdown");
        assert_eq!(n, 0);
        assert!(TcpStream::connect(s.addr).await.is_err(), "listener still open");
    }
}
