//! Distributed tracing: the W3C trace context of each request (taken from trusted callers or
//! started), the `traceparent` sent upstream, and, when `tracing.otlp_endpoint` is set, spans for
//! the request, its authorization, its upstream call and token grants, exported over OTLP/HTTP.
//!
//! Nothing here knows requests beyond headers: the proxy and the token endpoint say what to
//! record. Off (no endpoint), a request costs one header parse, a few random bytes and one
//! header written; no span object is made.

mod export;
pub mod traceparent;

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider, Span};

pub use export::ExportError;

use crate::metrics::ExportCounters;
use traceparent::TRACEPARENT;

/// The process-wide tracer: built once at start from `[tracing]` (a restart-only section).
pub struct Telemetry {
    /// Makes the spans; None when `tracing.otlp_endpoint` is unset (nothing recorded).
    tracer: Option<SdkTracer>,
    /// Owns the batch processor, flushed and stopped by [`Telemetry::shutdown`].
    provider: Option<SdkTracerProvider>,
    /// `tracing.sample_ratio` as a bound on a new trace id's low 63 bits (as the SDK's
    /// TraceIdRatioBased reads it): the head sampling decision of a new trace.
    threshold: u64,
}

impl Telemetry {
    /// Tracing as `cfg` sets it up; the exporter, if any, starts its own thread.
    /// `ca` is `tracing.ca`, resolved against the config file's folder.
    pub fn new(
        cfg: &crate::config::TracingConfig,
        ca: Option<&std::path::Path>,
        counters: ExportCounters,
    ) -> Result<Telemetry, ExportError> {
        let threshold = ratio_threshold(cfg.sample_ratio);
        let Some(endpoint) = cfg.traces_url() else {
            return Ok(Telemetry { tracer: None, provider: None, threshold });
        };
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", cfg.service_name.clone()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let processor = export::processor(cfg, &endpoint, ca, &resource, counters)?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // Only sampled requests reach the SDK (see `start`): a new trace is always kept there
            // (it gets the SDK's own id), a continued one follows its caller's flag.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("tokengate");
        Ok(Telemetry { tracer: Some(tracer), provider: Some(provider), threshold })
    }

    /// Tracing off: only propagation (for tests and tools that build a gateway by hand).
    pub fn off() -> Telemetry {
        Telemetry { tracer: None, provider: None, threshold: ratio_threshold(1.0) }
    }

    /// Whether spans are recorded and exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports what is still queued (bounded by the export timeout) and stops the exporter.
    /// Blocking: call off the async threads.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(15)) {
                tracing::warn!(error = %e, "tracing: flushing spans at shutdown failed");
            }
        }
    }

    /// The trace of one request: the caller's when `trusted` (`server.trust_forwarded`) and its
    /// `traceparent` is valid, else a new one; the request span starts now when recording.
    pub fn start(&self, headers: &HeaderMap, trusted: bool) -> RequestTrace {
        let incoming =
            if trusted { headers.get(&TRACEPARENT).and_then(|v| traceparent::parse(v.as_bytes())) } else { None };
        let continued = incoming.is_some();
        // The head decision is made here, before the SDK is involved: an unsampled request (most
        // of them at a low ratio) costs a random id and nothing more.
        let (trace_id, flags) = match incoming {
            Some(p) => (p.trace_id, p.flags),
            None => {
                let id = RandomIdGenerator::default().new_trace_id();
                (id, if self.samples(id) { TraceFlags::SAMPLED } else { TraceFlags::default() })
            }
        };
        let tracer = match &self.tracer {
            Some(tracer) if flags.is_sampled() => tracer,
            _ => return RequestTrace { trace_id, flags, continued, recording: None },
        };
        let parent = match incoming {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                p.trace_id,
                p.parent_id,
                p.flags,
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        let span = tracer.span_builder("request").with_kind(SpanKind::Server).start_with_context(tracer, &parent);
        let sc = span.span_context();
        let (trace_id, flags) = (sc.trace_id(), sc.trace_flags() & TraceFlags::SAMPLED);
        let recording = span.is_recording().then(|| Box::new((tracer.clone(), span)));
        RequestTrace { trace_id, flags, continued, recording }
    }

    /// The head sampling decision for a new trace.
    fn samples(&self, id: TraceId) -> bool {
        let bytes = id.to_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        (u64::from_be_bytes(low) >> 1) < self.threshold
    }
}

/// `ratio` of 2^63 (1.0 is every id).
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * (1u64 << 63) as f64) as u64
    }
}

/// One request's trace: what the access log and the upstream are told, and its spans.
pub struct RequestTrace {
    /// The trace this request belongs to.
    trace_id: TraceId,
    /// The trace flags sent upstream (only the sampled bit).
    flags: TraceFlags,
    /// The caller's trace context was trusted and valid: its `tracestate` goes upstream too.
    continued: bool,
    /// The tracer and the request span, when this request is recorded (exporting and sampled);
    /// boxed so that an unrecorded request's future does not carry a span's size.
    recording: Option<Box<(SdkTracer, Span)>>,
}

impl Default for RequestTrace {
    fn default() -> Self {
        RequestTrace { trace_id: TraceId::INVALID, flags: TraceFlags::default(), continued: false, recording: None }
    }
}

impl RequestTrace {
    /// The trace id as 32 lowercase hex digits, for the access log.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        traceparent::trace_id_hex(self.trace_id)
    }

    /// Whether spans of this request are recorded.
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Whether the caller's `tracestate` may be passed on (its trace context was continued).
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// A child span of the request span, started now; None when not recording.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Option<Span> {
        let (tracer, parent) = self.recording.as_deref()?;
        let cx = Context::new().with_remote_span_context(parent.span_context().clone());
        Some(tracer.span_builder(name).with_kind(kind).start_with_context(tracer, &cx))
    }

    /// The `traceparent` for the upstream: this trace, with `span` (the upstream call's span)
    /// as the parent, or a new span id when nothing is recorded.
    pub fn traceparent(&self, span: Option<&Span>) -> HeaderValue {
        let span_id = match span {
            Some(s) => s.span_context().span_id(),
            None => RandomIdGenerator::default().new_span_id(),
        };
        let span_id = if span_id == SpanId::INVALID { RandomIdGenerator::default().new_span_id() } else { span_id };
        traceparent::format(self.trace_id, span_id, self.flags)
    }

    /// Ends the request span with what the access log also records.
    pub fn finish(&mut self, method: &http::Method, route: &str, status: u16) {
        let Some(recording) = self.recording.take() else { return };
        let (_, mut span) = *recording;
        span.update_name(Cow::Owned(format!("{method} {route}")));
        span.set_attributes([
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ]);
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}
