//! Distributed tracing over the wire: the W3C `traceparent` the upstream sees (the caller's
//! trace only from a trusted peer, always a new span id), spans exported over OTLP/HTTP to an
//! in-test receiver that decodes them with the official protobuf types, sampling, the access
//! log's `trace_id`, and the flush of queued spans at a graceful stop.

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use common::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn incoming(flags: &str) -> String {
    format!("00-{TRACE}-{PARENT}-{flags}")
}

/// An OTLP/HTTP traces receiver: decodes every POST to `/v1/traces` as
/// `ExportTraceServiceRequest`, and answers 404 at any other path, as a collector does.
struct Receiver {
    /// Where the gateway sends its exports.
    addr: SocketAddr,
    /// Every span received, with its resource's `service.name`.
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    /// Content types of the requests (must be protobuf).
    content_types: Arc<Mutex<Vec<String>>>,
    /// The path of every request, in order.
    paths: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (s, c, p) = (spans.clone(), content_types.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (s, c, p) = (s.clone(), c.clone(), p.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let (s, c, p) = (s.clone(), c.clone(), p.clone());
                        async move {
                            p.lock().unwrap().push(req.uri().path().to_owned());
                            if req.uri().path() != "/v1/traces" {
                                let not_found = http::Response::builder().status(404).body(Full::new(Bytes::new()));
                                return Ok(not_found.expect("response"));
                            }
                            let ct = req.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned());
                            c.lock().unwrap().push(ct.unwrap_or_default());
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .as_ref()
                                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                                        AnyValue::StringValue(v) => Some(v.clone()),
                                        _ => None,
                                    })
                                    .unwrap_or_default();
                                for ss in rs.scope_spans {
                                    for span in ss.spans {
                                        s.lock().unwrap().push((service.clone(), span));
                                    }
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(answer)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, spans, content_types, paths }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
    }

    /// Waits until at least `n` spans arrived (panics after 10 s).
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} spans, got {:?}", self.spans().iter().map(|s| &s.name).collect::<Vec<_>>());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The string (or integer, as text) attribute `key` of `span`.
fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

/// `traceparent` split into (version, trace id, span id, flags).
fn parts(tp: &str) -> (String, String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{tp}");
    (p[0].into(), p[1].into(), p[2].into(), p[3].into())
}

fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!("\n[tracing]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 50\nservice_name = \"gw-under-test\"\n{extra}\n")
}

