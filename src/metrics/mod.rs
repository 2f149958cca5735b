//! Process-wide Prometheus metrics for tokengate: every series the admin listener serves, defined
//! here and fed by the parts that count (the proxy, the listeners, the store, the remote key sets,
//! span export). A leaf: it imports nothing of the crate, so any layer can record into it.
//!
//! The proxy's hot path records into these on every request, so per-route handles are cached
//! after first use: recording a series that was already seen takes a read lock and an atomic
//! add, with no allocation. Label sets stay bounded because routes come from the config, statuses
//! are numeric codes and rejection reasons are static strings.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod jwks;

pub use jwks::JwksMetrics;

/// Upstream latency bucket bounds in seconds, 100us to 30s in roughly 1-2.5-5 steps.
const UPSTREAM_BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Labels of `tokengate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// Route prefix from the config, or "none".
    route: String,
    /// HTTP status code, encoded as its decimal number.
    status: u16,
}

/// Labels of `tokengate_upstream_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// Route prefix from the config.
    route: String,
}

/// Labels of `tokengate_rate_limited_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    /// Route prefix from the config.
    route: String,
    /// What the route's quota counts per: client_id, sub, ip or claim.
    key: &'static str,
}

/// Labels of the per-route quota gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaRouteLabels {
    /// Route prefix from the config.
    route: String,
}

/// Labels of the per-endpoint series of `[[upstreams]]` groups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// `[[upstreams]] name`.
    group: String,
    /// The endpoint's `scheme://host:port`.
    endpoint: String,
}

/// Labels of `tokengate_limit_hits_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// Which limit, as [`Limit::as_str`] names it.
    limit: &'static str,
}

/// A configured limit that refused or cut off a client: the `limit` label of
/// `tokengate_limit_hits_total`, named after the setting that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `server.max_connections`: refused at accept.
    MaxConnections,
    /// `server.max_connections_per_ip`: refused at accept.
    PerIpConnections,
    /// `server.tls_handshake_timeout_secs`: handshake not finished in time.
    TlsHandshakeTimeout,
    /// `server.header_read_timeout_secs`: no request head (or first byte) in time.
    HeaderReadTimeout,
    /// `lockout.per_ip_per_minute`: token-endpoint requests from one address.
    TokenEndpointRate,
    /// `server.max_header_bytes` / `max_headers`: a request head or h2 header list answered 431.
    MaxHeaderBytes,
    /// `server.max_h2_streams`: an h2 stream refused (RST_STREAM REFUSED_STREAM).
    MaxH2Streams,
    /// hyper's h2 flood limits (rapid reset, CONTINUATION flood, local resets): GOAWAY ENHANCE_YOUR_CALM.
    H2Flood,
    /// An h2 frame over the size we advertised: GOAWAY FRAME_SIZE_ERROR.
    H2FrameSize,
    /// An h2 header block over the size h2 will even decode: GOAWAY COMPRESSION_ERROR.
    H2HeaderBlock,
    /// `server.upstream_max_header_bytes` / `upstream_max_headers`: an upstream response head, 502.
    UpstreamHeaderBytes,
    /// The h2 client's own SETTINGS_MAX_HEADER_LIST_SIZE: a response head it would refuse, 502.
    ClientHeaderList,
    /// `server.upstream_body_idle_timeout_secs`: an upstream stalled mid-body, the response cut.
    UpstreamBodyIdleTimeout,
    /// `server.request_body_idle_timeout_secs`: a client stalled mid-upload.
    RequestBodyIdleTimeout,
    /// `server.send_idle_timeout_secs`: a client left a response unread, the connection closed.
    SendIdleTimeout,
}

impl Limit {
    /// Every limit: each has a series (at 0) from the start.
    pub const ALL: [Limit; 15] = [
        Limit::MaxConnections,
        Limit::PerIpConnections,
        Limit::TlsHandshakeTimeout,
        Limit::HeaderReadTimeout,
        Limit::TokenEndpointRate,
        Limit::MaxHeaderBytes,
        Limit::MaxH2Streams,
        Limit::H2Flood,
        Limit::H2FrameSize,
        Limit::H2HeaderBlock,
        Limit::UpstreamHeaderBytes,
        Limit::ClientHeaderList,
        Limit::UpstreamBodyIdleTimeout,
        Limit::RequestBodyIdleTimeout,
        Limit::SendIdleTimeout,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::PerIpConnections => "per_ip_connections",
            Limit::TlsHandshakeTimeout => "tls_handshake_timeout",
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::TokenEndpointRate => "token_endpoint_rate",
            Limit::MaxHeaderBytes => "max_header_bytes",
            Limit::MaxH2Streams => "max_h2_streams",
            Limit::H2Flood => "h2_flood",
            Limit::H2FrameSize => "h2_frame_size",
            Limit::H2HeaderBlock => "h2_header_block",
            Limit::UpstreamHeaderBytes => "upstream_max_header_bytes",
            Limit::ClientHeaderList => "client_max_header_list_size",
            Limit::UpstreamBodyIdleTimeout => "upstream_body_idle_timeout",
            Limit::RequestBodyIdleTimeout => "request_body_idle_timeout",
            Limit::SendIdleTimeout => "send_idle_timeout",
        }
    }
}

