//! Per-caller quotas over the wire (`[[routes]] rate_limit`): exact under concurrency, keyed by
//! the verified identity (two clients never share a bucket), per-client overrides, per-IP keys
//! on a public route, the 429 answer and its headers, the metric, and a reload that keeps the
//! buckets. Local counters; `tests/redis` shares them between instances through Redis.

mod common;

use common::*;
use tokengate::commands::{mint, MintRequest};

/// A token of the gateway's key for `client_id` (and `sub`).
fn token(gw: &Gw, client_id: &str, sub: &str) -> String {
    mint(&gw.config, &MintRequest { sub, scope: "read", ttl: Some(600), aud: None, client_id: Some(client_id) })
        .expect("mint")
}

/// A rate that refills nothing during a test: the burst is all a key gets.
const ROUTES: &str = r#"
[[routes]]
prefix = "/api"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 0.001, burst = 20 }

[[routes]]
prefix = "/users"
upstream = "echo"
rate_limit = { key = "sub", per_second = 0.001, burst = 2 }

[[routes]]
prefix = "/open"
upstream = "echo"
public = true
rate_limit = { key = "ip", per_second = 0.001, burst = 3 }

[[routes]]
prefix = "/quiet"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 0.001, burst = 1, headers = false }

[[routes]]
prefix = "/many"
upstream = "echo"
rate_limit = { key = "sub", per_second = 0.001, burst = 1, max_keys = 16 }

[[routes]]
prefix = "/free"
upstream = "echo"
"#;

fn config() -> Config {
    let vip = format!(
        "{}rate_limit = {{ per_second = 0.001, burst = 40 }}\n",
        client("vip", &secret_hash(SECRET), &["client_credentials"], &["read"], &["read"])
    );
    Config::new().rest(&format!("{ROUTES}{vip}"))
}

/// `n` GETs of `path` with `token` at once over one HTTP/2 connection: (status, response) each.
async fn burst(gw: &Gw, path: &str, token: &str, n: usize) -> Vec<Resp> {
    bearer_at_once(&gw.tls(true).await, path, token, n).await
}

