//! Active health checks of `[[upstreams]]` groups over the wire: an endpoint whose `/healthz`
//! starts failing leaves the balance set after `unhealthy` probes while its other paths still
//! answer (active, not passive: nothing a client sent failed), and is back after `healthy`
//! passes; a killed endpoint is taken out by its failing probes and re-admitted once restarted.
//! Probes carry no client credential. Times to eject and re-admit are printed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CHECK: &str =
    "health_check = { path = \"/healthz\", interval_secs = 1, timeout_ms = 500, healthy = 2, unhealthy = 2 }";

/// A group `svc` over `endpoints` with active health checks, and a public route `/svc` to it.
fn config(endpoints: &[String]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    let rest = format!(
        "\n[[upstreams]]\nname = \"svc\"\nendpoints = [{}]\n{CHECK}\n{}",
        list.join(", "),
        route("/svc", "svc", "public = true")
    );
    Config::new().rest(&rest).text()
}

/// `/upstreams`' entry for `url` in group `svc`.
async fn endpoint(gw: &Gw, url: &str) -> Value {
    let (status, body) = gw.admin_get("/upstreams").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("/upstreams is JSON");
    let list = doc["upstreams"][0]["endpoints"].as_array().expect("endpoints").clone();
    list.into_iter().find(|e| e["endpoint"] == url).unwrap_or_else(|| panic!("{url} in {doc}"))
}

/// Polls until `url`'s active health state is `state`; returns how long that took.
async fn until_state(gw: &Gw, url: &str, state: &str, secs: u64) -> Duration {
    let start = Instant::now();
    poll_until(secs, &format!("{url} health_check {state}"), || async {
        let e = endpoint(gw, url).await;
        if e["health_check"] == state {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
    start.elapsed()
}

/// Sends `n` requests with a bearer header (that probes must never carry); all must pass.
async fn load(gw: &Gw, n: usize) {
    let mut conn = gw.plain_conn().await;
    for _ in 0..n {
        let r = conn.send(req("GET", "/svc/x", &[("authorization", "Bearer client-secret-token")], empty())).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

fn healthy_gauge(metrics: &str, url: &str) -> u64 {
    sample(metrics, &format!("tokengate_upstream_endpoint_healthy{{group=\"svc\",endpoint=\"{url}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_takes_an_endpoint_out_and_passing_ones_bring_it_back() {
    let a = Instance::start(Duration::ZERO).await;
    let b = Instance::start(Duration::ZERO).await;
    let gw = Gw::start_text(&config(&[a.url(), b.url()])).await;
    eventually(10, "both endpoints probed", || async { a.probes() > 0 && b.probes() > 0 }).await;
    let e = endpoint(&gw, &a.url()).await;
    assert_eq!((e["health_check"].as_str(), e["last_probe"]["result"].as_str()), (Some("up"), Some("200")), "{e}");
    load(&gw, 10).await;
    assert_eq!((a.requests(), b.requests()), (5, 5));
    let probe = a.probe_headers();
    assert!(probe.get("authorization").is_none(), "a probe carried a credential: {probe:?}");
    assert_eq!(probe.get("user-agent").and_then(|v| v.to_str().ok()), Some("tokengate-health-check"));

    // /healthz fails; every other path of `a` still answers 200.
    a.set_healthy(false);
    let out = until_state(&gw, &a.url(), "down", 10).await;
    eprintln!("taken out {:.2}s after /healthz began failing (interval 1 s, unhealthy = 2)", out.as_secs_f64());
    let e = endpoint(&gw, &a.url()).await;
    assert_eq!((e["healthy"].as_bool(), e["last_probe"]["result"].as_str()), (Some(false), Some("503")), "{e}");
    assert_eq!(e["ejections"], 0, "out by its probes, not by failed requests: {e}");
    assert_eq!(healthy_gauge(&gw.metrics().await, &a.url()), 0);
    let at_a = a.requests();
    load(&gw, 10).await;
    assert_eq!(a.requests(), at_a, "no request reached the endpoint that is down");

    a.set_healthy(true);
    let back = until_state(&gw, &a.url(), "up", 10).await;
    eprintln!("re-admitted {:.2}s after /healthz passed again (healthy = 2)", back.as_secs_f64());
    assert_eq!(healthy_gauge(&gw.metrics().await, &a.url()), 1);
    load(&gw, 10).await;
    assert_eq!(a.requests(), at_a + 5, "back in the round robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_comes_back_after_its_health_check_passes() {
    let a = Instance::start(Duration::ZERO).await;
    let b = Instance::start(Duration::ZERO).await;
    let gw = Gw::start_text(&config(&[a.url(), b.url()])).await;
    eventually(10, "a probed", || async { a.probes() > 0 }).await;
    a.kill().await;
    let killed = Instant::now();
    until_state(&gw, &a.url(), "down", 10).await;
    eprintln!("killed endpoint taken out after {:.2}s", killed.elapsed().as_secs_f64());
    assert_eq!(endpoint(&gw, &a.url()).await["last_probe"]["result"], "unreachable");
    load(&gw, 6).await;

    let a2 = Instance::start_on(a.addr, Duration::ZERO).await;
    let restarted = Instant::now();
    until_state(&gw, &a.url(), "up", 10).await;
    eprintln!("restarted endpoint re-admitted after {:.2}s", restarted.elapsed().as_secs_f64());
    load(&gw, 10).await;
    assert_eq!(a2.requests(), 5, "back in the round robin once its probes pass");
}
