//! One central tokengate that issues tokens and two validating sidecars (`[tokens] issue_tokens
//! = false`, an empty keys folder, no private key) trusting it by URL, all on one real
//! `redis-server` with the same `key_prefix` (issue 16), over the wire: the central's tokens
//! accepted at both sidecars; a revocation at the central refused at both within a second
//! (p50/p99 printed); a key rotation at the central followed by both within 3 s through the
//! unknown-`kid` refetch (time printed); a token signed by a key the central never published
//! refused; the central down and the sidecars still validating with their last good keys.
//!
//! Key changes announced through the Redis, timed with default sidecar settings, are in
//! [`key_news`].
//!
//! Sidecar A takes the central's keys from `jwks_uri`, sidecar B by `discovery = true`: the
//! central's issuer is its plain listener's URL (`http://127.0.0.1:<port>`, a port picked free
//! before it starts), so `{issuer}/.well-known/oauth-authorization-server` is its metadata. Both
//! sidecars set `jwks_refetch_min_secs = 1`, so that the forged `kid`s of step 4 really refetch
//! a second after the rotation's fetch (and are refused all the same); rotations themselves no
//! longer need it, being announced.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use common::*;
use redis_server::RedisServer;
use tokengate::commands::{mint, MintRequest};
use tokengate::keys::Alg;

use redis_server::free_port;

mod key_news;

const SECRET: &str = "app-Secret-1";

fn state(redis: &RedisServer) -> String {
    format!("\n[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"fleet:\"\ntimeout_ms = 1000\n", redis.url())
}

const API: &str = "\n[[routes]]\nprefix = \"/api\"\nupstream = \"echo\"\n";

/// The central: issues tokens as `issuer` on its plain listener `port` (token endpoint allowed
/// there), signing with the keys in `keys`.
fn central_config(issuer: &str, port: u16, keys: &Path, active: &str, redis: &RedisServer) -> String {
    let hash = tokengate::secrets::hash(SECRET).unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
listen_plain = "127.0.0.1:{port}"
shutdown_grace_secs = 1

[admin]
listen = "127.0.0.1:0"

[tokens]
issuer = "{issuer}"
audience = "api"
keys_dir = "{keys}"
active_kid = "{active}"
allow_plain_token_endpoint = true
leeway_secs = 5

[log]
level = "warn"

[lockout]
per_ip_per_minute = 0

[[clients]]
id = "app"
secret_hash = "{hash}"
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]
{API}{state}"#,
        keys = keys.display(),
        state = state(redis),
    )
}

/// A validating sidecar: no key, trusting only the central (`source`: `jwks_uri = ...` or
/// `discovery = true`), its keys folder `keys` (empty).
fn sidecar_config(issuer: &str, source: &str, keys: &Path, redis: &RedisServer) -> String {
    sidecar_with(issuer, source, keys, "jwks_refetch_min_secs = 1\n", &state(redis))
}

/// [`sidecar_config`] with the issuer's `jwks_*` settings `tuning` and the `[state]` table
/// `state` (empty: its own embedded store, sharing nothing).
fn sidecar_with(issuer: &str, source: &str, keys: &Path, tuning: &str, state: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
listen_plain = "127.0.0.1:0"
shutdown_grace_secs = 1

[admin]
listen = "127.0.0.1:0"

[tokens]
issue_tokens = false
audience = "api"
keys_dir = "{keys}"

[log]
level = "warn"

[[issuers]]
issuer = "{issuer}"
{source}
algorithms = ["ES256"]
require_typ = true
{tuning}{API}{state}"#,
        keys = keys.display(),
    )
}

fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("app:{SECRET}")))
}

fn form(path: &str, body: &str) -> http::Request<ReqBody> {
    let auth = basic();
    req(
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", auth.as_str())],
        full(body.to_owned()),
    )
}

fn bearer(tok: &str) -> http::Request<ReqBody> {
    req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())
}

