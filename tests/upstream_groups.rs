//! `[[upstreams]]` groups over the wire: balancing, passive health (ejection, return, panic
//! mode), the retry of a request whose connection failed, reloads that keep pools and health,
//! and the config's refusals. The endpoints are [`Instance`] stubs (tests/common/instance.rs)
//! this file starts and kills.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A group named `svc` over `endpoints` with extra keys, and a public route `/svc` to it.
fn group(endpoints: &[String], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "\n[[upstreams]]\nname = \"svc\"\nendpoints = [{}]\n{extra}\n{}",
        list.join(", "),
        route("/svc", "svc", "public = true")
    )
}

fn config(rest: &str) -> String {
    Config::new().rest(rest).text()
}

async fn upstreams(gw: &Gw) -> Value {
    let (status, body) = gw.admin_get("/upstreams").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/upstreams is JSON")
}

/// `/upstreams`' entry for `endpoint` of group `svc`.
async fn endpoint(gw: &Gw, endpoint: &str) -> Value {
    let doc = upstreams(gw).await;
    let list = doc["upstreams"][0]["endpoints"].as_array().expect("endpoints").clone();
    list.into_iter().find(|e| e["endpoint"] == endpoint).unwrap_or_else(|| panic!("{endpoint} in {doc}"))
}

