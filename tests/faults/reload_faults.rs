//! Hot reload under broken files: an emptied keys folder, a key file and a config truncated
//! mid-write, a route naming a CA file that does not exist. Each is refused with `/reload`
//! `last_error` set, the last good snapshot keeps serving, and the repaired file is picked up.

use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::*;

const FAILED: &str = "tokengate_reloads_total{result=\"failed\"}";

/// Waits until one more reload has failed than `before`; the `/reload` document then.
async fn wait_refused(gw: &Gw, before: u64, what: &str) -> Value {
    eventually(10, &format!("a refused reload after {what}"), || async { metric(gw, FAILED).await > before }).await;
    let doc = gw.reload_status().await;
    assert!(doc["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: last_error not set: {doc}");
    doc
}

/// Asserts that `tok` (signed by the old keys) is still accepted.
async fn assert_old_token_ok(gw: &Gw, tok: &str, when: &str) {
    let r = gw.get_with("/api/x", tok).await;
    assert_eq!(r.status, 200, "{when}: a token of the last good key set was refused: {}", r.text());
}

fn jwks_kids(r: &Resp) -> Vec<String> {
    r.json()["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().unwrap_or("").to_owned()).collect()
}

fn pem_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("keys dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_keys_dir_is_refused_and_the_last_good_keys_keep_working() {
    let gw = Gw::start("", ECHO_ROUTES).await;
    let tok = gw.mint("alice", "");
    let g0 = gw.wait_watcher_ready().await;
    let failed = metric(&gw, FAILED).await;
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> =
        pem_files(&gw.path("keys")).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    assert!(!saved.is_empty(), "the first start wrote a key");

    for (p, _) in &saved {
        std::fs::remove_file(p).unwrap();
    }
    let doc = wait_refused(&gw, failed, "deleting every *.pem").await;
    eprintln!("emptied keys dir: {}", doc["last_error"]);
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert!(pem_files(&gw.path("keys")).is_empty(), "a reload must never generate a key");
    assert_old_token_ok(&gw, &tok, "keys folder emptied").await;
    let jwks = gw.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks_kids(&jwks), ["k1"], "the served JWKS still has the last good key");

    for (p, bytes) in &saved {
        replace_file(p, bytes);
    }
    let doc = gw.wait_generation_above(g0, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    assert_old_token_ok(&gw, &tok, "keys restored").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_truncated_mid_write_is_refused_until_it_is_whole_again() {
    let gw = Gw::start("", ECHO_ROUTES).await;
    let tok = gw.mint("alice", "");
    let g0 = gw.wait_watcher_ready().await;
    let k1 = gw.path("keys/k1.pem");
    let pem = std::fs::read(&k1).unwrap();

    // The active key, rewritten in place and cut in half (a crash mid-write).
    let failed = metric(&gw, FAILED).await;
    std::fs::write(&k1, &pem[..pem.len() / 2]).unwrap();
    let doc = wait_refused(&gw, failed, "truncating k1.pem").await;
    eprintln!("truncated k1.pem: {}", doc["last_error"]);
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert!(doc["last_error"].as_str().unwrap().contains("k1"), "the error names the file: {doc}");
    assert_old_token_ok(&gw, &tok, "k1.pem truncated").await;

    std::fs::write(&k1, &pem).unwrap();
    let g1 = gw.wait_generation_above(g0, 10).await["generation"].as_u64().unwrap();
    assert!(gw.reload_status().await["last_error"].is_null());
    assert_old_token_ok(&gw, &tok, "k1.pem whole again").await;

    // A new key that arrives half-written: refused, then accepted once complete.
    let new_pem = tokengate::keys::generate_pem(tokengate::keys::Alg::ES256).unwrap();
    let failed = metric(&gw, FAILED).await;
    std::fs::write(gw.path("keys/k2.pem"), &new_pem.as_bytes()[..new_pem.len() / 2]).unwrap();
    let doc = wait_refused(&gw, failed, "a half-written k2.pem").await;
    assert_eq!(doc["generation"].as_u64(), Some(g1), "{doc}");
    assert!(doc["last_error"].as_str().unwrap().contains("k2"), "the error names the file: {doc}");
    assert_old_token_ok(&gw, &tok, "k2.pem half-written").await;
    std::fs::write(gw.path("keys/k2.pem"), &new_pem).unwrap();
    gw.wait_generation_above(g1, 10).await;
    let k2 = load_key(&gw.path("keys/k2.pem"), "k2");
    let r = gw.get_with("/api/x", &token(&k2, &claims("kate", ""))).await;
    assert_eq!(r.status, 200, "the completed k2 validates: {}", r.text());
    assert_old_token_ok(&gw, &tok, "after k2 arrived").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_truncated_mid_write_is_refused_and_the_old_config_keeps_serving() {
    let gw = Gw::start("", ECHO_ROUTES).await;
    let tok = gw.mint("alice", "");
    let g0 = gw.wait_watcher_ready().await;
    let text = std::fs::read_to_string(&gw.config).unwrap();

    // Cut in the second half, inside a quoted value, so the rest cannot be valid TOML.
    let half = text.len() / 2;
    let quote = half + text[half..].find("= \"").expect("a quoted value in the second half") + 3;
    let failed = metric(&gw, FAILED).await;
    std::fs::write(&gw.config, &text[..quote + 1]).unwrap();
    let doc = wait_refused(&gw, failed, "truncating gateway.toml").await;
    eprintln!("truncated config ({} of {} bytes): {}", quote + 1, text.len(), doc["last_error"]);
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert!(doc["last_error"].as_str().unwrap().contains("gateway.toml"), "the error names the file: {doc}");
    assert_old_token_ok(&gw, &tok, "config truncated").await;
    assert_eq!(gw.get("/api/x", &[]).await.status, 401, "the old routes' rules still apply");
    assert_serving(&gw, "config truncated").await;

    // The write completes.
    std::fs::write(&gw.config, &text).unwrap();
    let doc = gw.wait_generation_above(g0, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    assert_old_token_ok(&gw, &tok, "config whole again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_a_missing_upstream_ca_file_is_refused() {
    let gw = Gw::start("", ECHO_ROUTES).await;
    let tok = gw.mint("alice", "");
    let g0 = gw.wait_watcher_ready().await;
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let failed = metric(&gw, FAILED).await;
    let bad =
        format!("{text}{}", route("/secure", "https://127.0.0.1:9", "public = true\nupstream_ca = \"missing-ca.pem\""));
    replace_file(&gw.config, bad.as_bytes());
    let doc = wait_refused(&gw, failed, "a route with a missing upstream_ca").await;
    eprintln!("missing upstream_ca: {}", doc["last_error"]);
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert!(doc["last_error"].as_str().unwrap().contains("missing-ca.pem"), "the error names the file: {doc}");
    assert_eq!(gw.get("/secure/x", &[]).await.status, 404, "the refused route must not exist");
    assert_old_token_ok(&gw, &tok, "missing CA refused").await;
}