/// A client-credentials token from the central's token endpoint.
async fn cc_token(central: &mut Conn) -> String {
    let r = central.send(form("/oauth2/token", "grant_type=client_credentials")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn kid(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_owned()
}

fn mint_app(config: &Path) -> String {
    let req = MintRequest { sub: "svc", scope: "read", ttl: Some(600), aud: None, client_id: Some("app") };
    mint(config, &req).expect("mint at the central")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// A sidecar's `/issuers` document.
async fn issuers(gw: &Gw) -> Value {
    let (code, body) = gw.admin_get("/issuers").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_issuer_and_two_validating_sidecars_on_one_redis() {
    let redis = RedisServer::start(false);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let central_keys = tempfile::tempdir().unwrap();
    std::fs::write(central_keys.path().join("k1.pem"), fresh_key("k1", Alg::ES256).0).unwrap();
    let mut central = Gw::start_text(&central_config(&issuer, port, central_keys.path(), "k1", &redis)).await;
    assert_eq!(central.plain.port(), port);

    let (keys_a, keys_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let jwks_uri = format!("jwks_uri = \"{issuer}/.well-known/jwks.json\"");
    let a = Gw::start_text(&sidecar_config(&issuer, &jwks_uri, keys_a.path(), &redis)).await;
    let b = Gw::start_text(&sidecar_config(&issuer, "discovery = true", keys_b.path(), &redis)).await;
    for s in [&a, &b] {
        eventually(10, "sidecar /readyz 200 after its first fetch", || async { s.admin_get("/readyz").await.0 == 200 })
            .await;
        let doc = issuers(s).await;
        let list = doc["issuers"].as_array().unwrap();
        assert_eq!(list.len(), 1, "a sidecar trusts only the central: {doc}");
        assert_eq!(list[0]["issuer"], issuer.as_str(), "{doc}");
        assert_eq!(list[0]["kids"], serde_json::json!(["k1"]), "{doc}");
    }

    let mut at_central = Conn::plain(central.plain).await;
    let (mut at_a, mut at_b) = (Conn::plain(a.plain).await, Conn::plain(b.plain).await);

    // The sidecars have no endpoint of their own: every OAuth path, and the admin revocation,
    // is not found there; and nothing was written to their empty keys folders.
    for path in ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"] {
        let r = at_a.send(form(path, "grant_type=client_credentials")).await;
        assert_eq!(r.status, 404, "POST {path} at a sidecar: {}", r.text());
    }
    for path in ["/.well-known/jwks.json", "/.well-known/oauth-authorization-server"] {
        let r = at_b.send(req("GET", path, &[], empty())).await;
        assert_eq!(r.status, 404, "GET {path} at a sidecar: {}", r.text());
    }
    let admin_token = mint(
        &central.config,
        &MintRequest { sub: "op", scope: ADMIN_SCOPE, ttl: Some(600), aud: None, client_id: Some("app") },
    )
    .unwrap();
    assert_eq!(a.admin_post("/revoke?client_id=app", Some(&admin_token)).await.status, 404);

    // 1. The central's tokens pass at both sidecars.
    let token = cc_token(&mut at_central).await;
    assert_eq!(kid(&token), "k1");
    for (name, conn) in [("A", &mut at_a), ("B", &mut at_b)] {
        let r = conn.send(bearer(&token)).await;
        assert_eq!(r.status, 200, "central token at sidecar {name}: {}", r.text());
        assert_eq!(r.json()["headers"]["x-auth-subject"], "app", "{}", r.text());
    }

    // 2. Revocation at the central (RFC 7009) refused at both sidecars within a second.
    let mut took = Vec::new();
    for i in 0..100 {
        let tok = mint_app(&central.config);
        assert_eq!(at_a.send(bearer(&tok)).await.status, 200, "token {i} at A before revocation");
        assert_eq!(at_b.send(bearer(&tok)).await.status, 200, "token {i} at B before revocation");
        let r = at_central.send(form("/oauth2/revoke", &format!("token={tok}&token_type_hint=access_token"))).await;
        assert_eq!(r.status, 200, "revoke {i}: {}", r.text());
        let revoked_at = Instant::now();
        let (mut refused_a, mut refused_b) = (false, false);
        while !(refused_a && refused_b) {
            for (refused, conn) in [(&mut refused_a, &mut at_a), (&mut refused_b, &mut at_b)] {
                if !*refused {
                    let r = conn.send(bearer(&tok)).await;
                    *refused = r.status == 401;
                    assert!(r.status == 200 || r.status == 401, "{}", r.text());
                }
            }
            assert!(revoked_at.elapsed() < Duration::from_secs(1), "token {i} still accepted at a sidecar after 1 s");
        }
        took.push(revoked_at.elapsed());
    }
    took.sort();
    let (p50, p99) = (percentile(&took, 50), percentile(&took, 99));
    eprintln!(
        "revocation central -> both sidecars over {}: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1));

    // 3. Rotation at the central: k2 added and made active; its first k2 token is accepted at
    //    both sidecars within 3 s (unknown kid -> refetch of the central's JWKS).
    central.wait_watcher_ready().await;
    std::fs::write(central_keys.path().join("k2.pem"), fresh_key("k2", Alg::ES256).0).unwrap();
    replace_file(&central.config, central_config(&issuer, port, central_keys.path(), "k2", &redis).as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    let rotated = loop {
        let t = cc_token(&mut at_central).await;
        if kid(&t) == "k2" {
            break t;
        }
        assert!(Instant::now() < deadline, "the central still signs with {} 10 s after the rotation", kid(&t));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rotated_at = Instant::now();
    let mut accepted = Vec::new();
    for (name, conn) in [("A", &mut at_a), ("B", &mut at_b)] {
        loop {
            let r = conn.send(bearer(&rotated)).await;
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 401, "{}", r.text());
            assert!(rotated_at.elapsed() < Duration::from_secs(3), "k2 still refused at sidecar {name} after 3 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted.push((name, rotated_at.elapsed()));
    }
    eprintln!("rotation at the central -> k2 token accepted: {accepted:?}");
    // The old key still validates (still in the central's folder, so still published).
    assert_eq!(at_b.send(bearer(&token)).await.status, 200, "k1 token after the rotation");

    // 4. A key the central never published, even under a kid it did publish: refused.
    tokio::time::sleep(Duration::from_millis(1100)).await; // past jwks_refetch_min_secs
    for kid_name in ["k2", "k9"] {
        let mut header = header_of(&rotated);
        header["kid"] = kid_name.into();
        let forged = sign_with(&fresh_key(kid_name, Alg::ES256).1, &header, &claims_of(&rotated));
        for (name, conn) in [("A", &mut at_a), ("B", &mut at_b)] {
            let r = conn.send(bearer(&forged)).await;
            assert_eq!(r.status, 401, "forged {kid_name} token at sidecar {name}: {}", r.text());
            assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());
        }
    }

    // Turning the central into a sidecar by a reload is refused whole: it applies only at start.
    let base = central.generation().await;
    let as_sidecar = format!("listen_plain = \"127.0.0.1:{port}\"\n[tokens]\nissue_tokens = false\n[[issuers]]\nissuer = \"https://other.example\"\njwks_uri = \"https://other.example/jwks.json\"\n");
    replace_file(&central.config, format!("[server]\n{as_sidecar}").as_bytes());
    let doc = central.wait_reload_error(5).await;
    assert!(doc["last_error"].as_str().unwrap().contains("tokens.issue_tokens changed"), "{doc}");
    assert_eq!(central.generation().await, base, "{doc}");
    assert_eq!(
        Conn::plain(central.plain).await.send(form("/oauth2/token", "grant_type=client_credentials")).await.status,
        200
    );
    replace_file(&central.config, central_config(&issuer, port, central_keys.path(), "k2", &redis).as_bytes());

    // 5. The central down: the sidecars keep validating with their last good keys.
    drop(at_central);
    central.shutdown().await;
    let after = mint_app(&central.config); // signed with k2 from the central's files
    for (name, conn) in [("A", &mut at_a), ("B", &mut at_b)] {
        for t in [&token, &rotated, &after] {
            let r = conn.send(bearer(t)).await;
            assert_eq!(r.status, 200, "sidecar {name} with the central down: {}", r.text());
        }
    }
    for s in [&a, &b] {
        assert_eq!(s.admin_get("/readyz").await.0, 200, "a sidecar stays ready with the central down");
    }
    assert!(std::fs::read_dir(keys_a.path()).unwrap().next().is_none(), "sidecar A's keys folder was written to");
    assert!(std::fs::read_dir(keys_b.path()).unwrap().next().is_none(), "sidecar B's keys folder was written to");
}
