//! Per-caller quotas counted across instances (`[[routes]] rate_limit` with `[state] backend =
//! "redis"`): two instances together pass exactly the burst; an instance spends its allowance
//! without asking Redis for every request and remembers a refusal; with Redis down each instance
//! counts on its own, and once Redis is back they share again; a silent Redis delays one request
//! by the timeout, not every request.

use tokengate::commands::{mint, MintRequest};

use super::*;

/// A limited route (lease 5) and one counted per instance; buckets that refill nothing during a
/// test (one request per 1000 s).
const ROUTES: &str = r#"
[[routes]]
prefix = "/limited"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 0.001, burst = 20, lease = 5 }

[[routes]]
prefix = "/mine"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 0.001, burst = 3, shared = false }
"#;

/// A token of the fleet's key for `client_id`.
fn token(g: &Inst, client_id: &str) -> String {
    mint(&g.config, &MintRequest { sub: "svc", scope: "read", ttl: Some(600), aud: None, client_id: Some(client_id) })
        .expect("mint")
}

/// `n` GETs of `path` at once over one HTTP/2 connection to `g`; their statuses.
async fn at_once(g: &Inst, path: &str, token: &str, n: usize) -> Vec<u16> {
    let conn = Conn::tls(g.https, std::slice::from_ref(&g.cert), true).await;
    let auth = format!("Bearer {token}");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut c, auth, path) = (conn.clone_h2(), auth.clone(), path.to_owned());
            tokio::spawn(async move { c.send(req("GET", &path, &[("authorization", &auth)], empty())).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task").status.as_u16());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Round trips this instance made for quotas.
async fn quota_calls(g: &Inst) -> u64 {
    sample(&g.metrics().await, r#"tokengate_store_duration_seconds_count{op="take_quota"}"#)
}

/// Quota round trips that Redis answered.
async fn answered_quota_calls(g: &Inst) -> u64 {
    let m = g.metrics().await;
    sample(&m, r#"tokengate_store_duration_seconds_count{op="take_quota"}"#)
        - sample(&m, r#"tokengate_store_errors_total{op="take_quota"}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_pass_exactly_the_burst_between_them() {
    let redis = RedisServer::start(false);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet_plus(&redis, keys.path(), 2, 10, ROUTES).await;
    let (a, b) = (&gws[0], &gws[1]);
    let t = token(a, "svc-1");
    // 30 at each instance, at the same time: 20 pass in all, wherever they land.
    let (ra, rb) = tokio::join!(at_once(a, "/limited/x", &t, 30), at_once(b, "/limited/x", &t, 30));
    let passed = count(&ra, 200) + count(&rb, 200);
    assert_eq!((passed, count(&ra, 429) + count(&rb, 429)), (20, 40), "A {ra:?} B {rb:?}");
    // Another client has its own bucket across the fleet.
    let other = token(b, "svc-2");
    assert_eq!(count(&at_once(a, "/limited/x", &other, 12).await, 200), 12);
    // A took three allowances of 5 for its 12: it holds 3 that B cannot have.
    assert_eq!(count(&at_once(b, "/limited/x", &other, 12).await, 200), 5, "what A does not hold");
    assert_eq!(count(&at_once(a, "/limited/x", &other, 5).await, 200), 3, "A spends what it holds");
    assert_eq!(count(&at_once(b, "/limited/x", &other, 5).await, 200), 0, "20 across both instances");
    // A route with `shared = false` counts at each instance on its own.
    assert_eq!(count(&at_once(a, "/mine/x", &t, 5).await, 200), 3);
    assert_eq!(count(&at_once(b, "/mine/x", &t, 5).await, 200), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowance_saves_round_trips_and_a_refusal_is_remembered() {
    let redis = RedisServer::start(false);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet_plus(&redis, keys.path(), 2, 10, ROUTES).await;
    let (a, b) = (&gws[0], &gws[1]);
    let t = token(a, "svc-3");
    let mut c = a.conn().await;
    for i in 0..10 {
        assert_eq!(c.send(bearer_at("/limited/x", &t)).await.status, 200, "request {i}");
    }
    assert_eq!(quota_calls(a).await, 2, "lease = 5: one round trip per five requests");
    // B takes the other ten; then A's next request asks, is refused, and the refusal is
    // answered locally afterwards.
    assert_eq!(count(&at_once(b, "/limited/x", &t, 10).await, 200), 10);
    let refused = c.send(bearer_at("/limited/x", &t)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((900..=1000).contains(&retry), "one request per 1000 s: {retry}");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"route\";q=20;w=20000"));
    for _ in 0..5 {
        assert_eq!(c.send(bearer_at("/limited/x", &t)).await.status, 429);
    }
    assert_eq!(quota_calls(a).await, 3, "refusals within Retry-After never reach Redis");
    let m = a.metrics().await;
    assert_eq!(sample(&m, r#"tokengate_rate_limited_total{route="/limited",key="client_id"}"#), 6, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_instance_counts_alone_and_shares_again_after() {
    let mut redis = RedisServer::start(true);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet_plus(&redis, keys.path(), 2, 10, ROUTES).await;
    let (a, b) = (&gws[0], &gws[1]);
    redis.kill9();
    let t = token(a, "svc-4");
    let started = Instant::now();
    // The first request waits at most `state.timeout_ms` for Redis, then the local table counts.
    let (ra, rb) = tokio::join!(at_once(a, "/limited/x", &t, 25), at_once(b, "/limited/x", &t, 25));
    assert_eq!((count(&ra, 200), count(&rb, 200)), (20, 20), "each instance allows the whole quota: A {ra:?} B {rb:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());
    for g in [a, b] {
        assert_eq!(g.state_until("health unavailable", |d| d["health"] == "unavailable").await["health"], "unavailable");
    }

    redis.restart();
    for g in [a, b] {
        g.state_until("health ok again", |d| d["health"] == "ok").await;
        // A connection lost with the server fails its next call, which counts locally; once one
        // call reached Redis again, the quota is shared again.
        let (warm, before) = (token(g, "svc-warm"), answered_quota_calls(g).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered_quota_calls(g).await == before {
            assert!(Instant::now() < deadline, "no quota call reached the restarted Redis");
            g.conn().await.send(bearer_at("/limited/x", &warm)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let fresh = token(a, "svc-5");
    let (ra, rb) = tokio::join!(at_once(a, "/limited/x", &fresh, 15), at_once(b, "/limited/x", &fresh, 15));
    assert_eq!(count(&ra, 200) + count(&rb, 200), 20, "shared again: A {ra:?} B {rb:?}");
}

/// A GET of `path` with `token`.
fn bearer_at(path: &str, token: &str) -> http::Request<ReqBody> {
    req("GET", path, &[("authorization", &format!("Bearer {token}"))], empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_delays_one_request_by_the_timeout_not_every_request() {
    let redis = RedisServer::start(false);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet_plus(&redis, keys.path(), 1, 10, ROUTES).await;
    let a = &gws[0];
    let t = token(a, "svc-6");
    let mut c = a.conn().await;
    assert_eq!(c.send(bearer_at("/limited/x", &t)).await.status, 200, "shared while Redis answers");
    // Stopped, not gone: calls hang until `state.timeout_ms` (1000 ms here) rather than fail.
    redis.pause(true);
    let (mut statuses, other) = (Vec::new(), token(a, "svc-7"));
    let started = Instant::now();
    for _ in 0..30 {
        statuses.push(c.send(bearer_at("/limited/y", &other)).await.status.as_u16());
    }
    let took = started.elapsed();
    redis.pause(false);
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (20, 10), "counted locally: {statuses:?}");
    assert!(took < Duration::from_millis(2500), "30 requests took {took:?}: more than one waited on Redis");
}
