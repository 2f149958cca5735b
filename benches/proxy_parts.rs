//! The per-request work around token validation: header rewriting and route matching.
//!
//! `headers/rewrite` runs what the proxy does to a realistic 12-header request (hop-by-hop
//! removal, `X-Forwarded-*`, identity strip and set); the clone of the request headers is made
//! in setup and not timed. `routes/find/N` is `normalize_path` + `RouteTable::find` with N
//! prefix-only routes; `routes/find_mixed/1000` the same with 1,000 routes that name hosts
//! (exact and wildcard), methods and placeholders, for a request that needs all three;
//! `routes/normalize/*` is path canonicalisation alone (a plain and an escaped path).
//!
//! `trace_off/*` is what tracing costs a request when nothing is exported: the trace context
//! from the headers, the upstream `traceparent`, the access log's trace id.
//!
//! Run: `cargo bench --bench proxy_parts`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokengate::headers::{self, X_AUTH_CLIENT_ID, X_AUTH_SCOPE, X_AUTH_SUBJECT};
use tokengate::routes::{normalize_path, Lookup, RouteSpec, RouteTable};

/// What a browser or SDK call through a load balancer typically carries, with two spoofing
/// attempts (an identity header and `X-Forwarded-For`) and a `Connection`-named hop header.
fn request_headers() -> HeaderMap {
    let token = format!("Bearer eyJhbGciOiJFUzI1NiJ9.{}.{}", "x".repeat(300), "y".repeat(86));
    let pairs = [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", token.as_str()),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("content-type", "application/json"),
        ("x-request-id", "5f0c6a7e-2b1d-4c8e-9a3f-0d1e2f3a4b5c"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-auth-subject", "root"),
    ];
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
    }
    assert_eq!(m.len(), 12);
    m
}

fn rewrite(h: &mut HeaderMap, client: &HeaderValue, tenant: &HeaderName) {
    let host = h.remove(http::header::HOST);
    headers::strip_hop_by_hop(h);
    headers::set_forwarded(h, client, "https", host, false);
    headers::strip_identity(h, std::iter::once(tenant));
    headers::set_identity(h, &X_AUTH_SUBJECT, Some("user-12345"));
    headers::set_identity(h, &X_AUTH_CLIENT_ID, Some("bench-client"));
    headers::set_identity(h, &X_AUTH_SCOPE, Some("read write"));
    headers::set_identity(h, tenant, Some("acme"));
}

fn header_rewriting(c: &mut Criterion) {
    let base = request_headers();
    let client = headers::client_address_value("198.51.100.23".parse::<IpAddr>().unwrap());
    let tenant = HeaderName::from_static("x-tenant");
    let mut check = base.clone();
    rewrite(&mut check, &client, &tenant);
    assert!(!check.contains_key("x-hop") && check["x-auth-subject"] == "user-12345");
    let mut g = c.benchmark_group("headers");
    g.bench_function("rewrite", |b| {
        b.iter_batched_ref(|| base.clone(), |h| rewrite(black_box(h), &client, &tenant), BatchSize::SmallInput)
    });
    g.bench_function("clone_only", |b| b.iter(|| black_box(&base).clone()));
    g.finish();
}

fn route_matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("routes");
    let spec = |prefix: String, hosts: Vec<String>, methods: &[http::Method], value| RouteSpec {
        prefix,
        hosts,
        methods: methods.to_vec(),
        value,
    };
    for n in [1usize, 100, 10_000] {
        let table = RouteTable::new((0..n).map(|i| spec(format!("/svc{i}"), vec![], &[], i)).collect()).unwrap();
        // A path deeper than its prefix, to the last route inserted.
        let path = format!("/svc{}/v1/orders/12345/items", n - 1);
        assert_eq!(found(&table, None, &http::Method::GET, &path), Some(n - 1));
        g.bench_with_input(BenchmarkId::new("find", n), &path, |b, p| {
            b.iter(|| found(&table, None, &http::Method::GET, black_box(p)))
        });
    }
    // 1,000 routes: 250 services, each on its own host (every other one a wildcard), with a
    // read route and a write route on a tenant template, and a host-less fallback each.
    let (get, post) = (http::Method::GET, http::Method::POST);
    let mut specs = Vec::new();
    for i in 0..250 {
        let host = if i % 2 == 0 { format!("svc{i}.example.com") } else { format!("*.svc{i}.example.com") };
        let orders = format!("/tenants/{{tenant}}/svc{i}/orders");
        specs.push(spec(orders.clone(), vec![host.clone()], std::slice::from_ref(&get), 4 * i));
        specs.push(spec(orders, vec![host.clone()], std::slice::from_ref(&post), 4 * i + 1));
        specs.push(spec(format!("/svc{i}/admin"), vec![host], &[], 4 * i + 2));
        specs.push(spec(format!("/svc{i}"), vec![], &[], 4 * i + 3));
    }
    let table = RouteTable::new(specs).unwrap();
    let (host, path) = ("eu.svc249.example.com:8443", "/tenants/acme/svc249/orders/12345/items");
    assert_eq!(table.len(), 1000);
    assert_eq!(found(&table, Some(host), &post, path), Some(4 * 249 + 1));
    g.bench_function(BenchmarkId::new("find_mixed", 1000), |b| {
        b.iter(|| found(&table, Some(black_box(host)), &post, black_box(path)))
    });
    for (name, path) in [("plain", "/svc42/v1/orders/12345/items"), ("escaped", "/svc42/v1/%6Frders/caf%c3%a9/items")] {
        g.bench_with_input(BenchmarkId::new("normalize", name), path, |b, p| {
            b.iter(|| normalize_path(black_box(p)).unwrap().len())
        });
    }
    g.finish();
}

/// The value of the route for a request, as the proxy finds it: the path made canonical first.
fn found(table: &RouteTable<usize>, host: Option<&str>, method: &http::Method, path: &str) -> Option<usize> {
    let canonical = normalize_path(path).ok()?;
    match table.find(host, method, &canonical) {
        Lookup::Found(f) => Some(*f.value),
        _ => None,
    }
}

/// What tracing costs a request when nothing is exported (`[tracing]` without `otlp_endpoint`):
/// the trace context from the headers (none, untrusted; a trusted valid `traceparent`), the
/// `traceparent` header for the upstream, and the access log's trace id.
fn trace_context_off(c: &mut Criterion) {
    use tokengate::headers::set_trace_context;
    use tokengate::Telemetry;
    let telemetry = Telemetry::off();
    let base = request_headers();
    let mut traced = base.clone();
    traced.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    let mut g = c.benchmark_group("trace_off");
    for (name, headers, trusted) in [("new_trace", &base, false), ("trusted_parent", &traced, true)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                // Room for one more header, as the proxy's map has after `X-Forwarded-*`: a
                // growing map's rehash is not tracing's cost.
                || {
                    let mut h = headers.clone();
                    h.reserve(h.len() + 4);
                    h
                },
                |h| {
                    let trace = telemetry.start(black_box(h), trusted);
                    let value = trace.traceparent(None);
                    set_trace_context(h, value, trace.continued());
                    trace.trace_id_hex()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = header_rewriting, route_matching, trace_context_off
}
criterion_main!(benches);
