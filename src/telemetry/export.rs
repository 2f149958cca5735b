//! The export side: the OTLP/HTTP exporter of `opentelemetry-otlp`, sending through our own
//! hyper + rustls client (no reqwest, no gRPC stack), behind our own batching processor.
//!
//! The SDK's `BatchSpanProcessor` wakes its thread for every finished span (a futex wake per
//! span, three per recorded request, measured at several microseconds of the request thread's
//! time). Here a finished span is pushed onto a bounded vector under a mutex, and the export
//! thread is woken only when a batch is full (or by its interval, a flush or the stop). Spans past
//! `tracing.queue_spans` are dropped and counted; the export thread runs each request on a small
//! tokio runtime of its own, so an export never takes a request thread, and a stop that waits for
//! the last export cannot deadlock the runtime it runs on.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use crate::metrics::ExportCounters;

/// A collector's answer is read up to this size (it is a small status message).
const MAX_RESPONSE: usize = 64 * 1024;

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tracing.ca: {0}")]
    Tls(String),
    #[error("tracing: cannot start the export thread: {0}")]
    Thread(std::io::Error),
    #[error("tracing.otlp_endpoint: {0}")]
    Exporter(String),
}

/// OTLP/HTTP over hyper-util's pooled client; runs on the export thread's runtime.
pub struct HyperClient {
    /// Pooled HTTP/1.1 client, TLS when the endpoint is https.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `tracing.export_timeout_ms`: bound on one whole export request.
    timeout: Duration,
    /// Whether the last export failed: a failure is logged when exports start failing, not
    /// for every batch of a collector that stays down (each is counted in the metrics).
    failing: AtomicBool,
}

impl fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HyperClient {
    /// A client trusting `ca` (`tracing.ca`), or the webpki roots, for https endpoints.
    pub fn new(timeout: Duration, ca: Option<&std::path::Path>) -> Result<HyperClient, ExportError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let tls = crate::tls::client_config(ca, "tracing.ca").map_err(|e| ExportError::Tls(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(HyperClient { client, timeout, failing: AtomicBool::new(false) })
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
        // Polled on the export thread's own runtime.
        let url = crate::config::redacted_url(&request.uri().to_string());
        let result = match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis()).into()),
        };
        let failure = match &result {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!("the collector answered {}", resp.status())),
            Err(e) => Some(crate::tls::verify::describe(e.as_ref())),
        };
        match failure {
            Some(why) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(url = %url, error = %why, "span export failed; further failures are counted, not logged, until one succeeds");
            }
            None if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(url = %url, "span export works again")
            }
            _ => {}
        }
        result
    }
}

/// What the request threads and the export thread share.
struct Shared {
    /// Finished spans waiting, and what the export thread is asked to do.
    queue: Mutex<Queue>,
    /// Wakes the export thread: a full batch, a flush, the stop.
    wake: Condvar,
}

/// The queue of finished spans and the requests to the export thread.
#[derive(Default)]
struct Queue {
    /// Finished spans, at most `tracing.queue_spans`.
    spans: Vec<SpanData>,
    /// Each flush (or the stop) waiting for the spans queued before it to be exported.
    flushes: Vec<mpsc::Sender<()>>,
    /// Set by the stop: export what is queued, then end.
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a vector of spans: still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The span processor: a bounded queue, and a thread exporting it in batches.
pub struct Batcher {
    /// Shared with the export thread.
    shared: Arc<Shared>,
    /// `tracing.queue_spans`.
    bound: usize,
    /// `tracing.batch_size`: a full batch wakes the export thread.
    batch_size: usize,
    /// Where drops are counted.
    counters: ExportCounters,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").field("bound", &self.bound).field("batch_size", &self.batch_size).finish()
    }
}

impl Batcher {
    /// Asks the export thread to export everything queued now (and to stop after, if `stop`);
    /// waits for it at most `timeout`.
    fn flush(&self, stop: bool, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.lock();
            if q.stop {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            q.flushes.push(tx);
            q.stop = stop;
        }
        self.shared.wake.notify_one();
        rx.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for Batcher {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut q = self.shared.lock();
        if q.stop || q.spans.len() >= self.bound {
            drop(q);
            self.counters.dropped.inc();
            return;
        }
        q.spans.push(span);
        let full = q.spans.len() == self.batch_size;
        drop(q);
        if full {
            self.shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(false, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(true, timeout)
    }
}

/// The export thread: waits for a full batch, the interval, a flush or the stop; exports what is
/// queued in batches of at most `batch_size`; ends after the stop.
fn export_loop<E: SpanExporter>(
    shared: Arc<Shared>,
    exporter: E,
    runtime: tokio::runtime::Runtime,
    interval: Duration,
    batch_size: usize,
    counters: ExportCounters,
) {
    loop {
        let (mut spans, flushes, stop) = {
            let mut q = shared.lock();
            let deadline = Instant::now() + interval;
            while q.spans.len() < batch_size && q.flushes.is_empty() && !q.stop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                q = shared.wake.wait_timeout(q, deadline - now).map_or_else(|e| e.into_inner().0, |(q, _)| q);
            }
            (std::mem::take(&mut q.spans), std::mem::take(&mut q.flushes), q.stop)
        };
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(batch_size));
            let n = spans.len() as u64;
            match runtime.block_on(exporter.export(std::mem::replace(&mut spans, rest))) {
                Ok(()) => {
                    counters.exported.inc_by(n);
                }
                Err(e) => {
                    // Logged by the client, once per run of failures, with its URL and status.
                    counters.failed_exports.inc();
                    tracing::debug!(error = %e, spans = n, "span export failed");
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if stop {
            let _ = exporter.shutdown();
            return;
        }
    }
}

/// The processor for `cfg`: bounded queue, batches, OTLP/HTTP protobuf to `endpoint`.
pub fn processor(
    cfg: &crate::config::TracingConfig,
    endpoint: &str,
    ca: Option<&std::path::Path>,
    resource: &Resource,
    counters: ExportCounters,
) -> Result<Batcher, ExportError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};

    let timeout = Duration::from_millis(cfg.export_timeout_ms);
    let mut otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .with_headers(cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .with_http_client(HyperClient::new(timeout, ca)?)
        .build()
        .map_err(|e| ExportError::Exporter(e.to_string()))?;
    otlp.set_resource(resource);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ExportError::Thread)?;
    let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), wake: Condvar::new() });
    let (interval, batch_size) = (Duration::from_millis(cfg.export_interval_ms), cfg.batch_size);
    let (thread_shared, thread_counters) = (shared.clone(), counters.clone());
    std::thread::Builder::new()
        .name("tokengate-otlp".into())
        .spawn(move || export_loop(thread_shared, otlp, runtime, interval, batch_size, thread_counters))
        .map_err(ExportError::Thread)?;
    Ok(Batcher { shared, bound: cfg.queue_spans, batch_size, counters })
}
