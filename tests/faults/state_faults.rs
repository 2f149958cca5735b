//! The durable state store at its boundaries: a start refused with a clear error when the state
//! file cannot be used, validation unaffected while the token endpoint is rate limited, and
//! `kill -9` of the real binary during a burst of refreshes.
//!
//! A store failing under a running gateway (disk full, unwritable) is injected through
//! `server::start_with_store`: chmod and read-only remounts do not work as root.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::*;

/// Routes, `[state]`, `[lockout]`, one password/refresh client and one user (goes at the end).
fn tail(state_path: &str, per_ip_per_minute: u32) -> String {
    let app = client("app", &secret_hash(SECRET), &["password", "refresh_token"], &["read"], &["read"]);
    format!(
        "{ECHO_ROUTES}\n[state]\npath = \"{state_path}\"\n\n[lockout]\nper_ip_per_minute = {per_ip_per_minute}\n{app}{}",
        user("alice", ALICE_PW, &["read"], "")
    )
}

/// One form POST over a fresh HTTPS connection to `addr`.
async fn post(addr: SocketAddr, cert: &rustls_pki_types::CertificateDer<'static>, path: &str, body: &str) -> Resp {
    let mut c = Conn::tls(addr, std::slice::from_ref(cert), false).await;
    let auth = basic_header("app", SECRET);
    let headers = [FORM_CT, ("authorization", auth.as_str())];
    c.send(req("POST", path, &headers, full(body.to_owned()))).await
}

fn field(r: &Resp, name: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()[name].as_str().unwrap_or_else(|| panic!("no {name}: {}", r.text())).to_owned()
}

fn password_body() -> String {
    encode_form(&[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW)])
}

fn refresh_body(rt: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={rt}")
}

/// Starts the gateway on `dir/gateway.toml` expecting a refusal; the error text.
async fn start_err(config: &Path) -> String {
    match tokengate::server::start(config.to_owned()).await {
        Ok(running) => {
            running.shutdown().await;
            panic!("the gateway started on {}", config.display())
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_state_path_fails_the_start_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(dir.path().join("blocker"), "a regular file, not a folder").unwrap();
    std::fs::create_dir(dir.path().join("a-folder")).unwrap();
    std::fs::create_dir(dir.path().join("junk")).unwrap();
    std::fs::write(dir.path().join("junk/state.redb"), "not a redb file\n".repeat(300)).unwrap();
    let cases = [
        ("parent is a regular file", "blocker/state.redb"),
        ("path is a folder", "a-folder"),
        ("file is not a redb file", "junk/state.redb"),
    ];
    for (name, path) in cases {
        std::fs::write(&config, config_text("", &tail(path, 0))).unwrap();
        let t = Instant::now();
        let err = start_err(&config).await;
        eprintln!("{name}: refused in {:?}: {err}", t.elapsed());
        assert!(
            err.contains(&dir.path().join(path).display().to_string()),
            "{name}: error does not name {path}: {err}"
        );
        assert!(err.starts_with("state"), "{name}: error does not say it is the state store: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_gateway_on_a_held_state_file_is_refused_and_the_first_keeps_issuing() {
    let gw = Gw::start("", &tail("state/tokengate.redb", 0)).await;
    let rt = field(&post(gw.https, &gw.cert, "/oauth2/token", &password_body()).await, "refresh_token");
    assert!(gw.path("state/tokengate.redb").exists());

    let err = start_err(&gw.config).await;
    eprintln!("second gateway on the same state file: {err}");
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("tokengate.redb"), "the error names the file: {err}");

    // The refused open must not have released the first gateway's lock or broken its store.
    let r = post(gw.https, &gw.cert, "/oauth2/token", &refresh_body(&rt)).await;
    let at = field(&r, "access_token");
    assert_eq!(gw.get_with("/api/x", &at).await.status, 200);
    assert!(start_err(&gw.config).await.contains("in use"), "the first gateway still holds the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_keeps_working_while_the_token_endpoint_is_rate_limited() {
    let gw = Gw::start("", &tail(":memory:", 3)).await;
    let tok = gw.mint("alice", "read");
    // Fixed one-minute windows: find the 429 rather than assume which request gets it.
    let minute = now() / 60;
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) {
        assert!(statuses.len() < 10, "no 429 with per_ip_per_minute = 3: {statuses:?}");
        statuses.push(post(gw.https, &gw.cert, "/oauth2/token", "grant_type=nonsense").await.status.as_u16());
    }
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 400), "{statuses:?}");
    let r = post(gw.https, &gw.cert, "/oauth2/token", &password_body()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)), "{:?}", r.headers);
    assert!(limit_hits(&gw, "token_endpoint_rate").await >= 2);

    let mut c = gw.tls(true).await;
    for i in 0..10 {
        let auth = format!("Bearer {tok}");
        let r = c.send(req("GET", &format!("/api/{i}"), &[("authorization", &auth)], empty())).await;
        assert_eq!(r.status, 200, "proxy request {i} while the token endpoint answers 429: {}", r.text());
    }
    assert_eq!(gw.get("/.well-known/jwks.json", &[]).await.status, 200, "discovery is not rate limited");
    let still = post(gw.https, &gw.cert, "/oauth2/token", &password_body()).await.status;
    assert!(still == 429 || now() / 60 != minute, "the token endpoint was limited throughout: {still}");
}

