//! The admin listener, the `tokengate` binary's one-shot commands, and graceful shutdown.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tokengate::config::RsaAlg;
use tokengate::keys::{Alg, SigningKey};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokengate")).args(args).env("RUST_LOG", "error").output().expect("run tokengate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn routes(up: &Upstream) -> String {
    route("/api", &up.url(), "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_reload_and_metrics() {
    let up = Upstream::start(Mode::Ok).await;
    let t0 = SystemTime::now() - Duration::from_secs(2);
    let gw = Gw::start("", &routes(&up)).await;
    assert_eq!(gw.admin_get("/healthz").await, (200, "ok".to_string()));
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    let doc = gw.reload_status().await;
    assert!(doc["generation"].as_u64().is_some_and(|g| g >= 1), "{doc}");
    let last = doc["last_reload"].as_str().unwrap_or_else(|| panic!("last_reload is not a string: {doc}"));
    let when = humantime::parse_rfc3339(last).unwrap_or_else(|e| panic!("last_reload {last:?}: {e}"));
    assert!(when >= t0 && when <= SystemTime::now(), "{last}");
    assert!(doc["last_error"].is_null(), "{doc}");

    let tok = gw.mint("alice", "");
    assert_eq!(gw.get_with("/api/m", &tok).await.status, 200);
    let mut c = claims("m", "");
    c["iat"] = serde_json::json!(now() - 7200);
    c["exp"] = serde_json::json!(now() - 3600);
    assert_eq!(gw.get_with("/api/m", &token(&gw.key("k1"), &c)).await.status, 401);
    let m = gw.metrics().await;
    assert!(m.lines().any(|l| l == r#"tokengate_requests_total{route="/api",status="200"} 1"#), "{m}");
    assert!(m.lines().any(|l| l == r#"tokengate_token_rejections_total{reason="expired"} 1"#), "{m}");
    // The admin port is not the proxy: no JWT check, no proxying.
    assert_eq!(gw.admin_get("/api/m").await.0, 404);
    // And the proxy ports do not serve the admin endpoints without a route.
    assert_eq!(gw.get("/healthz", &[]).await.status, 404);
}

#[test]
fn check_accepts_a_good_config_and_names_the_problem_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    let routes = &route("/api", "echo", "");
    std::fs::write(&cfg, config_text("", routes)).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = bin(&["check", "--config", cfg_s]);
    assert!(out.status.success(), "stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok:"), "{}", text(&out.stdout));
    assert!(!dir.path().join("keys").exists(), "check creates nothing");
    assert!(text(&out.stdout).contains("would create the ES256 signing key"), "{}", text(&out.stdout));
    // With a key in place, nothing is left to create and a missing active key is an error.
    let key = dir.path().join("keys/k1.pem");
    assert!(bin(&["keygen", "--alg", "ES256", "--out", key.to_str().unwrap()]).status.success());

    let cases: [(&str, String, &str); 4] = [
        ("route without slash", config_text("", &route("api", "echo", "")), "\"api\""),
        ("not TOML", "[server\nlisten = 1".to_string(), "gateway.toml"),
        ("unknown field", config_text("lisen_typo = 1", routes), "lisen_typo"),
        ("missing active key", config_text("", routes).replace("active_kid = \"k1\"", "active_kid = \"k9\""), "k9"),
    ];
    for (name, body, needle) in cases {
        std::fs::write(&cfg, body).unwrap();
        let out = bin(&["check", "--config", cfg_s]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{name}: check succeeded");
        assert!(err.contains(needle), "{name}: stderr does not name {needle:?}: {err}");
    }
    let out = bin(&["check", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.toml"), "{}", text(&out.stderr));
}

#[test]
fn keygen_writes_loadable_keys_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for (name, alg, rsa) in [
        ("ES256", Alg::ES256, RsaAlg::RS256),
        ("ES384", Alg::ES384, RsaAlg::RS256),
        ("RS256", Alg::RS256, RsaAlg::RS256),
        ("PS256", Alg::PS256, RsaAlg::PS256),
        ("EdDSA", Alg::EdDSA, RsaAlg::RS256),
    ] {
        let out_path = dir.path().join(format!("{name}.pem"));
        let out = bin(&["keygen", "--alg", name, "--out", out_path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let pem = std::fs::read(&out_path).unwrap();
        let key = SigningKey::from_pem(name, &pem, rsa).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.alg, alg, "{name}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}: private key mode {mode:o}");
        }
        // Never overwrites.
        let again = bin(&["keygen", "--alg", name, "--out", out_path.to_str().unwrap()]);
        assert!(!again.status.success(), "{name}: keygen overwrote an existing key");
        assert_eq!(std::fs::read(&out_path).unwrap(), pem, "{name}: key file changed");
    }
    let bad = dir.path().join("hs.pem");
    let out = bin(&["keygen", "--alg", "HS256", "--out", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("HS256"), "{}", text(&out.stderr));
    assert!(!bad.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_cli_token_is_accepted_by_the_running_gateway() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &up.url(), "scopes = [\"read\"]")).await;
    let cfg = gw.config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        bin(&["mint", "--config", &cfg, "--sub", "cli-user", "--scope", "read write", "--client-id", "ci"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tok = text(&out.stdout).trim().to_owned();
    assert_eq!(tok.split('.').count(), 3, "{tok}");
    let r = gw.get_with("/api/cli", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.header("x-auth-subject"), Some("cli-user"));
    assert_eq!(seen.header("x-auth-client-id"), Some("ci"));
    assert_eq!(seen.header("x-auth-scope"), Some("read write"));
    // A minted token without the route's scope is refused with 403.
    let cfg = gw.config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || bin(&["mint", "--config", &cfg, "--sub", "u", "--scope", "write"]))
        .await
        .unwrap();
    let r = gw.get_with("/api/cli", text(&out.stdout).trim()).await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_requests_in_flight_finish() {
    let up = Upstream::start(Mode::Slow(Duration::from_secs(1))).await;
    let mut gw = Gw::start("", &routes(&up)).await;
    let tok = gw.mint("alice", "");
    let mut conn = gw.tls(false).await;
    let auth = format!("Bearer {tok}");
    let in_flight =
        tokio::spawn(async move { conn.send(req("GET", "/api/slow", &[("authorization", &auth)], empty())).await });
    // Wait until the upstream has the request (it then takes 1 s to answer).
    eventually(5, "the request reaches the upstream", || async { up.count() > 0 }).await;
    let t = Instant::now();
    let admin = gw.admin;
    // While the request drains, the admin listener still answers: readiness is 503, not refused.
    let probe = async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        raw(admin, "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await
    };
    let ((), during) = tokio::join!(gw.shutdown(), probe);
    let waited = t.elapsed();
    assert_eq!((during.status, during.body_text().as_str()), (503, "not ready"), "/readyz while draining");
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight).await.expect("in-flight request finished").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slow-ok");
    assert!(waited >= Duration::from_millis(500), "shutdown returned after {waited:?}, before the request finished");
    assert!(waited < Duration::from_secs(4), "shutdown took {waited:?}");
    // Stopped: nothing accepts any more.
    assert!(tokio::net::TcpStream::connect(gw.https).await.is_err(), "HTTPS still accepting");
    assert!(tokio::net::TcpStream::connect(gw.admin).await.is_err(), "admin still accepting");
}
