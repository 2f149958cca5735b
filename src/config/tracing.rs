//! `[tracing]`: distributed tracing (W3C Trace Context propagation, spans exported over
//! OTLP/HTTP). Off by default: without `otlp_endpoint` no span is recorded or exported; the
//! `traceparent` sent upstream is still made (see docs/tracing.md).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::ConfigError;

/// `[tracing]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans are sent: an OTLP/HTTP traces URL (`http://collector:4318/v1/traces`), or a
    /// collector's base URL without a path, to which `/v1/traces` is added; unset, nothing is
    /// recorded or exported (the default). See [`TracingConfig::traces_url`].
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces recorded, 0.0 to 1.0; a trusted incoming `traceparent`'s sampled
    /// flag decides for the traces it continues.
    pub sample_ratio: f64,
    /// `service.name` of the exported resource: how the collector's UI names this gateway.
    pub service_name: String,
    /// Deadline of one export request; a slower collector costs that batch, never a request.
    pub export_timeout_ms: u64,
    /// Most spans in one export request.
    pub batch_size: usize,
    /// Most finished spans waiting for export; past it spans are dropped and counted in
    /// `tokengate_trace_spans_dropped_total`, so a stuck collector cannot grow memory.
    pub queue_spans: usize,
    /// Longest a finished span waits before its batch is sent.
    pub export_interval_ms: u64,
    /// Extra headers on every export request (a hosted collector's API key, say).
    pub headers: BTreeMap<String, String>,
    /// PEM file trusted for an `https://` collector instead of the public roots: its CAs, or the
    /// collector's own certificate (a self-hosted collector with a private CA).
    pub ca: Option<std::path::PathBuf>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "tokengate".into(),
            export_timeout_ms: 10_000,
            batch_size: 512,
            queue_spans: 2048,
            export_interval_ms: 5000,
            headers: BTreeMap::new(),
            ca: None,
        }
    }
}

impl TracingConfig {
    /// The URL spans are posted to: `otlp_endpoint` as given when it has a path, else with
    /// `/v1/traces` added, as the OpenTelemetry SDK does for the generic endpoint
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318` is how collectors are usually named;
    /// posted as is, it reaches `/`, which a collector answers 404).
    pub fn traces_url(&self) -> Option<String> {
        let url = self.otlp_endpoint.as_deref()?;
        let Ok(uri) = url.parse::<http::Uri>() else { return Some(url.to_owned()) };
        if !matches!(uri.path(), "" | "/") {
            return Some(url.to_owned());
        }
        // Inserted before a query, if any; the scheme and authority are kept as written.
        let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
        let mut out = format!("{}/v1/traces", base.trim_end_matches('/'));
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("tracing.{m}")));
        if let Some(url) = &self.otlp_endpoint {
            if let Err(why) = check_endpoint(url) {
                return bad(format!("otlp_endpoint {url:?} {why}"));
            }
        }
        if self.ca.is_some() && !self.otlp_endpoint.as_deref().is_some_and(|u| u.starts_with("https://")) {
            return bad("ca: only used with an https:// otlp_endpoint".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad(format!("sample_ratio {} must be between 0.0 and 1.0", self.sample_ratio));
        }
        if self.service_name.trim().is_empty() {
            return bad("service_name must not be empty".into());
        }
        if self.export_timeout_ms == 0 || self.export_timeout_ms > 60_000 {
            return bad("export_timeout_ms must be between 1 and 60000".into());
        }
        if self.queue_spans == 0 || self.queue_spans > 1_000_000 {
            return bad("queue_spans must be between 1 and 1000000".into());
        }
        if self.batch_size == 0 || self.batch_size > self.queue_spans {
            return bad("batch_size must be between 1 and queue_spans".into());
        }
        if self.export_interval_ms == 0 || self.export_interval_ms > 60_000 {
            return bad("export_interval_ms must be between 1 and 60000".into());
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!("headers: {name:?} is not a header name"));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return bad(format!("headers: the value of {name:?} is not a valid header value"));
            }
        }
        Ok(())
    }

    /// Whether spans are recorded and exported.
    pub fn exporting(&self) -> bool {
        self.otlp_endpoint.is_some()
    }
}

/// Why `url` cannot be an OTLP/HTTP endpoint, if it cannot.
fn check_endpoint(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must be an http:// or https:// URL (OTLP/HTTP; gRPC is not supported)");
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TracingConfig, String> {
        let cfg: TracingConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map(|()| cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let cfg = parse("").expect("defaults");
        assert!(!cfg.exporting());
        assert_eq!(cfg.sample_ratio, 1.0);
        assert_eq!(cfg.service_name, "tokengate");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        for (text, key) in [
            ("otlp_endpoint = \"grpc://x:4317\"", "tracing.otlp_endpoint"),
            ("otlp_endpoint = \"not a url\"", "tracing.otlp_endpoint"),
            ("sample_ratio = 1.5", "tracing.sample_ratio"),
            ("sample_ratio = -0.1", "tracing.sample_ratio"),
            ("sample_ratio = nan", "tracing.sample_ratio"),
            ("service_name = \" \"", "tracing.service_name"),
            ("export_timeout_ms = 0", "tracing.export_timeout_ms"),
            ("queue_spans = 0", "tracing.queue_spans"),
            ("batch_size = 4096", "tracing.batch_size"),
            ("export_interval_ms = 0", "tracing.export_interval_ms"),
            ("headers = { \"bad name\" = \"x\" }", "tracing.headers"),
            ("otlp_endpoint = \"http://c:4318\"\nca = \"ca.pem\"", "tracing.ca"),
            ("ca = \"ca.pem\"", "tracing.ca"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(key), "{text}: {err}");
        }
        assert!(parse("otlp_endpoint = \"https://collector.example:4318/v1/traces\"").is_ok());
    }

    #[test]
    fn a_base_url_gets_the_traces_path_and_a_full_url_is_kept() {
        let url = |e: &str| TracingConfig { otlp_endpoint: Some(e.into()), ..TracingConfig::default() }.traces_url();
        for (given, posted) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            ("https://otlp.example?tenant=a", "https://otlp.example/v1/traces?tenant=a"),
            ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
            ("http://gw.example/otlp/v1/traces", "http://gw.example/otlp/v1/traces"),
            ("http://gw.example/custom", "http://gw.example/custom"),
        ] {
            assert_eq!(url(given).as_deref(), Some(posted), "{given}");
        }
        assert_eq!(TracingConfig::default().traces_url(), None);
    }
}