fn count(rs: &[Resp], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_burst_passes_under_concurrency_and_clients_do_not_share() {
    let gw = Gw::start_config(&config()).await;
    let a = token(&gw, "app-a", "alice");
    let rs = burst(&gw, "/api/x", &a, 50).await;
    assert_eq!((count(&rs, 200), count(&rs, 429)), (20, 30), "50 at once, burst 20");
    let ok = rs.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.header("ratelimit-policy"), Some("\"route\";q=20;w=20000"));
    assert!(ok.header("ratelimit").is_some_and(|v| v.starts_with("\"route\";r=")), "{:?}", ok.headers);
    let refused = rs.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(refused.json()["error"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((900..=1000).contains(&retry), "one request per 1000 s: {retry}");
    assert!(refused.header("ratelimit").is_some_and(|v| v.contains("r=0")));
    // Another client has its own bucket; the same client stays refused.
    let b = token(&gw, "app-b", "alice");
    assert_eq!(count(&burst(&gw, "/api/x", &b, 25).await, 200), 20);
    assert_eq!(gw.get_with("/api/x", &a).await.status, 429);
    // A route without a limit is not affected, and sends no RateLimit headers.
    let free = gw.get_with("/free/x", &a).await;
    assert_eq!(free.status, 200);
    assert!(free.header("ratelimit").is_none());
    let m = gw.metrics().await;
    assert_eq!(sample(&m, r#"tokengate_rate_limited_total{route="/api",key="client_id"}"#), 30 + 5 + 1, "{m}");
    assert_eq!(sample(&m, r#"tokengate_rate_limit_keys{route="/api"}"#), 2, "two callers held: {m}");
    assert_eq!(sample(&m, r#"tokengate_rate_limit_evicted_keys{route="/api"}"#), 0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_keys_callers_are_evicted_and_counted() {
    let gw = Gw::start_config(&config()).await;
    for i in 0..64 {
        let t = token(&gw, "app-a", &format!("user-{i}"));
        assert_eq!(gw.get_with("/many/x", &t).await.status, 200, "each new caller has a full bucket");
    }
    let m = gw.metrics().await;
    let held = sample(&m, r#"tokengate_rate_limit_keys{route="/many"}"#);
    assert!((1..=16).contains(&held), "max_keys = 16 bounds what is held: {held}");
    assert!(sample(&m, r#"tokengate_rate_limit_evicted_keys{route="/many"}"#) >= 64 - 16, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_false_keeps_the_ratelimit_headers_for_the_429() {
    let gw = Gw::start_config(&config()).await;
    let a = token(&gw, "app-a", "alice");
    let ok = gw.get_with("/quiet/x", &a).await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("ratelimit").is_none() && ok.header("ratelimit-policy").is_none(), "{:?}", ok.headers);
    let refused = gw.get_with("/quiet/x", &a).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("ratelimit-policy"), Some("\"route\";q=1;w=1000"));
    assert!(refused.header("ratelimit").is_some_and(|v| v.starts_with("\"route\";r=0;t=")), "{:?}", refused.headers);
    assert!(refused.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_rate_replaces_the_routes() {
    let gw = Gw::start_config(&config()).await;
    let vip = token(&gw, "vip", "svc");
    let rs = burst(&gw, "/api/x", &vip, 60).await;
    assert_eq!(count(&rs, 200), 40, "the client's burst of 40, not the route's 20");
    assert_eq!(rs.iter().find(|r| r.status == 200).unwrap().header("ratelimit-policy"), Some("\"route\";q=40;w=40000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_sub_and_by_address() {
    let gw = Gw::start_config(&config()).await;
    // key = "sub": one user through two clients shares one bucket.
    let (a, b) = (token(&gw, "app-a", "carol"), token(&gw, "app-b", "carol"));
    assert_eq!(gw.get_with("/users/1", &a).await.status, 200);
    assert_eq!(gw.get_with("/users/1", &b).await.status, 200);
    assert_eq!(gw.get_with("/users/1", &a).await.status, 429);
    assert_eq!(gw.get_with("/users/1", &token(&gw, "app-a", "dave")).await.status, 200);
    // key = "ip" on a public route: no token needed, the address is counted.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(gw.get("/open/x", &[]).await.status.as_u16());
    }
    assert_eq!(got, [200, 200, 200, 429, 429]);
    let m = gw.metrics().await;
    assert_eq!(sample(&m, r#"tokengate_rate_limited_total{route="/open",key="ip"}"#), 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_buckets_and_a_bad_limit_is_refused() {
    let gw = Gw::start_config(&config()).await;
    let a = token(&gw, "app-a", "alice");
    assert_eq!(count(&burst(&gw, "/api/x", &a, 25).await, 200), 20);
    let before = gw.generation().await;
    let text = std::fs::read_to_string(&gw.config).unwrap().replace("prefix = \"/free\"", "prefix = \"/free2\"");
    std::fs::write(&gw.config, text).unwrap();
    gw.wait_generation_above(before, 10).await;
    assert_eq!(gw.get_with("/api/x", &a).await.status, 429, "the reload forgave no one");
    // A zero rate is a config error naming the route.
    let bad = Config::new().rest(&route("/x", "echo", "rate_limit = { key = \"sub\", per_second = 0 }"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, bad.text()).unwrap();
    let err = tokengate::commands::check(&path).unwrap_err().to_string();
    assert!(err.contains("route \"/x\": rate_limit.per_second"), "{err}");
    // A public route cannot count per client.
    let bad =
        Config::new().rest(&route("/x", "echo", "public = true\nrate_limit = { key = \"client_id\", per_second = 1 }"));
    std::fs::write(&path, bad.text()).unwrap();
    let err = tokengate::commands::check(&path).unwrap_err().to_string();
    assert!(err.contains("can only be \"ip\""), "{err}");
    // An allowance of nothing would never let a request through.
    let bad = Config::new().rest(&route("/x", "echo", "rate_limit = { key = \"sub\", per_second = 1, lease = 0 }"));
    std::fs::write(&path, bad.text()).unwrap();
    let err = tokengate::commands::check(&path).unwrap_err().to_string();
    assert!(err.contains("route \"/x\": rate_limit.lease must be at least 1"), "{err}");
}