async fn get(conn: &mut Conn, path: &str) -> Resp {
    conn.send(req("GET", path, &[], empty())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_three_endpoints() {
    let eps = [
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
    ];
    let urls: Vec<String> = eps.iter().map(Instance::url).collect();
    let gw = Gw::start_text(&config(&group(&urls, ""))).await;
    let mut conn = gw.plain_conn().await;
    for _ in 0..30 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    let counts: Vec<usize> = eps.iter().map(Instance::requests).collect();
    assert_eq!(counts, [10, 10, 10]);
    // One pooled connection each: sequential requests reuse them.
    assert_eq!(eps.iter().map(Instance::conns).collect::<Vec<_>>(), [1, 1, 1]);
    let doc = upstreams(&gw).await;
    assert_eq!(doc["upstreams"][0]["name"], "svc");
    assert_eq!(doc["upstreams"][0]["endpoints"][0]["requests"], 10, "{doc}");
    let metrics = gw.metrics().await;
    let series = format!("tokengate_upstream_endpoint_requests_total{{group=\"svc\",endpoint=\"{}\"}}", urls[1]);
    assert_eq!(sample(&metrics, &series), 10, "{metrics}");
    let healthy = format!("tokengate_upstream_endpoint_healthy{{group=\"svc\",endpoint=\"{}\"}}", urls[2]);
    assert_eq!(sample(&metrics, &healthy), 1);
}

/// Steady load over three endpoints; one is killed: it is ejected after
/// `consecutive_failures`, requests keep succeeding (connect failures and the GETs in flight on it
/// when it died are retried on another endpoint), and once restarted it is back
/// after `base_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_without_failed_requests_and_comes_back() {
    let a = Instance::start(Duration::ZERO).await;
    let b = Instance::start(Duration::ZERO).await;
    let c = Instance::start(Duration::ZERO).await;
    let urls = vec![a.url(), b.url(), c.url()];
    let eject = "eject = { consecutive_failures = 3, base_secs = 2, max_secs = 10 }";
    let gw = Arc::new(Gw::start_text(&config(&group(&urls, eject))).await);

    // Four clients, each sending one request after another until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut conn = gw.plain_conn().await;
            while !stop.load(Ordering::SeqCst) {
                let r = get(&mut conn, "/svc/x").await;
                let counter = if r.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 {
                    eprintln!("failed request: {} {}", r.status, r.text());
                }
            }
        }));
    }
    eventually(10, "load flowing to b", || async { b.requests() > 20 }).await;

    let killed = Instant::now();
    b.kill().await;
    poll_until(10, "b ejected", || async {
        let e = endpoint(&gw, &urls[1]).await;
        if e["healthy"] == false {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
    let to_eject = killed.elapsed();
    assert_eq!(endpoint(&gw, &urls[1]).await["ejections"], 1);

    // Restarted on the same port: back once its 2 s are up, and given requests again.
    let b2 = Instance::start_on(b.addr, Duration::ZERO).await;
    let restarted = Instant::now();
    eventually(10, "b back and serving", || async { b2.requests() > 0 }).await;
    let to_return = restarted.elapsed();
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!(
        "kill test: {ok} requests ok, {failed} failed; ejected {to_eject:?} after the kill; \
         back {to_return:?} after the restart (base_secs = 2)"
    );
    // Connect failures are retried on another endpoint, and so is a GET already written to b
    // when it died (reset before its answer): not one fails.
    assert_eq!(failed, 0, "{failed} failed");
    assert!(to_eject < Duration::from_secs(2), "{to_eject:?}");
    assert!(to_return < Duration::from_secs(4), "{to_return:?}");
    assert_eq!(endpoint(&gw, &urls[1]).await["healthy"], true);
    let metrics = gw.metrics().await;
    let series = format!("tokengate_upstream_endpoint_ejections_total{{group=\"svc\",endpoint=\"{}\"}}", urls[1]);
    assert_eq!(sample(&metrics, &series), 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_fewer_requests_to_a_slow_endpoint() {
    let fast1 = Instance::start(Duration::ZERO).await;
    let fast2 = Instance::start(Duration::ZERO).await;
    let slow = Instance::start(Duration::from_millis(200)).await;
    let urls = vec![fast1.url(), fast2.url(), slow.url()];
    let gw = Arc::new(Gw::start_text(&config(&group(&urls, "balance = \"least_request\""))).await);
    let mut clients = Vec::new();
    for _ in 0..6 {
        let gw = gw.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = gw.plain_conn().await;
            for _ in 0..20 {
                assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let (f1, f2, s) = (fast1.requests(), fast2.requests(), slow.requests());
    eprintln!("least_request: fast {f1} and {f2}, slow {s} of 120");
    assert_eq!(f1 + f2 + s, 120);
    assert!(s * 4 < f1.min(f2), "the slow endpoint got {s}, the fast ones {f1} and {f2}");
}

/// `hash` on `sub`: each caller stays on one endpoint; removing one endpoint of four by a reload
/// moves about a quarter of them (only the removed endpoint's), and keeps the others' pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_sub_keeps_callers_and_a_reload_moves_about_a_quarter() {
    let eps = [
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
    ];
    let urls: Vec<String> = eps.iter().map(Instance::url).collect();
    let hash = "balance = \"hash\"\nhash_on = \"sub\"";
    let text = |urls: &[String]| {
        let list: Vec<String> = urls.iter().map(|e| format!("{e:?}")).collect();
        config(&format!(
            "\n[[upstreams]]\nname = \"svc\"\nendpoints = [{}]\n{hash}\n{}",
            list.join(", "),
            route("/svc", "svc", "")
        ))
    };
    let gw = Gw::start_text(&text(&urls)).await;
    let callers = 400;
    let tokens: Vec<String> = (0..callers).map(|i| gw.mint(&format!("user-{i}"), "")).collect();
    let mut conn = gw.plain_conn().await;
    let mut placed = HashMap::new();
    for (i, tok) in tokens.iter().enumerate() {
        let auth = format!("Bearer {tok}");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let r = conn.send(req("GET", "/svc/x", &[("authorization", &auth)], empty())).await;
            assert_eq!(r.status, 200, "{}", r.text());
            seen.push(r.header("x-instance").unwrap().to_owned());
        }
        assert_eq!(seen[0], seen[1], "one caller, one endpoint");
        placed.insert(i, seen[0].clone());
    }
    let mut spread: HashMap<&str, usize> = HashMap::new();
    placed.values().for_each(|p| *spread.entry(p).or_default() += 1);
    assert_eq!(spread.len(), 4, "{spread:?}");
    assert!(spread.values().all(|&n| n > callers / 8), "{spread:?}");

    // Endpoint 2 leaves.
    let conns_before: Vec<usize> = eps.iter().map(Instance::conns).collect();
    let g0 = gw.wait_watcher_ready().await;
    let kept: Vec<String> = [0, 1, 3].iter().map(|&i| urls[i].clone()).collect();
    replace_file(&gw.config, text(&kept).as_bytes());
    let doc = gw.wait_generation_above(g0, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    let removed = eps[2].addr.port().to_string();
    let mut moved = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let auth = format!("Bearer {tok}");
        let r = conn.send(req("GET", "/svc/x", &[("authorization", &auth)], empty())).await;
        assert_eq!(r.status, 200);
        let now = r.header("x-instance").unwrap();
        assert_ne!(now, removed);
        if now != placed[&i] {
            moved += 1;
            assert_eq!(placed[&i], removed, "only the removed endpoint's callers move");
        }
    }
    let fraction = moved as f64 / callers as f64;
    eprintln!(
        "hash: {moved} of {callers} callers moved ({fraction:.3}) when one endpoint of four left; spread {spread:?}"
    );
    assert!((0.15..0.35).contains(&fraction), "{fraction}");
    // The kept endpoints' pools were adopted: no new connection to any of them.
    for i in [0, 1, 3] {
        assert_eq!(eps[i].conns(), conns_before[i], "endpoint {i} kept its pooled connection");
    }
    // The removed endpoint's series are gone; the kept ones count on from before the reload.
    let metrics = gw.metrics().await;
    assert!(!metrics.contains(&format!("endpoint=\"{}\"", urls[2])), "{metrics}");
    let requests = |i: usize| {
        let series = format!("tokengate_upstream_endpoint_requests_total{{group=\"svc\",endpoint=\"{}\"}}", urls[i]);
        sample(&metrics, &series) as usize
    };
    for i in [0, 1, 3] {
        assert_eq!(
            requests(i),
            eps[i].requests(),
            "endpoint {i}: every request it served, before and after the reload"
        );
    }
}

/// An ejected endpoint stays ejected across a reload that keeps it; the others keep their pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_ejection_state_and_pools() {
    let a = Instance::start(Duration::ZERO).await;
    let dead = format!("http://{}", closed_port().await);
    let urls = vec![a.url(), dead.clone()];
    let eject = "eject = { consecutive_failures = 2, base_secs = 60, max_secs = 60 }";
    let gw = Gw::start_text(&config(&group(&urls, eject))).await;
    let mut conn = gw.plain_conn().await;
    for _ in 0..6 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    let e = endpoint(&gw, &dead).await;
    assert_eq!((e["healthy"].as_bool(), e["ejections"].as_u64()), (Some(false), Some(1)), "{e}");
    assert_eq!(a.conns(), 1);

    let g0 = gw.wait_watcher_ready().await;
    let other = Instance::start(Duration::ZERO).await;
    let mut text = config(&group(&urls, eject));
    text.push_str(&route("/other", &other.url(), "public = true"));
    replace_file(&gw.config, text.as_bytes());
    gw.wait_generation_above(g0, 10).await;
    let before = a.requests();
    for _ in 0..4 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    assert_eq!(a.requests(), before + 4, "the ejected endpoint stays out after the reload");
    assert_eq!(a.conns(), 1, "the kept endpoint's pool was adopted");
    let e = endpoint(&gw, &dead).await;
    assert_eq!((e["healthy"].as_bool(), e["ejections"].as_u64()), (Some(false), Some(1)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_down_is_a_quick_502_in_panic_mode() {
    let dead: Vec<String> = vec![format!("http://{}", closed_port().await), format!("http://{}", closed_port().await)];
    let eject = "eject = { consecutive_failures = 1, base_secs = 60, max_secs = 60 }";
    let gw = Gw::start_text(&config(&group(&dead, eject))).await;
    let mut conn = gw.plain_conn().await;
    for _ in 0..4 {
        let started = Instant::now();
        let r = get(&mut conn, "/svc/x").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    let doc = upstreams(&gw).await;
    let eps = doc["upstreams"][0]["endpoints"].as_array().unwrap().clone();
    assert!(eps.iter().all(|e| e["healthy"] == false), "{doc}");
    // Panic mode: tried anyway, each request on both endpoints (the retry).
    assert!(eps.iter().all(|e| e["requests"].as_u64() >= Some(3)), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_refusals_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let refused = |text: String| {
        std::fs::write(&path, text).unwrap();
        tokengate::config::Config::load(&path).expect_err("refused").to_string()
    };
    let one = vec!["http://127.0.0.1:1".to_string()];
    let cases = [
        (
            config(&route("/svc", "orders", "public = true")),
            "route \"/svc\": upstream \"orders\" is no [[upstreams]] name",
        ),
        (config(&group(&one, "balance = \"random\"")), "balance \"random\" is not"),
        (config(&group(&["ftp://x:1".to_string()], "")), "endpoints \"ftp://x:1\" must be http://host:port"),
        (config(&group(&[], "")), "endpoints must list at least one"),
        (config(&group(&one, "eject = { max_secs = 1 }")), "eject.max_secs must be at least eject.base_secs"),
        (
            config(&group(&one, "balance = \"hash\"\nhash_on = \"header:a b\"")),
            "hash_on \"header:a b\" does not name a header",
        ),
        (config(&group(&one, "retry_budget = { ratio = 2.0 }")), "retry_budget.ratio must be between 0 and 1"),
        (
            config(&format!("{}\n[[upstreams]]\nname = \"svc\"\nendpoints = [\"http://a:1\"]\n", group(&one, ""))),
            "listed twice",
        ),
        (config("\n[[upstreams]]\nname = \"echo\"\nendpoints = [\"http://a:1\"]\n"), "name \"echo\" must be letters"),
        (config(&route("/u", "localhost:8080", "public = true")), "unsupported or missing scheme"),
    ];
    for (text, want) in cases {
        let e = refused(text);
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    // A URL and `echo` still work as before.
    std::fs::write(&path, config(&(route("/a", "http://127.0.0.1:1/base", "") + &route("/e", "echo", "")))).unwrap();
    tokengate::config::Config::load(&path).expect("URL and echo upstreams");
}

/// `hash_on = "header:X-Tenant"` on a public route: one tenant, one endpoint; a request without
/// the header is balanced in turn. `hash_on = "ip"`: one client address, one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_or_the_ip() {
    let eps = [
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
        Instance::start(Duration::ZERO).await,
    ];
    let urls: Vec<String> = eps.iter().map(Instance::url).collect();
    let gw = Gw::start_text(&config(&group(&urls, "balance = \"hash\"\nhash_on = \"header:X-Tenant\""))).await;
    let mut conn = gw.plain_conn().await;
    let mut tenants_seen = std::collections::HashSet::new();
    for t in 0..30 {
        let tenant = format!("tenant-{t}");
        let mut at = std::collections::HashSet::new();
        for _ in 0..3 {
            let r = conn.send(req("GET", "/svc/x", &[("x-tenant", &tenant)], empty())).await;
            at.insert(r.header("x-instance").unwrap().to_owned());
        }
        assert_eq!(at.len(), 1, "{tenant} on {at:?}");
        tenants_seen.extend(at);
    }
    assert_eq!(tenants_seen.len(), 3, "30 tenants spread over the three endpoints");
    let before: Vec<usize> = eps.iter().map(Instance::requests).collect();
    for _ in 0..3 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    let after: Vec<usize> = eps.iter().map(Instance::requests).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| a - b == 1), "no key: in turn ({before:?} -> {after:?})");

    let gw = Gw::start_text(&config(&group(&urls, "balance = \"hash\"\nhash_on = \"ip\""))).await;
    let before: Vec<usize> = eps.iter().map(Instance::requests).collect();
    let mut conn = gw.plain_conn().await;
    for _ in 0..9 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    let grew = eps.iter().zip(&before).filter(|(e, b)| e.requests() > **b).count();
    assert_eq!(grew, 1, "one client address, one endpoint");
}

/// A POST whose connection to a dead endpoint failed is sent to another, once, body and all:
/// nothing was written to the dead one, so nothing happens twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_on_connect_failure_and_sent_once() {
    let up = Upstream::start(Mode::Ok).await;
    let dead = format!("http://{}", closed_port().await);
    // Never ejected here: every other request picks the dead endpoint first.
    let eject = "eject = { consecutive_failures = 1000, base_secs = 1, max_secs = 1 }";
    let gw = Gw::start_text(&config(&group(&[dead.clone(), up.url()], eject))).await;
    let mut conn = gw.plain_conn().await;
    for _ in 0..6 {
        let r = conn.send(req("POST", "/svc/orders", &[], streamed(10_000))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 6, "each POST reached the live endpoint exactly once");
    assert!(seen.iter().all(|s| s.method == "POST" && s.body_sha256 == pattern_sha256(10_000)));
    let e = endpoint(&gw, &dead).await;
    assert_eq!((e["requests"].as_u64(), e["failures"].as_u64()), (Some(3), Some(3)), "{e}");
}

/// An endpoint that takes connections but never answers: its 504 (the route's time-out) counts
/// towards its ejection, and the next requests go to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_is_ejected_by_its_time_outs() {
    let hung = Instance::start(Duration::from_secs(30)).await;
    let ok = Instance::start(Duration::ZERO).await;
    let eject = "eject = { consecutive_failures = 1, base_secs = 60, max_secs = 60 }";
    let mut text = group(&[hung.url(), ok.url()], eject);
    text = text.replace("public = true", "public = true\nupstream_timeout_secs = 1");
    let gw = Gw::start_text(&config(&text)).await;
    let mut conn = gw.plain_conn().await;
    let started = Instant::now();
    assert_eq!(get(&mut conn, "/svc/x").await.status, 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let mut conn = gw.plain_conn().await;
    for _ in 0..4 {
        assert_eq!(get(&mut conn, "/svc/x").await.status, 200);
    }
    assert_eq!((hung.requests(), ok.requests()), (1, 4));
    let e = endpoint(&gw, &hung.url()).await;
    assert_eq!((e["healthy"].as_bool(), e["failures"].as_u64()), (Some(false), Some(1)), "{e}");
}

/// `hash_on` a claim path: one tenant (a nested claim, whatever the caller's `sub`), one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_claim_path() {
    let eps = [Instance::start(Duration::ZERO).await, Instance::start(Duration::ZERO).await];
    let list: Vec<String> = eps.iter().map(|e| format!("{:?}", e.url())).collect();
    let text = format!(
        "\n[[upstreams]]\nname = \"svc\"\nendpoints = [{}]\nbalance = \"hash\"\nhash_on = \"org.tenant\"\n{}",
        list.join(", "),
        route("/svc", "svc", "")
    );
    let gw = Gw::start_text(&config(&text)).await;
    let key = gw.key("k1");
    let mut conn = gw.plain_conn().await;
    let mut tenants_at = std::collections::HashSet::new();
    for t in 0..12 {
        let mut at = std::collections::HashSet::new();
        for user in 0..3 {
            let mut c = claims(&format!("user-{t}-{user}"), "");
            c["org"] = serde_json::json!({ "tenant": format!("tenant-{t}") });
            let auth = format!("Bearer {}", token(&key, &c));
            let r = conn.send(req("GET", "/svc/x", &[("authorization", &auth)], empty())).await;
            assert_eq!(r.status, 200, "{}", r.text());
            at.insert(r.header("x-instance").unwrap().to_owned());
        }
        assert_eq!(at.len(), 1, "tenant-{t}'s three users on {at:?}");
        tenants_at.extend(at);
    }
    assert_eq!(tenants_at.len(), 2, "12 tenants spread over both endpoints");
}