async fn wait_healthy(admin: SocketAddr) {
    eventually(10, "/healthz answers 200", || async move {
        let Ok(s) = tokio::net::TcpStream::connect(admin).await else { return false };
        raw_exchange(s, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.text().contains(" 200 ")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_refresh_burst_loses_no_answered_grant_and_no_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let text = Config::new()
        .log("format = \"json\"\nlevel = \"warn,tokengate::listener=info\"")
        .rest(&tail("state/tokengate.redb", 0))
        .text();
    std::fs::write(&config, text).unwrap();
    let mut a = Proc::spawn(&config);
    wait_healthy(a.admin).await;
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));

    let grant = post(a.https, &cert, "/oauth2/token", &password_body()).await;
    let (revoked, mut rt) = (field(&grant, "access_token"), field(&grant, "refresh_token"));
    let r = post(a.https, &cert, "/oauth2/revoke", &format!("token={revoked}&token_type_hint=access_token")).await;
    assert_eq!(r.status, 200, "revoke: {}", r.text());
    assert_eq!(Conn::tls(a.https, std::slice::from_ref(&cert), false).await.send(bearer(&revoked)).await.status, 401);

    // The burst: 20 sequential refreshes, each answered token recorded. After the 10th answer,
    // the 11th is in flight (head and half its body sent) when the process gets SIGKILL.
    let mut answered = Vec::new();
    let t = Instant::now();
    for i in 1..=20 {
        if i == 11 {
            let body = refresh_body(&rt);
            let mut s = tls_connect(a.https, std::slice::from_ref(&cert), &[b"http/1.1"]).await;
            let head = format!(
                "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                basic_header("app", SECRET),
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
            s.flush().await.unwrap();
            a.child.kill().expect("SIGKILL");
            a.child.wait().unwrap();
            let end = read_until_closed(&mut s, Duration::from_secs(5)).await;
            assert!(end.closed_after.is_some() && end.bytes.is_empty(), "the killed process answered: {}", end.text());
            break;
        }
        let r = post(a.https, &cert, "/oauth2/token", &refresh_body(&rt)).await;
        rt = field(&r, "refresh_token");
        answered.push((rt.clone(), field(&r, "access_token")));
    }
    eprintln!("kill -9 after {} answered refreshes, {:?} into the burst", answered.len(), t.elapsed());

    let b = Proc::spawn(&config);
    wait_healthy(b.admin).await;
    let (last_rt, last_at) = answered.last().cloned().unwrap();
    let r = post(b.https, &cert, "/oauth2/token", &refresh_body(&last_rt)).await;
    assert_eq!(r.status, 200, "the last refresh token answered before kill -9 no longer refreshes: {}", r.text());
    let fresh = field(&r, "access_token");
    let mut c = Conn::tls(b.https, std::slice::from_ref(&cert), false).await;
    assert_eq!(c.send(bearer(&fresh)).await.status, 200, "the signing key survived");
    assert_eq!(c.send(bearer(&last_at)).await.status, 200, "an access token issued before the kill");
    let r = c.send(bearer(&revoked)).await;
    assert_eq!(r.status, 401, "a token revoked before kill -9 is accepted after the restart: {}", r.text());
    assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());
    // An earlier token of the burst was rotated away before the kill: reuse is detected.
    let r = post(b.https, &cert, "/oauth2/token", &refresh_body(&answered[4].0)).await;
    assert_eq!(r.status, 400, "a rotated-away refresh token works again after kill -9: {}", r.text());
    drop(b);
}

fn bearer(tok: &str) -> http::Request<ReqBody> {
    req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())
}

/// A store whose writes fail on demand (a full or unwritable disk), reads still working.
struct FailingStore {
    inner: tokengate::store::RedbStore,
    broken: std::sync::atomic::AtomicBool,
}

impl FailingStore {
    fn check(&self) -> Result<(), tokengate::store::StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tokengate::store::StoreError::Full);
        }
        Ok(())
    }
}

