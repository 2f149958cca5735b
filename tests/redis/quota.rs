//! Per-caller quotas counted across instances (`[[routes]] rate_limit` with `[state] backend =
//! "redis"`): two instances together pass exactly the burst, and over time the burst plus the
//! rate; an instance spends its allowance without asking Redis for every request and remembers a
//! refusal; with Redis down each instance counts on its own, and once Redis is back they share
//! again; a silent Redis delays one request by the timeout, not every request.

use tokengate::commands::{mint, MintRequest};

use super::*;

/// An exact route (lease 1), one with allowances of 5, and one counted per instance; buckets that
/// refill nothing during a test (one request per 1000 s). And `/rated`: 20 per second after a
/// burst of 10, for a test over time.
const ROUTES: &str = r#"
[[routes]]
prefix = "/exact"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 0.001, burst = 20, lease = 1 }

[[routes]]
prefix = "/rated"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 20, burst = 10, lease = 1 }

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
    bearer_at_once(&conn, path, token, n).await.iter().map(|r| r.status.as_u16()).collect()
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
    let (ra, rb) = tokio::join!(at_once(a, "/exact/x", &t, 30), at_once(b, "/exact/x", &t, 30));
    let passed = count(&ra, 200) + count(&rb, 200);
    assert_eq!((passed, count(&ra, 429) + count(&rb, 429)), (20, 40), "A {ra:?} B {rb:?}");
    // Another client has its own bucket across the fleet.
    let other = token(b, "svc-2");
    let (ra, rb) = tokio::join!(at_once(a, "/exact/x", &other, 12), at_once(b, "/exact/x", &other, 12));
    assert_eq!(count(&ra, 200) + count(&rb, 200), 20, "A {ra:?} B {rb:?}");
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
    // Asked at the 1st request; the 4th and the 9th left fewer than half an allowance (2 of 5)
    // and sent for the next one in the background.
    assert_eq!(settled_quota_calls(a, 3).await, 3, "lease = 5: one round trip per five requests");
    // A holds 5 of its 15; B gets the 5 left in Redis.
    assert_eq!(count(&at_once(b, "/limited/x", &t, 10).await, 200), 5, "what A does not hold");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(c.send(bearer_at("/limited/x", &t)).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429], "A spends what it holds, then 429");
    let refused = &statuses[5];
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((900..=1000).contains(&retry), "one request per 1000 s: {retry}");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"route\";q=20;w=20000"));
    // One refill was refused; the refusals after it never reached Redis.
    assert_eq!(settled_quota_calls(a, 4).await, 4, "refusals within Retry-After are answered locally");
    let m = a.metrics().await;
    assert_eq!(sample(&m, r#"tokengate_rate_limited_total{route="/limited",key="client_id"}"#), 5, "{m}");
}

/// The instance's quota round trips once `expected` have completed (a refill sent in the
/// background may still be on its way; 2 s at most), and 200 ms later.
async fn settled_quota_calls(g: &Inst, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    while quota_calls(g).await < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    quota_calls(g).await
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
        assert_eq!(
            g.state_until("health unavailable", |d| d["health"] == "unavailable").await["health"],
            "unavailable"
        );
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
            g.conn().await.send(bearer_at("/exact/x", &warm)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let fresh = token(a, "svc-5");
    let (ra, rb) = tokio::join!(at_once(a, "/exact/x", &fresh, 15), at_once(b, "/exact/x", &fresh, 15));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_second_two_instances_pass_the_burst_plus_the_rate() {
    let redis = RedisServer::start(false);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet_plus(&redis, keys.path(), 2, 10, ROUTES).await;
    let t = token(&gws[0], "svc-8");
    let (ca, cb) = (gws[0].conn().await, gws[1].conn().await);
    let started = Instant::now();
    let hammer = |mut c: Conn| {
        let t = t.clone();
        let mut out = Vec::new();
        async move {
            while started.elapsed() < Duration::from_millis(1500) {
                out.push(c.send(bearer_at("/rated/x", &t)).await.status.as_u16());
            }
            out
        }
    };
    let (ra, rb) = tokio::join!(hammer(ca), hammer(cb));
    let elapsed = started.elapsed().as_secs_f64();
    let passed = (count(&ra, 200) + count(&rb, 200)) as f64;
    // GCRA: the burst at once, then one per 50 ms, both instances together; the bounds allow for
    // the round trips at either end of the run.
    let most = 10.0 + 20.0 * elapsed;
    assert!(
        passed <= most + 1.0 && passed >= most - 4.0,
        "{passed} passed in {elapsed:.3} s: expected about {most:.1}"
    );
    assert!(count(&ra, 429) + count(&rb, 429) > 0, "the rate was reached");
}
