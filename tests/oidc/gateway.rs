//! tokengate trusting the real provider by URL (issue 11): its tokens accepted, a rotation
//! followed at once through the unknown-kid refetch, a forged-kid storm costing a handful of
//! fetches, the provider down with the known keys still working, a removed key refused after the
//! refresh, discovery, and an untrusted provider certificate refused.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokengate::keys::Alg;

use crate::common::metrics::sample;
use crate::common::poll::eventually;
use crate::common::tokens::{fresh_key, sign_with};
use crate::common::{route, Config, Gw};
use crate::oidc_provider::OidcProvider;

/// A gateway trusting `p` (`source`: the `jwks_uri` or `discovery` line) plus `extra` issuer keys,
/// with `/api` (any valid token), `/write` (scope `write`) and `/admin` (scope `admin`).
async fn gateway(p: &OidcProvider, source: &str, extra: &str) -> Gw {
    let issuer = format!(
        "\n[[issuers]]\nissuer = \"{}\"\n{source}\nca = \"{}\"\naudiences = [\"api\"]\nalgorithms = [\"RS256\", \"ES256\"]\n\
         require_typ = true\n{extra}\n",
        p.issuer(),
        p.ca_pem_path().display()
    );
    let routes = route("/api", "echo", "")
        + &route("/write", "echo", "scopes = [\"write\"]")
        + &route("/admin", "echo", "scopes = [\"admin\"]");
    let gw = Gw::start_config(&Config::new().rest(&issuer).rest(&routes)).await;
    eventually(15, "/readyz 200", || async { gw.admin_get("/readyz").await.0 == 200 }).await;
    gw
}

fn by_uri(p: &OidcProvider) -> String {
    format!("jwks_uri = \"{}\"", p.jwks_uri())
}

/// The `/issuers` entry of the provider.
async fn status(gw: &Gw, p: &OidcProvider) -> Value {
    let (code, body) = gw.admin_get("/issuers").await;
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("/issuers is JSON");
    doc["issuers"].as_array().unwrap().iter().find(|i| i["issuer"] == p.issuer()).cloned().expect("provider listed")
}

