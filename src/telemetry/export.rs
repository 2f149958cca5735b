//! The export side: the OTLP/HTTP exporter of `opentelemetry-otlp` behind the SDK's batch
//! processor, sending through our own hyper + rustls client (no reqwest, no gRPC stack), with a
//! bounded queue whose drops are counted.
//!
//! The batch processor runs its own thread and blocks on each export; the client runs each
//! request on a small tokio runtime of its own, so an export never takes a request thread and
//! a shutdown that waits for the last export cannot deadlock the runtime it runs on.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;

/// A collector's answer is read up to this size (it is a small status message).
const MAX_RESPONSE: usize = 64 * 1024;

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tracing.otlp_endpoint: {0}")]
    Tls(String),
    #[error("tracing: cannot start the exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("tracing.otlp_endpoint: {0}")]
    Exporter(String),
}

/// Counters of the export path, registered in the admin metrics.
#[derive(Clone, Default)]
pub struct ExportCounters {
    /// Spans dropped because `tracing.queue_spans` were already waiting.
    pub dropped: Counter,
    /// Spans handed to the collector in exports that succeeded.
    pub exported: Counter,
    /// Export requests that failed (refused, timed out, unreachable): their spans are lost.
    pub failed_exports: Counter,
}

/// OTLP/HTTP over hyper-util's pooled client, on a dedicated current-thread runtime.
pub struct HyperClient {
    /// Pooled HTTP/1.1 client, TLS when the endpoint is https.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Runs the requests: the batch processor's thread blocks on them here.
    runtime: tokio::runtime::Runtime,
    /// `tracing.export_timeout_ms`: bound on one whole export request.
    timeout: Duration,
}

impl fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HyperClient {
    /// A client trusting the webpki roots for https endpoints.
    pub fn new(timeout: Duration) -> Result<HyperClient, ExportError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tokengate-otlp")
            .build()
            .map_err(ExportError::Runtime)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let tls = crate::tls::client_config(None).map_err(|e| ExportError::Tls(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(HyperClient { client, runtime, timeout })
    }

    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self.client.request(http::Request::from_parts(parts, Full::new(body))).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        // Called on the batch processor's own thread (never inside a tokio runtime): the request
        // runs to completion on this client's runtime.
        self.runtime.block_on(async {
            match tokio::time::timeout(self.timeout, self.send(request)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis()).into()),
            }
        })
    }
}

/// The OTLP exporter, counting what it sends and what fails, and releasing queue places.
#[derive(Debug)]
pub struct Counted<E> {
    /// The OTLP/HTTP exporter.
    inner: E,
    /// Spans handed to the batch processor and not yet taken by an export.
    pending: Arc<AtomicUsize>,
    /// Where outcomes are counted.
    counters: Counters,
}

/// `ExportCounters` with a Debug the SDK's traits ask for.
#[derive(Clone)]
struct Counters(ExportCounters);

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counters")
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.pending.fetch_sub(n, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.counters.0.exported.inc_by(n as u64);
            }
            Err(e) => {
                self.counters.0.failed_exports.inc();
                tracing::warn!(error = %e, spans = n, "span export failed");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The batch processor behind our own bound: a span finding `bound` spans already pending is
/// dropped here and counted (the processor's own count is not readable), so its queue, sized
/// larger, never fills.
#[derive(Debug)]
pub struct Bounded<P> {
    /// The SDK's batch processor.
    inner: P,
    /// Shared with [`Counted`], which releases places as exports take spans.
    pending: Arc<AtomicUsize>,
    /// `tracing.queue_spans`.
    bound: usize,
    /// Where drops are counted.
    counters: Counters,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.bound {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.counters.0.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The processor chain for `cfg`: bound, batch, count, OTLP/HTTP protobuf.
pub fn processor(
    cfg: &crate::config::TracingConfig,
    endpoint: &str,
    counters: ExportCounters,
) -> Result<impl SpanProcessor, ExportError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};

    let timeout = Duration::from_millis(cfg.export_timeout_ms);
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .with_headers(cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .with_http_client(HyperClient::new(timeout)?)
        .build()
        .map_err(|e| ExportError::Exporter(e.to_string()))?;
    let pending = Arc::new(AtomicUsize::new(0));
    let counters = Counters(counters);
    let exporter = Counted { inner: otlp, pending: pending.clone(), counters: counters.clone() };
    let batch = BatchConfigBuilder::default()
        // Room beyond our bound: spans already taken for export are no longer counted pending.
        .with_max_queue_size(cfg.queue_spans + cfg.batch_size)
        .with_max_export_batch_size(cfg.batch_size)
        .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
        .build();
    let inner = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    Ok(Bounded { inner, pending, bound: cfg.queue_spans, counters })
}
