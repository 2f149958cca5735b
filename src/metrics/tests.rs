//! The exposition of recorded series, read back as a scraper sees it.

use super::*;

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn requests_are_counted_per_route_and_status() {
    let m = Metrics::new();
    m.record_request("/api", 200);
    m.record_request("/api", 200);
    m.record_request("/api", 503);
    m.record_request("none", 404);
    let text = m.encode();
    assert!(has_line(&text, "# TYPE tokengate_requests counter"), "{text}");
    assert!(has_line(&text, r#"tokengate_requests_total{route="/api",status="200"} 2"#), "{text}");
    assert!(has_line(&text, r#"tokengate_requests_total{route="/api",status="503"} 1"#), "{text}");
    assert!(has_line(&text, r#"tokengate_requests_total{route="none",status="404"} 1"#), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn rejections_and_reloads_are_counted() {
    let m = Metrics::new();
    let text = m.encode();
    assert!(has_line(&text, r#"tokengate_reloads_total{result="ok"} 0"#), "{text}");
    assert!(has_line(&text, r#"tokengate_reloads_total{result="failed"} 0"#), "{text}");
    m.record_rejection("expired");
    m.record_rejection("expired");
    m.record_rejection("missing");
    m.record_reload(true);
    m.record_reload(false);
    m.record_reload(false);
    let text = m.encode();
    for line in [
        r#"tokengate_token_rejections_total{reason="expired"} 2"#,
        r#"tokengate_token_rejections_total{reason="missing"} 1"#,
        r#"tokengate_reloads_total{result="ok"} 1"#,
        r#"tokengate_reloads_total{result="failed"} 2"#,
    ] {
        assert!(has_line(&text, line), "missing {line:?} in {text}");
    }
}

#[test]
fn upstream_histogram_buckets_and_sums() {
    let m = Metrics::new();
    m.record_request("/quiet", 200);
    m.observe_upstream("/api", 0.00005);
    m.observe_upstream("/api", 0.2);
    m.observe_upstream("/api", 60.0);
    let text = m.encode();
    for line in [
        "# TYPE tokengate_upstream_duration_seconds histogram",
        "# UNIT tokengate_upstream_duration_seconds seconds",
        r#"tokengate_upstream_duration_seconds_count{route="/api"} 3"#,
        r#"tokengate_upstream_duration_seconds_bucket{le="0.0001",route="/api"} 1"#,
        r#"tokengate_upstream_duration_seconds_bucket{le="0.1",route="/api"} 1"#,
        r#"tokengate_upstream_duration_seconds_bucket{le="0.25",route="/api"} 2"#,
        r#"tokengate_upstream_duration_seconds_bucket{le="30.0",route="/api"} 2"#,
        r#"tokengate_upstream_duration_seconds_bucket{le="+Inf",route="/api"} 3"#,
    ] {
        assert!(has_line(&text, line), "missing {line:?} in {text}");
    }
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"tokengate_upstream_duration_seconds_sum{route="/api"} "#))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("sum line");
    assert!((sum - 60.20005).abs() < 1e-9, "sum {sum}");
    // A route that never went upstream has no histogram series.
    assert!(!text.contains(r#"seconds_count{route="/quiet"}"#), "{text}");
}

#[test]
fn concurrent_records_are_not_lost() {
    let m = Arc::new(Metrics::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for i in 0..1000u16 {
                    m.record_request(if i % 2 == 0 { "/a" } else { "/b" }, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let text = m.encode();
    assert!(has_line(&text, r#"tokengate_requests_total{route="/a",status="200"} 2000"#), "{text}");
    assert!(has_line(&text, r#"tokengate_requests_total{route="/b",status="200"} 2000"#), "{text}");
}

#[test]
fn every_family_is_listed_before_first_use() {
    let m = Metrics::new();
    m.declare_rejection_reasons(["missing"]);
    m.declare_routes(["/api"]);
    let text = m.encode();
    for family in [
        "tokengate_requests_total",
        "tokengate_token_rejections_total",
        "tokengate_upstream_duration_seconds",
        "tokengate_reloads_total",
        "tokengate_limit_hits_total",
    ] {
        assert!(text.contains(&format!("# TYPE {}", family.trim_end_matches("_total"))), "{family}: {text}");
    }
    assert!(text.contains("tokengate_requests_total{route=\"/api\",status=\"200\"} 0"), "{text}");
    assert!(text.contains("tokengate_upstream_duration_seconds_count{route=\"/api\"} 0"), "{text}");
}