async fn gateway(trusted: bool, up: &Upstream, tracing: &str) -> Gw {
    let server = if trusted { "trust_forwarded = true" } else { "" };
    let rest = format!(
        "{}{}{tracing}",
        route("/api", &up.url(), ""),
        client("svc", &secret_hash(SECRET), &["client_credentials"], &["read"], &["read"])
    );
    Gw::start_config(&Config::new().server(server).rest(&rest)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_callers_trace_goes_on_upstream_with_a_new_span_id() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = gateway(true, &up, "").await;
    let tok = gw.mint("alice", "");
    let auth = format!("Bearer {tok}");
    let tp = incoming("01");
    let r = gw.get("/api/x", &[("authorization", &auth), ("traceparent", &tp), ("tracestate", "vendor=abc")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    let (version, trace, span, flags) = parts(seen.header("traceparent").expect("a traceparent upstream"));
    assert_eq!((version.as_str(), trace.as_str(), flags.as_str()), ("00", TRACE, "01"));
    assert_ne!(span, PARENT, "the gateway's own span id, not the caller's");
    assert_ne!(span, "0000000000000000");
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"), "tracestate goes with its trace");

    // An unsampled caller stays unsampled; each request gets its own span id.
    gw.get("/api/y", &[("authorization", &auth), ("traceparent", &incoming("00"))]).await;
    let (_, trace2, span2, flags2) = parts(up.last().header("traceparent").expect("traceparent"));
    assert_eq!((trace2.as_str(), flags2.as_str()), (TRACE, "00"));
    assert_ne!(span2, span);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_malformed_traceparent_starts_a_new_trace() {
    let up = Upstream::start(Mode::Ok).await;
    let untrusted = gateway(false, &up, "").await;
    let auth = format!("Bearer {}", untrusted.mint("alice", ""));
    let r = untrusted
        .get("/api/x", &[("authorization", &auth), ("traceparent", &incoming("01")), ("tracestate", "vendor=abc")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    let (_, trace, span, _) = parts(seen.header("traceparent").expect("a traceparent upstream"));
    assert_ne!(trace, TRACE, "an untrusted caller cannot choose the trace");
    assert_ne!(span, PARENT);
    assert_eq!(seen.header("tracestate"), None, "the untrusted tracestate is not passed on");

    // Without any traceparent: a new trace too, and a different one per request.
    untrusted.get("/api/x", &[("authorization", &auth)]).await;
    let (_, fresh, _, _) = parts(up.last().header("traceparent").expect("traceparent"));
    assert_ne!(fresh, trace);

    let trusted = gateway(true, &up, "").await;
    let auth = format!("Bearer {}", trusted.mint("alice", ""));
    for bad in [
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-00000000000000000000000000000000-{PARENT}-01"),
        format!("00-{TRACE}-0000000000000000-01"),
        format!("01-{TRACE}-{PARENT}-01"),
        format!("00-{TRACE}-{PARENT}-1"),
        format!("00-{TRACE}-{PARENT}"),
        "garbage".to_string(),
    ] {
        let r = trusted.get("/api/x", &[("authorization", &auth), ("traceparent", &bad), ("tracestate", "v=1")]).await;
        assert_eq!(r.status, 200, "a malformed traceparent is no error: {bad}");
        let seen = up.last();
        let (version, trace, _, _) = parts(seen.header("traceparent").expect("traceparent"));
        assert_eq!(version, "00");
        assert_ne!(trace.to_lowercase(), TRACE, "{bad} was taken");
        assert_ne!(trace, "00000000000000000000000000000000");
        assert_eq!(seen.header("tracestate"), None, "{bad}: tracestate without its traceparent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_protobuf() {
    let rx = Receiver::start().await;
    let up = Upstream::start(Mode::Ok).await;
    let gw = gateway(true, &up, &tracing_section(&rx.url(), "")).await;
    let tok = gw.mint("alice", "");
    let auth = format!("Bearer {tok}");
    let r = gw.get("/api/one", &[("authorization", &auth), ("traceparent", &incoming("01"))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let upstream_tp = up.last().header("traceparent").expect("traceparent").to_owned();
    let spans = rx.wait_for(3).await;
    assert!(rx.content_types.lock().unwrap().iter().all(|c| c == "application/x-protobuf"));
    assert!(rx.spans.lock().unwrap().iter().all(|(service, _)| service == "gw-under-test"), "service.name");

    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span"));
    let request = find("GET /api");
    let authorize = find("authorize");
    let upstream = find("upstream");
    for s in [request, authorize, upstream] {
        assert_eq!(hex(&s.trace_id), TRACE, "{}: the caller's trace", s.name);
    }
    assert_eq!(hex(&request.parent_span_id), PARENT, "the request span's parent is the caller's span");
    assert_eq!(authorize.parent_span_id, request.span_id);
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert_ne!(hex(&request.span_id), PARENT);
    // The upstream is told the upstream call's span as its parent.
    let (_, _, sent_span, flags) = parts(&upstream_tp);
    assert_eq!((sent_span, flags.as_str()), (hex(&upstream.span_id), "01"));
    assert_eq!(attr(request, "http.route").as_deref(), Some("/api"));
    assert_eq!(attr(request, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(request, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(upstream, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(authorize, "tokengate.authz.token_check").as_deref(), Some("signature_verify"));
    assert_eq!(attr(authorize, "tokengate.authz.result").as_deref(), Some("allowed"));
    // Kinds: server, internal, client.
    assert_eq!((request.kind, authorize.kind, upstream.kind), (2, 1, 3));

    // The same token again: answered from the verified-token cache. A new trace (no traceparent).
    gw.get("/api/two", &[("authorization", &auth)]).await;
    let spans = rx.wait_for(6).await;
    let second: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) != TRACE).collect();
    let authorize = second.iter().find(|s| s.name == "authorize").expect("second authorize span");
    assert_eq!(attr(authorize, "tokengate.authz.token_check").as_deref(), Some("cache_hit"));
    let request = second.iter().find(|s| s.name == "GET /api").expect("second request span");
    assert!(request.parent_span_id.is_empty(), "a new trace has a root span");

    // A refused token: the authorization span says so and why.
    gw.get("/api/three", &[("authorization", "Bearer not.a.token")]).await;
    let spans = rx.wait_for(8).await;
    let refused = spans.iter().find(|s| attr(s, "tokengate.authz.result").as_deref() == Some("refused"));
    assert!(refused.is_some_and(|s| attr(s, "tokengate.authz.reason").is_some()), "refused authorization span");

    // A token grant: its grant type and client id, never the secret or the token.
    let form = encode_form(&[("grant_type", "client_credentials"), ("scope", "read")]);
    let mut c = gw.tls(false).await;
    let r = c
        .send(req(
            "POST",
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &basic_header("svc", SECRET))],
            full(form),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let issued: Value = serde_json::from_str(&r.text()).expect("json");
    let access = issued["access_token"].as_str().expect("access_token").to_owned();
    let spans = rx.wait_for(10).await;
    let token = spans.iter().find(|s| s.name == "token").expect("token span");
    assert_eq!(attr(token, "oauth.grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(attr(token, "oauth.client_id").as_deref(), Some("svc"));
    assert_eq!(attr(token, "oauth.result").as_deref(), Some("issued"));
    let oauth_request = spans.iter().find(|s| s.name == "POST oauth").expect("token endpoint request span");
    assert_eq!(token.parent_span_id, oauth_request.span_id);
    let everything = format!("{spans:?}");
    for secret in [SECRET, access.as_str(), tok.as_str(), tok.split('.').nth(2).unwrap_or("-")] {
        assert!(!everything.contains(secret), "a secret or token reached the spans");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_ratio_zero_exports_nothing_but_a_sampled_trusted_caller_is_honoured() {
    let rx = Receiver::start().await;
    let up = Upstream::start(Mode::Ok).await;
    let gw = gateway(true, &up, &tracing_section(&rx.url(), "sample_ratio = 0.0")).await;
    let auth = format!("Bearer {}", gw.mint("alice", ""));
    for i in 0..20 {
        let r = gw.get(&format!("/api/{i}"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200);
        let (_, _, _, flags) = parts(up.last().header("traceparent").expect("traceparent"));
        assert_eq!(flags, "00", "an unsampled trace is said to be unsampled");
    }
    // Ten export intervals: nothing arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.spans().len(), 0, "sample_ratio = 0 exported spans");
    // The caller's sampled flag decides for the trace it started (parent-based sampling).
    gw.get("/api/sampled", &[("authorization", &auth), ("traceparent", &incoming("01"))]).await;
    let spans = rx.wait_for(3).await;
    assert!(spans.iter().all(|s| hex(&s.trace_id) == TRACE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tracing_keys_are_one_sentence_naming_the_key() {
    for (extra, key) in [
        ("otlp_endpoint = \"grpc://127.0.0.1:4317\"", "tracing.otlp_endpoint"),
        ("sample_ratio = 2.0", "tracing.sample_ratio"),
        ("queue_spans = 0", "tracing.queue_spans"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, Config::new().rest(&format!("\n[tracing]\n{extra}\n")).text()).unwrap();
        let err = tokengate::server::start(config).await.err().expect("refused").to_string();
        assert!(err.contains(key) && !err.contains('\n'), "{extra}: {err}");
    }
}

/// The real binary: the access line carries the trace id the upstream was sent, and spans still
/// queued at a graceful stop (a long export interval) are exported before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_the_trace_id_and_a_stop_flushes_the_spans() {
    let rx = Receiver::start().await;
    let up = Upstream::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    let tracing = format!("\n[tracing]\notlp_endpoint = \"{}\"\nexport_interval_ms = 60000\n", rx.url());
    let text = Config::new()
        .server("trust_forwarded = true")
        .log("format = \"json\"\nlevel = \"info\"\nfile = \"gateway.log\"")
        .rest(&format!("{}{tracing}", route("/api", &up.url(), "")))
        .text();
    std::fs::write(&config, text).unwrap();
    let mut p = Proc::spawn_logging(&config, Some(&log));
    let tok = tokengate::commands::mint(
        &config,
        &tokengate::commands::MintRequest { sub: "alice", scope: "", ttl: Some(600), aud: None, client_id: None },
    )
    .unwrap();
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let mut conn = Conn::tls(p.https, std::slice::from_ref(&cert), false).await;
    let auth = format!("Bearer {tok}");
    let r =
        conn.send(req("GET", "/api/a", &[("authorization", &auth), ("traceparent", &incoming("01"))], empty())).await;
    assert_eq!(r.status, 200);
    let r = conn.send(req("GET", "/api/b", &[("authorization", &auth)], empty())).await;
    assert_eq!(r.status, 200);
    let (_, fresh, _, _) = parts(up.last().header("traceparent").expect("traceparent"));
    drop(conn);
    assert!(rx.spans().is_empty(), "nothing exported before the interval or the stop");
    let ok = std::process::Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).unwrap();
    let access: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    assert_eq!(access[0]["trace_id"], TRACE, "the caller's trace id is logged");
    assert_eq!(access[1]["trace_id"].as_str(), Some(fresh.as_str()), "a new trace's id is logged");
    // Flushed at the stop: 3 spans for each request.
    let spans = rx.wait_for(6).await;
    assert!(spans.iter().any(|s| hex(&s.trace_id) == TRACE));
    assert!(spans.iter().any(|s| hex(&s.trace_id) == fresh));
}

/// A collector that takes the connection and never answers: exports hang until their timeout,
/// the queue fills, and further spans are dropped and counted; requests do not wait for any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_costs_spans_not_requests() {
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = stuck.accept().await {
            held.push(conn);
        }
    });
    let up = Upstream::start(Mode::Ok).await;
    let extra = "queue_spans = 3\nbatch_size = 3\nexport_timeout_ms = 2000";
    let gw = gateway(false, &up, &tracing_section(&format!("http://{stuck_addr}/v1/traces"), extra)).await;
    let auth = format!("Bearer {}", gw.mint("alice", ""));
    let started = std::time::Instant::now();
    for i in 0..10 {
        let r = gw.get(&format!("/api/{i}"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "requests waited for the collector: {:?}", started.elapsed());
    let metrics = raw(gw.admin, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let dropped = sample(&metrics.body_text(), "tokengate_trace_spans_dropped_total");
    // 30 spans; at most 3 in the export that hangs and 3 queued behind it.
    assert!(dropped >= 24, "dropped spans are counted: {dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_edits_tracing_keeps_the_running_exporter_and_says_restart() {
    let rx = Receiver::start().await;
    let up = Upstream::start(Mode::Ok).await;
    let gw = gateway(false, &up, &tracing_section(&rx.url(), "sample_ratio = 1.0")).await;
    let auth = format!("Bearer {}", gw.mint("alice", ""));
    assert_eq!(gw.get("/api/before", &[("authorization", &auth)]).await.status, 200);
    rx.wait_for(1).await;

    // Sampling off and another collector, plus a new route, in one edit: the route applies, the
    // tracing keys wait for a restart and are named.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let edited =
        text.replace("sample_ratio = 1.0", "sample_ratio = 0.0").replace(&rx.url(), "http://127.0.0.1:9/v1/traces")
            + &route("/api2", &up.url(), "");
    let generation = gw.generation().await;
    std::fs::write(&gw.config, edited).unwrap();
    let doc = gw.wait_generation_above(generation, 10).await;
    assert_eq!(doc["restart_required"], serde_json::json!(["tracing"]), "{doc}");
    assert_eq!(gw.get("/api2/x", &[("authorization", &auth)]).await.status, 200, "the rest of the edit applied");

    // Still sampled, still exported to the collector the process started with.
    let (_, trace, _, flags) = parts(up.last().header("traceparent").expect("traceparent"));
    assert_eq!(flags, "01", "sample_ratio = 0.0 applied without a restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !rx.spans().iter().any(|s| hex(&s.trace_id) == trace && s.name == "GET /api2") {
        assert!(std::time::Instant::now() < deadline, "the request after the reload was not exported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_new_traces_is_exported_at_sample_ratio_one_quarter() {
    let rx = Receiver::start().await;
    let up = Upstream::start(Mode::Ok).await;
    let gw = gateway(false, &up, &tracing_section(&rx.url(), "sample_ratio = 0.25")).await;
    let auth = format!("Bearer {}", gw.mint("alice", ""));
    let mut sampled_upstream = 0;
    for i in 0..400 {
        assert_eq!(gw.get(&format!("/api/{i}"), &[("authorization", &auth)]).await.status, 200);
        let (_, _, _, flags) = parts(up.last().header("traceparent").expect("traceparent"));
        sampled_upstream += usize::from(flags == "01");
    }
    // Binomial(400, 0.25): 100 expected, standard deviation 8.7; 60..140 is beyond 4.5 of them.
    assert!((60..=140).contains(&sampled_upstream), "{sampled_upstream} of 400 sampled");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let requests = loop {
        let n = rx.spans().iter().filter(|s| s.name == "GET /api").count();
        if n >= sampled_upstream || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(requests, sampled_upstream, "every trace said to be sampled is exported, no other");
}

/// A gateway binary exporting to `endpoint` every 50 ms and logging JSON to a file, a token, the
/// log file's path (the caller stops the binary to read the whole log), and its upstream.
async fn exporting_binary(endpoint: &str, dir: &tempfile::TempDir) -> (Proc, String, PathBuf, Upstream) {
    let up = Upstream::start(Mode::Ok).await;
    let config = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    let tracing = format!("\n[tracing]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 50\n");
    let text = Config::new()
        .log("format = \"json\"\nlevel = \"info\"\nfile = \"gateway.log\"")
        .rest(&format!("{}{tracing}", route("/api", &up.url(), "")))
        .text();
    std::fs::write(&config, text).unwrap();
    let p = Proc::spawn_logging(&config, Some(&log));
    let req = tokengate::commands::MintRequest { sub: "alice", scope: "", ttl: Some(600), aud: None, client_id: None };
    let tok = tokengate::commands::mint(&config, &req).unwrap();
    (p, tok, log, up)
}

/// GETs `/api/{i}` with `tok` on the binary `p`; 200 expected.
async fn get_api(p: &Proc, dir: &tempfile::TempDir, tok: &str, i: usize) {
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let mut conn = Conn::tls(p.https, std::slice::from_ref(&cert), false).await;
    let r = conn.send(req("GET", &format!("/api/{i}"), &[("authorization", &format!("Bearer {tok}"))], empty())).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_base_url_gets_its_spans_at_v1_traces() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // How OTEL_EXPORTER_OTLP_ENDPOINT is usually written: no path.
    let (p, tok, _, _up) = exporting_binary(&format!("http://{}", rx.addr), &dir).await;
    get_api(&p, &dir, &tok, 1).await;
    rx.wait_for(3).await;
    let paths = rx.paths();
    assert!(!paths.is_empty() && paths.iter().all(|p| p == "/v1/traces"), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_export_is_logged_once_with_its_url_and_status() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}/otlp", rx.addr);
    let (mut p, tok, log, _up) = exporting_binary(&endpoint, &dir).await;
    // Three exports refused (three batches, 50 ms apart), then the stop.
    for i in 0..3 {
        get_api(&p, &dir, &tok, i).await;
        poll::eventually(10, "the collector refuses each export", || async { rx.paths().len() > i }).await;
    }
    let ok = std::process::Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    assert!(p.child.wait().unwrap().success());
    assert!(rx.spans().is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    let failed: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("span export failed")))
        .collect();
    assert_eq!(failed.len(), 1, "logged once for {} refused exports: {text}", rx.paths().len());
    assert_eq!(failed[0]["url"], endpoint.as_str(), "{}", failed[0]);
    assert_eq!(failed[0]["error"], "the collector answered 404 Not Found", "{}", failed[0]);
}