mod failing_store_impl {
    use super::FailingStore;
    use tokengate::store::{Family, Grace, LockState, LockoutPolicy, Rotation, Store, StoreError, TokenHash};

    impl Store for FailingStore {
        fn create_family(&self, f: &Family, t: &TokenHash) -> Result<(), StoreError> {
            self.check()?;
            self.inner.create_family(f, t)
        }
        fn rotate_with_grace(
            &self,
            p: &TokenHash,
            n: &TokenHash,
            c: &str,
            grace: &Grace<'_>,
            now: u64,
        ) -> Result<Rotation, StoreError> {
            self.check()?;
            self.inner.rotate_with_grace(p, n, c, grace, now)
        }
        fn current_family(&self, p: &TokenHash, now: u64) -> Result<Option<Family>, StoreError> {
            self.inner.current_family(p, now)
        }
        fn revoke_family(&self, p: &TokenHash, c: Option<&str>) -> Result<bool, StoreError> {
            self.check()?;
            self.inner.revoke_family(p, c)
        }
        fn revoke_client(&self, c: &str, s: Option<&str>) -> Result<usize, StoreError> {
            self.check()?;
            self.inner.revoke_client(c, s)
        }
        fn deny_jti(&self, j: &str, exp: u64) -> Result<(), StoreError> {
            self.check()?;
            self.inner.deny_jti(j, exp)
        }
        fn is_jti_denied(&self, j: &str, now: u64) -> bool {
            self.inner.is_jti_denied(j, now)
        }
        fn use_jti_once(&self, c: &str, j: &str, exp: u64, now: u64) -> Result<bool, StoreError> {
            self.check()?;
            self.inner.use_jti_once(c, j, exp, now)
        }
        fn record_failure(&self, k: &str, now: u64, p: &LockoutPolicy) -> Result<LockState, StoreError> {
            self.check()?;
            self.inner.record_failure(k, now, p)
        }
        fn lock_state(&self, k: &str, now: u64) -> Result<LockState, StoreError> {
            self.inner.lock_state(k, now)
        }
        fn clear_failures(&self, k: &str) -> Result<(), StoreError> {
            self.check()?;
            self.inner.clear_failures(k)
        }
        fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
            self.check()?;
            self.inner.purge_expired(now)
        }
    }
}

/// A full or unwritable state disk while serving: issuance that needs the store answers 503
/// `temporarily_unavailable`, validation on the proxy path and discovery keep working, and
/// issuance comes back once the store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_store_makes_issuance_503_while_validation_keeps_working() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text("", &tail(":memory:", 0))).unwrap();
    let store = Arc::new(FailingStore {
        inner: tokengate::store::RedbStore::in_memory().unwrap(),
        broken: std::sync::atomic::AtomicBool::new(false),
    });
    let running = tokengate::server::start_with_store(config.clone(), Some(store.clone())).await.expect("starts");
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let https = running.https_addr;

    let first = post(https, &cert, "/oauth2/token", &password_body()).await;
    let (access, refresh) = (field(&first, "access_token"), field(&first, "refresh_token"));

    store.broken.store(true, Ordering::SeqCst);
    for body in [password_body(), refresh_body(&refresh), format!("token={access}")] {
        let path = if body.starts_with("token=") { "/oauth2/revoke" } else { "/oauth2/token" };
        let r = post(https, &cert, path, &body).await;
        assert_eq!(r.status, 503, "{path} with a failing store: {}", r.text());
        assert_eq!(r.json()["error"], "temporarily_unavailable", "{}", r.text());
        assert!(!r.text().contains(&access) && !r.text().contains(&refresh), "no token in the error");
    }
    let mut c = Conn::tls(https, std::slice::from_ref(&cert), false).await;
    let bearer = format!("Bearer {access}");
    let proxied = c.send(req("GET", "/api/x", &[("authorization", bearer.as_str())], full(String::new()))).await;
    assert_eq!(proxied.status, 200, "validation needs no store write: {}", proxied.text());
    let forged = c.send(req("GET", "/api/x", &[("authorization", "Bearer x.y.z")], full(String::new()))).await;
    assert_eq!(forged.status, 401, "and still refuses bad tokens");
    let jwks = c.send(req("GET", "/.well-known/jwks.json", &[], full(String::new()))).await;
    assert_eq!(jwks.status, 200);

    store.broken.store(false, Ordering::SeqCst);
    let again = post(https, &cert, "/oauth2/token", &refresh_body(&refresh)).await;
    assert_eq!(again.status, 200, "the refused refresh did not consume the token: {}", again.text());
    running.shutdown().await;
}