/// Labels of `tokengate_token_rejections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    /// Short static reason such as "expired".
    reason: &'static str,
}

/// Labels of `tokengate_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// "ok" or "failed".
    result: &'static str,
}

/// State-store latency bucket bounds in seconds, 100us to 5s (a call is bounded by
/// `state.timeout_ms`, 2 s by default).
const STORE_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Labels of `tokengate_store_duration_seconds` and `tokengate_store_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabels {
    /// The store operation, as the `Store` trait names it (e.g. "rotate").
    op: &'static str,
}

/// Labels of the denylist stream gauges (present only for a backend that has a stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    /// The backend following the stream ("redis").
    backend: &'static str,
}

/// Builds a store histogram with its buckets; a fn pointer so the family type is nameable.
fn new_store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

/// Builds an upstream histogram with the shared buckets; a fn pointer so the family type is nameable.
fn new_upstream_histogram() -> Histogram {
    Histogram::new(UPSTREAM_BUCKETS)
}

/// Handles for one route, cloned out of the families once so later records skip the label set.
#[derive(Default)]
struct RouteHandles {
    /// Request counters of this route by status code.
    /// (A short list scanned in order: a route sees a handful of statuses, and a scan beats hashing.)
    statuses: RwLock<Vec<(u16, Counter)>>,
    /// Upstream histogram of this route, created on first observation so unproxied routes stay absent.
    upstream: OnceLock<Histogram>,
}

/// Counters of the span export path (`telemetry`), registered with the other series.
#[derive(Clone, Default)]
pub struct ExportCounters {
    /// Spans dropped because `tracing.queue_spans` were already waiting.
    pub dropped: Counter,
    /// Spans handed to the collector in exports that succeeded.
    pub exported: Counter,
    /// Export requests that failed (refused, timed out, unreachable): their spans are lost.
    pub failed_exports: Counter,
}

/// Process-wide Prometheus metrics; cheap to record from the hot path.
pub struct Metrics {
    /// Owns the descriptors of every family, for encoding.
    registry: Registry,
    /// Finished proxied requests by route and status.
    requests: Family<RequestLabels, Counter>,
    /// Token rejections by reason.
    rejections: Family<RejectionLabels, Counter>,
    /// Time to the upstream response head by route.
    upstream: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Reload attempts by outcome.
    reloads: Family<ReloadLabels, Counter>,
    /// Times a configured limit refused or cut off a client, by limit.
    limits: Family<LimitLabels, Counter>,
    /// Requests refused by a route's per-caller quota (429), by route and key kind.
    rate_limited: Family<QuotaLabels, Counter>,
    /// Callers a route's quota holds state for in this instance (its table and allowances);
    /// set at scrape time.
    quota_keys: Family<QuotaRouteLabels, Gauge>,
    /// Callers evicted by `max_keys` from a route's current quota tables (each then starts with
    /// a full bucket); set at scrape time, restarts when a reload changes the route's key.
    quota_evicted: Family<QuotaRouteLabels, Gauge>,
    /// Per-route handle cache keyed by route, so repeat records do not allocate.
    routes: RwLock<HashMap<String, Arc<RouteHandles>, foldhash::fast::RandomState>>,
    /// State-store call latency by operation.
    store_duration: Family<StoreOpLabels, Histogram, fn() -> Histogram>,
    /// State-store calls that failed, by operation.
    store_errors: Family<StoreOpLabels, Counter>,
    /// State changes made on the primary but not confirmed by `state.wait_replicas` replicas.
    store_unreplicated: Family<StoreOpLabels, Counter>,
    /// 1 while the denylist follower holds its stream connection, else 0; set at scrape time.
    stream_connected: Family<StreamLabels, Gauge>,
    /// Seconds since the denylist follower last heard from the stream; set at scrape time.
    stream_age: Family<StreamLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Log lines the writer thread dropped (queue full); brought up to date at scrape time.
    log_dropped: Counter,
    /// 1 while a group's endpoint is in its set, 0 while ejected; set at scrape time.
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// Requests sent to a group's endpoint (retries included); set at scrape time.
    endpoint_requests: Family<EndpointLabels, Counter>,
    /// Connect errors, resets, time-outs and 5xx answers of a group's endpoint; set at scrape time.
    endpoint_failures: Family<EndpointLabels, Counter>,
    /// Times a group's endpoint was ejected; set at scrape time.
    endpoint_ejections: Family<EndpointLabels, Counter>,
    /// Requests retried elsewhere after failing at a group's endpoint; set at scrape time.
    endpoint_retries: Family<EndpointLabels, Counter>,
    /// Failures at a group's endpoint not retried because the group's retry budget was spent.
    endpoint_budget_exhausted: Family<EndpointLabels, Counter>,
    /// Held while the endpoint series are rebuilt at scrape time.
    endpoint_scrape: std::sync::Mutex<()>,
    /// Span export: spans dropped (queue full), spans exported, failed export requests.
    pub trace: ExportCounters,
    /// Refresh retries answered within `tokens.refresh_reuse_grace_secs` instead of revoking
    /// their family: how often lost answers happen, and a spike is worth a look.
    pub refresh_reuse_grace: Counter,
    /// Remote key sets: fetches, keys held, refetches; handed to each remote issuer's task.
    pub jwks: JwksMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry with all tokengate metric families registered.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let upstream: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(new_upstream_histogram);
        let reloads = Family::<ReloadLabels, Counter>::default();
        // Both outcomes exist from the start so a rate() over them never sees a missing series.
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create_owned(&ReloadLabels { result });
        }

        let mut registry = Registry::default();
        registry.register(
            "tokengate_requests",
            "Finished proxied requests by route prefix and HTTP status",
            requests.clone(),
        );
        registry.register(
            "tokengate_token_rejections",
            "Requests rejected because of their token, by reason",
            rejections.clone(),
        );
        registry.register_with_unit(
            "tokengate_upstream_duration",
            "Time from sending a request upstream until its response head arrived",
            Unit::Seconds,
            upstream.clone(),
        );
        registry.register("tokengate_reloads", "Config reload attempts by result", reloads.clone());
        let limits = Family::<LimitLabels, Counter>::default();
        for limit in Limit::ALL {
            let _ = limits.get_or_create_owned(&LimitLabels { limit: limit.as_str() });
        }
        registry.register("tokengate_limit_hits", "Clients refused or cut off by a configured limit", limits.clone());
        let rate_limited = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "tokengate_rate_limited",
            "Requests refused (429) by a route's per-caller rate_limit, by route and key kind",
            rate_limited.clone(),
        );

        let quota_keys = Family::<QuotaRouteLabels, Gauge>::default();
        registry.register(
            "tokengate_rate_limit_keys",
            "Callers a route's rate_limit holds state for in this instance",
            quota_keys.clone(),
        );
        let quota_evicted = Family::<QuotaRouteLabels, Gauge>::default();
        registry.register(
            "tokengate_rate_limit_evicted_keys",
            "Callers evicted by max_keys from a route's current rate_limit tables (they start with a full bucket)",
            quota_evicted.clone(),
        );

        let store_duration: Family<StoreOpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(new_store_histogram);
        registry.register_with_unit(
            "tokengate_store_duration",
            "Time a state-store call took, by operation",
            Unit::Seconds,
            store_duration.clone(),
        );
        let store_errors = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "tokengate_store_errors",
            "State-store calls that failed, by operation",
            store_errors.clone(),
        );
        let store_unreplicated = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "tokengate_store_unreplicated",
            "State changes answered 503 because fewer replicas than state.wait_replicas confirmed them",
            store_unreplicated.clone(),
        );
        let stream_connected = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "tokengate_denylist_stream_connected",
            "1 while the denylist stream follower is connected to the shared store",
            stream_connected.clone(),
        );
        let stream_age = Family::<StreamLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "tokengate_denylist_stream_last_event_age",
            "Time since the denylist stream follower last heard from the shared store (it reads at least every 2 s)",
            Unit::Seconds,
            stream_age.clone(),
        );
        let jwks = JwksMetrics::default();
        jwks.register(&mut registry);
        let log_dropped = Counter::default();
        registry.register(
            "tokengate_log_dropped_lines",
            "Log lines dropped because the log writer fell behind (log.queue_lines full)",
            log_dropped.clone(),
        );
        let trace = ExportCounters::default();
        registry.register(
            "tokengate_trace_spans_dropped",
            "Finished spans dropped because tracing.queue_spans were already waiting for export",
            trace.dropped.clone(),
        );
        registry.register(
            "tokengate_trace_spans_exported",
            "Spans accepted by the OTLP collector",
            trace.exported.clone(),
        );
        registry.register(
            "tokengate_trace_export_failures",
            "OTLP export requests that failed (their spans are lost)",
            trace.failed_exports.clone(),
        );

        let refresh_reuse_grace = Counter::default();
        registry.register(
            "tokengate_refresh_reuse_grace",
            "Refresh tokens retried within tokens.refresh_reuse_grace_secs of their rotation: a fresh pair, the one issued before dead",
            refresh_reuse_grace.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "tokengate_upstream_endpoint_healthy",
            "1 while an upstream group's endpoint is in its set, 0 while ejected",
            endpoint_healthy.clone(),
        );
        let endpoint_requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_endpoint_requests",
            "Requests sent to an upstream group's endpoint, retries included",
            endpoint_requests.clone(),
        );
        let endpoint_failures = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_endpoint_failures",
            "Connect errors, resets, time-outs and 5xx answers of an upstream group's endpoint",
            endpoint_failures.clone(),
        );
        let endpoint_ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_endpoint_ejections",
            "Times an upstream group's endpoint was ejected for failures in a row",
            endpoint_ejections.clone(),
        );
        let endpoint_retries = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_endpoint_retries",
            "Requests retried on another endpoint after failing at this one",
            endpoint_retries.clone(),
        );
        let endpoint_budget_exhausted = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_endpoint_retry_budget_exhausted",
            "Requests that failed at this endpoint and were not retried: the group's retry budget was spent",
            endpoint_budget_exhausted.clone(),
        );

        Self {
            registry,
            requests,
            rejections,
            upstream,
            reloads,
            limits,
            rate_limited,
            quota_keys,
            quota_evicted,
            routes: RwLock::new(HashMap::default()),
            store_duration,
            store_errors,
            store_unreplicated,
            stream_connected,
            stream_age,
            log_dropped,
            endpoint_healthy,
            endpoint_requests,
            endpoint_failures,
            endpoint_ejections,
            endpoint_retries,
            endpoint_budget_exhausted,
            endpoint_scrape: std::sync::Mutex::new(()),
            trace,
            refresh_reuse_grace,
            jwks,
        }
    }

    /// Brings `tokengate_log_dropped_lines_total` up to `total` (the writer's own count).
    pub fn observe_log_drops(&self, total: u64) {
        let seen = self.log_dropped.get();
        if total > seen {
            self.log_dropped.inc_by(total - seen);
        }
    }

    /// One finished proxied request: route prefix ("none" when no route matched), HTTP status.
    pub fn record_request(&self, route: &str, status: u16) {
        self.status_counter(route, &self.route_handles(route), status).inc();
    }

    /// The request counter of `route` and `status`, from the route's short list (made on first use).
    fn status_counter(&self, route: &str, handles: &RouteHandles, status: u16) -> Counter {
        let find = |list: &[(u16, Counter)]| list.iter().find(|(s, _)| *s == status).map(|(_, c)| c.clone());
        if let Some(counter) = find(&handles.statuses.read().unwrap_or_else(PoisonError::into_inner)) {
            return counter;
        }
        let mut list = handles.statuses.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = find(&list) {
            return counter;
        }
        let counter = self.requests.get_or_create_owned(&RequestLabels { route: route.to_owned(), status });
        list.push((status, counter.clone()));
        counter
    }

    /// The upstream histogram of `route` (made on first use).
    fn upstream_histogram<'h>(&self, route: &str, handles: &'h RouteHandles) -> &'h Histogram {
        handles.upstream.get_or_init(|| self.upstream.get_or_create_owned(&RouteLabels { route: route.to_owned() }))
    }

    /// Lists every rejection reason at 0, so dashboards and alerts see each series from the start.
    pub fn declare_rejection_reasons(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            let _ = self.rejections.get_or_create_owned(&RejectionLabels { reason });
        }
    }

    /// Lists the routes of a new snapshot: each gets its upstream histogram and a 200 counter
    /// at 0, so every family appears on `/metrics` before the first request.
    pub fn declare_routes<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        for route in prefixes {
            let handles = self.route_handles(route);
            self.upstream_histogram(route, &handles);
            self.status_counter(route, &handles, 200);
        }
    }

    /// One token rejection, by short reason label (e.g. "expired", "bad_signature", "missing").
    pub fn record_rejection(&self, reason: &'static str) {
        self.rejections.get_or_create(&RejectionLabels { reason }).inc();
    }

    /// Time from sending to the upstream until its response head arrived, in seconds, per route.
    pub fn observe_upstream(&self, route: &str, seconds: f64) {
        self.upstream_histogram(route, &self.route_handles(route)).observe(seconds);
    }

    /// A configured limit refused or cut off a client.
    pub fn record_limit(&self, limit: Limit) {
        self.limits.get_or_create(&LimitLabels { limit: limit.as_str() }).inc();
    }

    /// A route's quota refused a request of a caller counted per `key`.
    pub fn record_rate_limited(&self, route: &str, key: &'static str) {
        self.rate_limited.get_or_create(&QuotaLabels { route: route.to_owned(), key }).inc();
    }

    /// A reload attempt finished.
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Lists the store operations at 0 (latency and errors), so alerts see every series from the start.
    pub fn declare_store_ops(&self, ops: impl IntoIterator<Item = &'static str>) {
        for op in ops {
            let _ = self.store_duration.get_or_create_owned(&StoreOpLabels { op });
            let _ = self.store_errors.get_or_create_owned(&StoreOpLabels { op });
        }
    }

    /// A state change the primary made that too few replicas confirmed (answered 503).
    pub fn observe_unreplicated(&self, op: &'static str) {
        self.store_unreplicated.get_or_create(&StoreOpLabels { op }).inc();
    }

    /// One state-store call: how long it took and whether it failed.
    pub fn observe_store(&self, op: &'static str, seconds: f64, ok: bool) {
        self.store_duration.get_or_create(&StoreOpLabels { op }).observe(seconds);
        if !ok {
            self.store_errors.get_or_create(&StoreOpLabels { op }).inc();
        }
    }

    /// The denylist follower of `backend` as of now (connected, seconds since it last heard from
    /// the stream, if ever); called at scrape time.
    pub fn observe_stream(&self, backend: &'static str, connected: bool, age_secs: Option<f64>) {
        let labels = StreamLabels { backend };
        self.stream_connected.get_or_create(&labels).set(i64::from(connected));
        // Never heard from: no sample rather than a reassuring 0.
        if let Some(age) = age_secs {
            self.stream_age.get_or_create(&labels).set(age);
        }
    }

    /// A route's quota state as of now (callers held, callers evicted); called at scrape time.
    pub fn observe_quota(&self, route: &str, keys: usize, evicted: u64) {
        let labels = QuotaRouteLabels { route: route.to_owned() };
        self.quota_keys.get_or_create(&labels).set(keys as i64);
        self.quota_evicted.get_or_create(&labels).set(evicted.min(i64::MAX as u64) as i64);
    }

    /// Every upstream group's endpoints as of now, `(group, endpoint, healthy, [requests,
    /// failures, ejections, retries, retries the budget refused])`: the series of endpoints no longer configured go, and each counter
    /// is set to its endpoint's running total (which a reload keeps while the endpoint stays);
    /// called at scrape time.
    pub fn observe_endpoints<'a>(&self, rows: impl IntoIterator<Item = (&'a str, &'a str, bool, [u64; 5])>) {
        // One scrape at a time: two clearing and adding at once would add twice.
        let _one = self.endpoint_scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let families = [
            &self.endpoint_requests,
            &self.endpoint_failures,
            &self.endpoint_ejections,
            &self.endpoint_retries,
            &self.endpoint_budget_exhausted,
        ];
        self.endpoint_healthy.clear();
        families.iter().for_each(|f| f.clear());
        for (group, endpoint, healthy, totals) in rows {
            let labels = EndpointLabels { group: group.to_owned(), endpoint: endpoint.to_owned() };
            self.endpoint_healthy.get_or_create(&labels).set(i64::from(healthy));
            for (family, total) in families.into_iter().zip(totals) {
                family.get_or_create(&labels).inc_by(total);
            }
        }
    }

    /// Prometheus/OpenMetrics text exposition, ending with the `# EOF` marker.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        out
    }

    /// The cached handles of `route`, created on first use (the only allocation on this path).
    fn route_handles(&self, route: &str) -> Arc<RouteHandles> {
        let cached = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(route).cloned();
        match cached {
            Some(handles) => handles,
            None => {
                self.routes.write().unwrap_or_else(PoisonError::into_inner).entry(route.to_owned()).or_default().clone()
            }
        }
    }
}

#[cfg(test)]
mod tests;