fn kids(v: &Value) -> Vec<String> {
    v["kids"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_pass_with_their_scopes() {
    let p = OidcProvider::start();
    let gw = gateway(&p, &by_uri(&p), "").await;
    let token = p.token("svc", "svc-secret", "read");
    let r = gw.get_with("/api/x", &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-auth-subject"], "svc", "{seen}");
    assert_eq!(seen["headers"]["x-auth-scope"], "read", "{seen}");
    // Scopes from the provider feed the same route checks.
    assert_eq!(gw.get_with("/write/x", &token).await.status, 403);
    assert_eq!(gw.get_with("/write/x", &p.token("svc", "svc-secret", "read write")).await.status, 200);
    assert_eq!(gw.get_with("/admin/x", &p.token("svc", "svc-secret", "read write")).await.status, 403);
    // Tampered, or signed by a key the provider never published under its kid: refused.
    let forged = sign_with(
        &fresh_key("x", Alg::RS256).1,
        &crate::common::tokens::header_of(&token),
        &crate::common::tokens::claims_of(&token),
    );
    let r = gw.get_with("/api/x", &forged).await;
    assert_eq!(r.status, 401);
    assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());

    let st = status(&gw, &p).await;
    assert_eq!(kids(&st), p.kids(), "{st}");
    assert_eq!(st["jwks_uri"], p.jwks_uri());
    assert!(st["last_error"].is_null() && st["next_fetch"].as_u64() > st["last_fetch"].as_u64(), "{st}");
    let text = gw.metrics().await;
    let iss = p.issuer();
    assert_eq!(sample(&text, &format!("tokengate_jwks_keys{{issuer=\"{iss}\"}}")), 1, "{text}");
    assert_eq!(sample(&text, &format!("tokengate_jwks_fetches_total{{issuer=\"{iss}\",result=\"ok\"}}")), 1);
    assert!(
        sample(&text, &format!("tokengate_jwks_last_success_timestamp_seconds{{issuer=\"{iss}\"}}")) > 1_700_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_at_the_provider_is_accepted_at_once_and_a_removed_key_refused() {
    let p = OidcProvider::start();
    // No scheduled refresh during the test: only the unknown-kid refetch can bring the new key.
    let gw = gateway(&p, &by_uri(&p), "jwks_refresh_secs = 3600\njwks_refetch_min_secs = 1").await;
    let old = p.token("svc", "svc-secret", "read");
    assert_eq!(gw.get_with("/api/x", &old).await.status, 200, "cached from here on");
    tokio::time::sleep(Duration::from_millis(1100)).await; // past jwks_refetch_min_secs

    let rotated = Instant::now();
    let new_kid = p.rotate_add();
    let new = p.token("svc", "svc-secret", "read");
    assert_eq!(crate::common::tokens::header_of(&new)["kid"], new_kid.as_str());
    let r = gw.get_with("/api/x", &new).await;
    let took = rotated.elapsed();
    assert_eq!(r.status, 200, "the new key is fetched by the first request that needs it: {}", r.text());
    eprintln!("rotation at the provider to acceptance: {took:?}");
    assert_eq!(gw.get_with("/api/x", &old).await.status, 200, "the old key is still published");

    // The provider drops the old key; the next refresh (here: another new kid) must end the
    // old token, although it sits in the verified-token cache.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.rotate_drop_old();
    let newest_kid = p.rotate_add();
    let newest = p.token("svc", "svc-secret", "read");
    assert_eq!(gw.get_with("/api/x", &newest).await.status, 200);
    assert_eq!(kids(&status(&gw, &p).await).len(), 2, "old key gone: {newest_kid} and {new_kid}");
    let r = gw.get_with("/api/x", &old).await;
    assert_eq!(r.status, 401, "a key the provider removed no longer verifies, cached or not");
    assert_eq!(gw.get_with("/api/x", &new).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_forged_kids_costs_a_handful_of_fetches() {
    let p = OidcProvider::start();
    // One refetch per second at most: the storm below lasts about 3 s.
    let gw = gateway(&p, &by_uri(&p), "jwks_refetch_min_secs = 1").await;
    let before = p.jwks_hits();
    let template = p.token("svc", "svc-secret", "read");
    let claims = crate::common::tokens::claims_of(&template);
    let attacker = fresh_key("a", Alg::RS256).1;
    let started = Instant::now();
    let mut conn = gw.tls(false).await;
    for i in 0..300 {
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("forged-{i}")});
        let token = sign_with(&attacker, &header, &claims);
        let r = conn
            .send(crate::common::client::req(
                "GET",
                "/api/x",
                &[("authorization", &format!("Bearer {token}"))],
                crate::common::client::empty(),
            ))
            .await;
        assert_eq!(r.status, 401, "forged kid {i}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fetches = p.jwks_hits() - before;
    let took = started.elapsed();
    eprintln!("300 forged kids in {took:?}: {fetches} JWKS fetches");
    // One per elapsed jwks_refetch_min_secs, whatever the number of forged kids.
    let bound = took.as_secs() + 1;
    assert!((1..=bound).contains(&fetches), "{fetches} fetches for 300 forged kids in {took:?}");
    // Known keys never waited meanwhile, and still pass.
    assert_eq!(gw.get_with("/api/x", &template).await.status, 200);
    let text = gw.metrics().await;
    let limited =
        sample(&text, &format!("tokengate_jwks_refetches_total{{issuer=\"{}\",outcome=\"rate_limited\"}}", p.issuer()));
    assert!(limited >= 300 - bound, "refused refetches counted: {limited}");
    // 300 x 10 ms of pacing; a wait of up to 1 s per forged kid would take minutes.
    assert!(took < Duration::from_secs(15), "refused at once, not after a wait each: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_provider_down_known_keys_keep_working() {
    let mut p = OidcProvider::start();
    let gw = gateway(&p, &by_uri(&p), "jwks_refetch_min_secs = 0\njwks_unknown_kid_wait_ms = 3000").await;
    let token = p.token("svc", "svc-secret", "read");
    p.stop();
    // An unknown kid makes it try (and fail) to fetch; nothing it had is lost.
    let stray = sign_with(
        &fresh_key("s", Alg::RS256).1,
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": "stray"}),
        &crate::common::tokens::claims_of(&token),
    );
    assert_eq!(gw.get_with("/api/x", &stray).await.status, 401);
    let st = status(&gw, &p).await;
    assert!(st["last_error"].as_str().is_some_and(|e| e.contains("connect")), "{st}");
    assert_eq!(kids(&st), p.kids(), "last good keys kept: {st}");
    assert_eq!(gw.get_with("/api/x", &token).await.status, 200);
    assert_eq!(gw.admin_get("/readyz").await.0, 200, "readiness does not depend on the provider after start");
    // Back up: the next fetch works again.
    p.restart();
    assert_eq!(gw.get_with("/api/x", &stray).await.status, 401);
    eventually(5, "fetching works again", || async { status(&gw, &p).await["last_error"].is_null() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_jwks_uri() {
    let p = OidcProvider::start();
    let gw = gateway(&p, "discovery = true", "").await;
    assert_eq!(gw.get_with("/api/x", &p.token("svc", "svc-secret", "read")).await.status, 200);
    let st = status(&gw, &p).await;
    assert_eq!((st["source"].as_str(), st["jwks_uri"].as_str()), (Some("discovery"), Some(p.jwks_uri().as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_provider_certificate_is_refused() {
    let p = OidcProvider::start();
    let text = Config::new()
        .rest(&format!(
            "\n[[issuers]]\nissuer = \"{}\"\njwks_uri = \"{}\"\nca = \"{}\"\naudiences = [\"api\"]\njwks_start_timeout_secs = 1\n",
            p.issuer(),
            p.jwks_uri(),
            p.unrelated_ca_pem_path().display()
        ))
        .rest(&route("/api", "echo", ""))
        .text();
    let gw = Gw::start_text(&text).await;
    // Ready after the start timeout, without this issuer.
    eventually(10, "/readyz 200 after jwks_start_timeout_secs", || async { gw.admin_get("/readyz").await.0 == 200 })
        .await;
    assert_eq!(gw.get_with("/api/x", &p.token("svc", "svc-secret", "read")).await.status, 401);
    let st = status(&gw, &p).await;
    assert!(st["last_error"].as_str().is_some_and(|e| e.contains("certificate")), "{st}");
    assert!(kids(&st).is_empty(), "{st}");
    assert_eq!(p.jwks_hits(), 0, "the TLS handshake failed before any request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_fetched_keys_unless_the_fetch_settings_change() {
    let p = OidcProvider::start();
    let gw = gateway(&p, &by_uri(&p), "jwks_refresh_secs = 3600").await;
    let token = p.token("svc", "svc-secret", "read");
    assert_eq!(gw.get_with("/api/x", &token).await.status, 200);
    let hits = p.jwks_hits();
    // A route and an audience change: the same key set (and its task) carries on, no fetch.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let generation = gw.generation().await;
    let edited =
        text.replace("audiences = [\"api\"]", "audiences = [\"api\", \"other\"]") + &route("/more", "echo", "");
    crate::common::replace_file(&gw.config, edited.as_bytes());
    gw.wait_generation_above(generation, 5).await;
    assert_eq!(gw.get_with("/more/x", &token).await.status, 200);
    assert_eq!(p.jwks_hits(), hits, "a reload that keeps the fetch settings does not refetch");
    // A changed fetch setting makes a new set, which fetches before its first use.
    let generation = gw.generation().await;
    crate::common::replace_file(
        &gw.config,
        edited.replace("jwks_refresh_secs = 3600", "jwks_refresh_secs = 1800").as_bytes(),
    );
    gw.wait_generation_above(generation, 5).await;
    assert_eq!(gw.get_with("/api/x", &token).await.status, 200);
    assert_eq!(p.jwks_hits(), hits + 1, "a new set fetched once");
}
