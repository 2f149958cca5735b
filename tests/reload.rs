//! Hot reload without restart: keys added and removed, a broken config refused, routes and the
//! certificate replaced. Every wait polls the admin `/reload` document with a bounded timeout.

mod common;

use common::*;
use tokengate::keys::Alg;

fn routes(up: &Upstream) -> String {
    route("/api", &up.url(), "")
}

/// Retries `GET path` until it answers `want` (panics after 10 s with the last answer).
async fn eventually_status(gw: &Gw, path: &str, tok: &str, want: u16) -> Resp {
    poll_until(10, &format!("{path} to answer {want}"), || async {
        let r = gw.get_with(path, tok).await;
        if r.status == want {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_added_and_removed_without_restart() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let g0 = gw.wait_watcher_ready().await;

    // A key the gateway does not know yet.
    let (pem, k2) = fresh_key("k2", Alg::ES256);
    let tok2 = token(&k2, &claims("kate", ""));
    let r = gw.get_with("/api/x", &tok2).await;
    assert_eq!(r.status, 401);
    assert!(r.www_auth().contains("error=\"invalid_token\""));

    // Added like an editor would: temp file, then rename.
    let tmp = gw.path("keys/k2.pem.partial");
    std::fs::write(&tmp, &pem).unwrap();
    std::fs::rename(&tmp, gw.path("keys/k2.pem")).unwrap();
    let doc = gw.wait_generation_above(g0, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    let r = eventually_status(&gw, "/api/x", &tok2, 200).await;
    assert_eq!(r.text(), "upstream-ok");
    assert_eq!(up.last().header("x-auth-subject"), Some("kate"));
    // The active key is still k1.
    let minted = gw.mint("m", "");
    assert_eq!(header_of(&minted)["kid"], "k1");
    assert_eq!(gw.get_with("/api/x", &minted).await.status, 200);

    // Removed: its tokens are refused again, k1's still pass.
    let g1 = gw.generation().await;
    std::fs::remove_file(gw.path("keys/k2.pem")).unwrap();
    gw.wait_generation_above(g1, 10).await;
    let r = eventually_status(&gw, "/api/x", &tok2, 401).await;
    assert!(r.www_auth().starts_with("Bearer realm=\"tokengate\", error=\"invalid_token\""), "{}", r.www_auth());
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(gw.get_with("/api/x", &gw.mint("m", "")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_is_refused_and_the_old_one_keeps_serving() {
    let up = Upstream::start(Mode::Ok).await;
    let good = config_text("", &routes(&up));
    let gw = Gw::start_text(&good).await;
    let tok = gw.mint("alice", "");
    let g0 = gw.wait_watcher_ready().await;
    let before = gw.reload_status().await;

    // Not TOML at all.
    replace_file(&gw.config, b"[server\nlisten = nope");
    let doc = gw.wait_reload_error(10).await;
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert!(doc["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{doc}");
    assert_eq!(doc["last_reload"], before["last_reload"], "a failed reload moved last_reload");
    let r = gw.get_with("/api/x", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get("/api/x", &[]).await.status, 401);

    // Valid TOML, invalid config: the new route must not appear.
    let up2 = Upstream::start(Mode::Ok).await;
    let bad =
        config_text("", &format!("{}\n[[routes]]\nprefix = \"new\"\nupstream = \"{}\"\n", routes(&up), up2.url()));
    replace_file(&gw.config, bad.as_bytes());
    let doc = gw
        .wait_reload(10, "the semantic error reported", |doc| {
            doc["last_error"].as_str().is_some_and(|e| e.contains("new"))
        })
        .await;
    assert_eq!(doc["generation"].as_u64(), Some(g0), "{doc}");
    assert_eq!(gw.get_with("/api/x", &tok).await.status, 200);

    // Fixed: a new generation, no error, and its new route serves.
    let fixed =
        config_text("", &format!("{}\n[[routes]]\nprefix = \"/new\"\nupstream = \"{}\"\n", routes(&up), up2.url()));
    replace_file(&gw.config, fixed.as_bytes());
    let doc = gw.wait_generation_above(g0, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    let r = eventually_status(&gw, "/new/y", &tok, 200).await;
    assert_eq!(r.text(), "upstream-ok");
    assert_eq!(up2.last().uri, "/new/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_is_served_to_new_connections() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let tok = gw.mint("alice", "");
    let old = gw.cert.clone();
    assert_eq!(gw.served_cert(std::slice::from_ref(&old)).await.as_ref(), Some(&old));
    let mut open = gw.tls(false).await;
    assert_eq!(open.peer_cert.as_ref(), Some(&old));
    assert_eq!(
        open.send(req("GET", "/api/1", &[("authorization", &format!("Bearer {tok}"))], empty())).await.status,
        200
    );
    let g0 = gw.wait_watcher_ready().await;

    let (tmp_crt, tmp_key) = (gw.path("certs/next.crt.tmp"), gw.path("certs/next.key.tmp"));
    tokengate::tls::write_self_signed(&tmp_crt, &tmp_key).unwrap();
    let new = read_cert(&tmp_crt);
    assert_ne!(new, old);
    std::fs::rename(&tmp_key, gw.path("certs/gateway.key")).unwrap();
    std::fs::rename(&tmp_crt, gw.path("certs/gateway.crt")).unwrap();
    gw.wait_generation_above(g0, 10).await;

    let roots = [old.clone(), new.clone()];
    poll_until(10, "the new certificate served", || async {
        let served = gw.served_cert(&roots).await;
        if served.as_ref() == Some(&new) {
            Ok(())
        } else {
            Err(format!("got old={}", served.as_ref() == Some(&old)))
        }
    })
    .await;
    assert!(gw.reload_status().await["last_error"].is_null());
    // A fresh connection trusting only the new certificate works end to end.
    let mut fresh = Conn::tls(gw.https, std::slice::from_ref(&new), true).await;
    assert_eq!(fresh.peer_cert.as_ref(), Some(&new));
    assert_eq!(
        fresh.send(req("GET", "/api/2", &[("authorization", &format!("Bearer {tok}"))], empty())).await.status,
        200
    );
    // The connection opened before the reload keeps working on its original handshake.
    let r = open.send(req("GET", "/api/3", &[("authorization", &format!("Bearer {tok}"))], empty())).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/api/3");
}
