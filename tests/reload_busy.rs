//! Reload in a busy folder: a log written beside the config every few milliseconds (as with
//! `tokengate serve > dir/gateway.log`) and junk in the keys folder must neither delay nor block a
//! reload. Each change (key rotation, route edit, certificate swap) is live within 2 s, with
//! traffic flowing throughout and not one request failing. A restart-only edit is reported by
//! `/reload` while the rest of the same edit applies.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokengate::keys::{generate_pem, Alg, SigningKey};

/// Every change must be visible this soon after the file operation that made it.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

fn routes(up: &Upstream, extra: &str) -> String {
    format!("[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n{extra}", up.url())
}

/// Waits (with the shared poller) until `check` passes; how long that took, failing after
/// `LIVE_WITHIN`.
async fn live_within<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    eventually(LIVE_WITHIN.as_secs(), &format!("{what} (while the folder is busy)"), check).await;
    start.elapsed()
}

/// A self-signed localhost certificate with its own subject, so a client can trust it and the
/// start certificate at once (same-subject roots would shadow each other).
fn write_next_certificate(crt: &std::path::Path, key: &std::path::Path) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "tokengate next");
    let pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&pair).unwrap();
    std::fs::write(key, pair.serialize_pem()).unwrap();
    std::fs::write(crt, cert.pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_within_2s_while_a_log_is_written_beside_the_config() {
    let up = Upstream::start(Mode::Ok).await;
    let text = config_text("", &routes(&up, ""));
    let gw = Gw::start_text(&text).await;
    gw.wait_watcher_ready().await;
    let tok = gw.mint("alice", "");

    // The busy folder: a log line every 2 ms beside the config, and a non-key file in keys/.
    let busy = Arc::new(AtomicBool::new(true));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (busy, writes) = (busy.clone(), writes.clone());
        let (log, junk) = (gw.path("gateway.log"), gw.path("keys/notes.txt"));
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log");
            while busy.load(Ordering::Relaxed) {
                let n = writes.fetch_add(1, Ordering::Relaxed);
                writeln!(f, "{{\"level\":\"INFO\",\"message\":\"access\",\"n\":{n}}}").expect("write log");
                if n % 10 == 0 {
                    std::fs::write(&junk, n.to_string()).expect("write junk");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Traffic throughout: one keep-alive connection plus a fresh one every 20th request, trusting
    // the current and the next certificate. k1's token stays valid through every change.
    let (next_crt, next_key) = (gw.path("next.crt.tmp"), gw.path("next.key.tmp"));
    write_next_certificate(&next_crt, &next_key);
    let (old_cert, new_cert) = (gw.cert.clone(), read_cert(&next_crt));
    let roots = vec![old_cert.clone(), new_cert.clone()];
    let traffic = {
        let (busy, https, roots, auth) = (busy.clone(), gw.https, roots.clone(), format!("Bearer {tok}"));
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u64, Vec::new());
            let mut conn = Conn::tls(https, &roots, false).await;
            while busy.load(Ordering::Relaxed) {
                if sent % 20 == 19 {
                    conn = Conn::tls(https, &roots, sent % 40 == 39).await;
                }
                let r = conn.send(req("GET", &format!("/api/t{sent}"), &[("authorization", &auth)], empty())).await;
                if r.status != 200 {
                    failed.push((sent, r.status, r.text()));
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (sent, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Key rotation: a new key file, then active_kid switched to it in gateway.toml.
    let pem = generate_pem(Alg::ES256).unwrap();
    let k2 = SigningKey::from_pem("k2", pem.as_bytes(), tokengate::config::RsaAlg::RS256).unwrap();
    let tok2 = token(&k2, &claims("kate", ""));
    assert_eq!(gw.get_with("/api/k2", &tok2).await.status, 401, "k2 is not trusted yet");
    replace_file(&gw.path("keys/k2.pem"), pem.as_bytes());
    let text = text.replace("active_kid = \"k1\"", "active_kid = \"k2\"");
    replace_file(&gw.config, text.as_bytes());
    let took = live_within("new key k2", || async { gw.get_with("/api/k2", &tok2).await.status == 200 }).await;
    eprintln!("key rotation live after {took:?}");
    let minted = gw.mint("m", "");
    assert_eq!(gw.get_with("/api/m", &minted).await.status, 200, "a token of the new active key passes");

    // 2. A route added.
    let up2 = Upstream::start(Mode::Ok).await;
    let new_route = format!("[[routes]]\nprefix = \"/new\"\nupstream = \"{}\"\n", up2.url());
    let text = text.replace(&routes(&up, ""), &routes(&up, &new_route));
    replace_file(&gw.config, text.as_bytes());
    let took = live_within("new route", || async { gw.get_with("/new/x", &tok).await.status == 200 }).await;
    eprintln!("route edit live after {took:?}");
    assert_eq!(up2.last().uri, "/new/x");

    // 3. The certificate swapped, key first, like a certificate manager.
    std::fs::rename(&next_key, gw.path("certs/gateway.key")).unwrap();
    std::fs::rename(&next_crt, gw.path("certs/gateway.crt")).unwrap();
    let took =
        live_within("new certificate", || async { gw.served_cert(&roots).await.as_ref() == Some(&new_cert) }).await;
    eprintln!("certificate swap live after {took:?}");

    // 4. A restart-only key changed together with a reloadable one: the route applies, and
    // /reload names the key until the edit is reverted.
    let text_moved = text.replace("listen = \"127.0.0.1:0\"\nlisten_plain", "listen = \"127.0.0.1:1\"\nlisten_plain");
    assert_ne!(text_moved, text, "the skeleton's server.listen line moved");
    let third = format!("[[routes]]\nprefix = \"/third\"\nupstream = \"{}\"\n", up2.url());
    let text_moved = text_moved.replace(&routes(&up, &new_route), &routes(&up, &format!("{new_route}{third}")));
    replace_file(&gw.config, text_moved.as_bytes());
    let auth = format!("Bearer {tok}");
    live_within("route next to a restart-only edit", || async {
        let mut c = Conn::tls(gw.https, &roots, false).await;
        c.send(req("GET", "/third/y", &[("authorization", &auth)], empty())).await.status == 200
    })
    .await;
    let doc = gw.reload_status().await;
    assert_eq!(doc["restart_required"], serde_json::json!(["server.listen"]), "{doc}");
    assert!(doc["last_error"].is_null(), "{doc}");
    replace_file(&gw.config, text.as_bytes());
    live_within("restart_required cleared by reverting", || async {
        gw.reload_status().await["restart_required"] == serde_json::json!([])
    })
    .await;

    busy.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let (sent, failed) = traffic.await.unwrap();
    assert!(writes.load(Ordering::Relaxed) > 200, "the folder was busy");
    assert!(sent > 100, "traffic flowed: {sent} requests");
    assert!(failed.is_empty(), "{} of {sent} requests failed during the reloads: {:?}", failed.len(), &failed[..1]);
    assert_eq!(gw.served_cert(std::slice::from_ref(&new_cert)).await, Some(new_cert), "the old certificate is gone");
}
