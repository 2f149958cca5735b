//! Certificates as people make them with the `openssl` command line, pinned wherever tokengate
//! trusts a CA file: a route's `upstream_ca`, an issuer's `ca` for its remote key set, and
//! `state.ca` for Redis over TLS. OpenSSL 3's `req -x509` marks a self-signed certificate
//! `CA:TRUE`, which webpki refuses as a server's own; the very certificate pinned is trusted, as
//! curl trusts it, names still checked. Anything else is refused with one sentence that names
//! the server, what is wrong and the key, and no Rust debug text.

#[path = "common/mod.rs"]
mod common;
#[path = "support/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::*;
use redis_server::RedisServer;

/// `openssl req -x509` as a user runs it (OpenSSL 3's defaults: `CA:TRUE`), with `-addext` for a
/// subjectAltName when given; the certificate and key files in `dir`.
fn openssl_self_signed(dir: &Path, name: &str, cn: &str, san: Option<&str>) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={cn}")]);
    if let Some(san) = san {
        cmd.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let out = cmd.output().expect("the openssl command line (Debian's openssl package)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(
        Command::new("openssl").arg("x509").arg("-in").arg(&cert).arg("-noout").arg("-text").output().unwrap().stdout,
    )
    .unwrap();
    assert!(text.contains("CA:TRUE"), "OpenSSL's default marks the certificate CA:TRUE: {text}");
    (cert, key)
}

/// An HTTPS server presenting `cert`: `/jwks.json` answers `jwks`, any other path `ok`.
async fn https_server(cert: &Path, key: &Path, jwks: Value) -> SocketAddr {
    https_server_seeing(cert, key, jwks, Arc::default()).await
}

/// [`https_server`], recording the path of every request in `seen`.
async fn https_server_seeing(cert: &Path, key: &Path, jwks: Value, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("openssl's key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwks = Arc::new(jwks.to_string());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, jwks, seen) = (acceptor.clone(), jwks.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |r: Request<Incoming>| {
                    seen.lock().unwrap().push(r.uri().path().to_owned());
                    let body = if r.uri().path() == "/jwks.json" { jwks.to_string() } else { "ok".into() };
                    async move { Ok::<_, std::convert::Infallible>(Response::new(full(body))) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    addr
}

/// What curl says of `url` with `--cacert ca`: the body, or its error.
fn curl(url: &str, ca: &Path) -> Result<String, String> {
    let out = Command::new("curl").args(["-sS", "--max-time", "5", "--cacert"]).arg(ca).arg(url).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A sentence for a person: no Rust debug text of any kind.
fn assert_words(text: &str) {
    for debug in ["Other(", "OtherError", "CaUsedAsEndEntity", "InvalidCertificate", "Os {", "Custom {", "kind:"] {
        assert!(!text.contains(debug), "debug text {debug:?} reached the user: {text}");
    }
}

/// A gateway binary with `rest` (routes, issuers, state) logging JSON to stdout.
fn binary(dir: &Path, rest: &str) -> Proc {
    let config = dir.join("gateway.toml");
    let text = Config::new().log("format = \"json\"\nlevel = \"info\"").rest(rest).text();
    std::fs::write(&config, text).unwrap();
    Proc::spawn(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_openssl_self_signed_certificate_is_trusted_as_curl_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    // `-subj /CN=localhost` alone, the way the user made it; and one with an IP SAN.
    let (cn_cert, cn_key) = openssl_self_signed(dir.path(), "cn-only", "localhost", None);
    let (ip_cert, ip_key) = openssl_self_signed(dir.path(), "ip", "legacy", Some("IP:127.0.0.1"));
    let (other_cert, _) = openssl_self_signed(dir.path(), "other", "localhost", Some("DNS:localhost"));
    let cn_up = https_server(&cn_cert, &cn_key, json!({})).await;
    let ip_up = https_server(&ip_cert, &ip_key, json!({})).await;
    // curl accepts the same files.
    assert_eq!(curl(&format!("https://localhost:{}/x", cn_up.port()), &cn_cert).as_deref(), Ok("ok"));
    assert_eq!(curl(&format!("https://127.0.0.1:{}/x", ip_up.port()), &ip_cert).as_deref(), Ok("ok"));
    let pin = |prefix: &str, url: String, ca: &Path| {
        route(prefix, &url, &format!("public = true\nupstream_ca = \"{}\"", ca.display()))
    };
    let routes = [
        pin("/cn", format!("https://localhost:{}", cn_up.port()), &cn_cert),
        pin("/ip", format!("https://127.0.0.1:{}", ip_up.port()), &ip_cert),
        // The right certificate for another name, another certificate pinned, no pin at all.
        pin("/wrong-name", format!("https://127.0.0.1:{}", cn_up.port()), &cn_cert),
        pin("/other-pin", format!("https://localhost:{}", cn_up.port()), &other_cert),
        route("/unpinned", &format!("https://localhost:{}", cn_up.port()), "public = true"),
    ]
    .concat();
    let mut p = binary(dir.path(), &routes);
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let mut c = Conn::tls(p.https, std::slice::from_ref(&cert), false).await;
    for path in ["/cn/x", "/ip/x"] {
        let r = c.send(req("GET", path, &[], empty())).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "{path}");
    }
    for (path, says) in [
        ("/wrong-name/x", "the certificate of 127.0.0.1 does not name this host (its common name does not match); upstream_ca pins"),
        ("/other-pin/x", "the certificate of localhost is a CA certificate (CA:TRUE), which is trusted only as the very certificate pinned; upstream_ca pins"),
        ("/unpinned/x", "the certificate of localhost is a CA certificate (CA:TRUE), which is trusted only as the very certificate pinned; only publicly trusted CAs are accepted without a CA file pinned for upstream_ca"),
    ] {
        let r = c.send(req("GET", path, &[], empty())).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        let prefix = path.trim_end_matches("/x");
        let line = p.wait_line(path, |v| v["message"] == "upstream request failed" && v["route"] == prefix);
        let error = line["error"].as_str().expect("error field");
        assert!(error.contains(says), "{path}: {error}");
        assert_words(error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_issuer_behind_an_openssl_self_signed_certificate_is_trusted_when_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "idp", "localhost", None);
    let (other, _) = openssl_self_signed(dir.path(), "stranger", "localhost", None);
    let (_, sk) = fresh_key("idp-1", tokengate::keys::Alg::ES256);
    let mut jwk = sk.public_jwk().clone();
    jwk["kid"] = "idp-1".into();
    let idp = https_server(&cert, &key, json!({ "keys": [jwk] })).await;
    let issuer = |name: &str, ca: &Path| {
        format!(
            "\n[[issuers]]\nissuer = \"https://{name}.example\"\njwks_uri = \"https://localhost:{}/jwks.json\"\n\
             ca = \"{}\"\nalgorithms = [\"ES256\"]\njwks_start_timeout_secs = 3\n",
            idp.port(),
            ca.display()
        )
    };
    let rest = [issuer("idp", &cert), issuer("wrong-pin", &other), route("/api", "echo", "")].concat();
    let mut p = binary(dir.path(), &rest);
    let line = p
        .wait_line("the refused fetch", |v| v["message"].as_str().is_some_and(|m| m.starts_with("jwks: fetch failed")));
    let error = line["error"].as_str().expect("error field");
    assert_eq!(line["issuer"], "https://wrong-pin.example");
    assert!(
        error.contains("the certificate of localhost is a CA certificate (CA:TRUE)")
            && error.contains("[[issuers]] ca pins"),
        "{error}"
    );
    assert_words(error);
    // A token of the pinned issuer passes.
    let mut claims = claims("alice", "");
    claims["iss"] = "https://idp.example".into();
    let token = sign_with(&sk, &json!({"alg": "ES256", "kid": "idp-1", "typ": "JWT"}), &claims);
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let mut c = Conn::tls(p.https, std::slice::from_ref(&cert), false).await;
    let auth = format!("Bearer {token}");
    let mut status = 0;
    for _ in 0..50 {
        status = c.send(req("GET", "/api/x", &[("authorization", &auth)], empty())).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "a token of the issuer whose pinned openssl certificate is the server's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_an_openssl_self_signed_certificate_pinned_in_state_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "redis", "localhost", Some("DNS:localhost"));
    let redis =
        RedisServer::start_tls_with(&std::fs::read_to_string(&cert).unwrap(), &std::fs::read_to_string(&key).unwrap());
    let url = redis.rediss_url();
    let state = |ca: &Path| {
        format!("\n[state]\nbackend = \"redis\"\nurl = \"{url}\"\nca = \"{}\"\ntimeout_ms = 1000\n", ca.display())
    };
    let gw = Gw::start_text(&Config::new().rest(&(state(&cert) + &route("/api", "echo", "") + &tables())).text()).await;
    // The password grant and a refresh rotation: both written through the TLS relay to Redis.
    let form = format!("grant_type=password&username=alice&password={ALICE_PW}");
    let auth = basic_header("app", SECRET);
    let headers = [("authorization", auth.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let r = gw.tls(false).await.send(req("POST", "/oauth2/token", &headers, full(form))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let body = format!("grant_type=refresh_token&refresh_token={refresh}");
    let r = gw.tls(false).await.send(req("POST", "/oauth2/token", &headers, full(body.clone()))).await;
    assert_eq!(r.status, 200, "rotated through Redis over TLS: {}", r.text());
    let r = gw.tls(false).await.send(req("POST", "/oauth2/token", &headers, full(body))).await;
    assert_eq!(r.status, 400, "the spent token is known to Redis: {}", r.text());
    // Another openssl certificate pinned: no start, and why in one sentence.
    let (other, _) = openssl_self_signed(dir.path(), "stranger", "localhost", Some("DNS:localhost"));
    let config = dir.path().join("refused.toml");
    std::fs::write(&config, Config::new().rest(&state(&other)).text()).unwrap();
    let e = tokengate::server::start(config).await.err().expect("an untrusted Redis is refused").to_string();
    assert!(e.contains("state.url: redis at rediss://localhost:"), "{e}");
    assert!(
        e.contains("the certificate of localhost is a CA certificate (CA:TRUE)") && e.contains("state.ca pins"),
        "{e}"
    );
    assert_words(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_collector_behind_an_openssl_self_signed_certificate_is_trusted_when_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "collector", "localhost", None);
    let (other, _) = openssl_self_signed(dir.path(), "stranger", "localhost", None);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector = https_server_seeing(&cert, &key, json!({}), seen.clone()).await;
    for (ca, works) in [(&cert, true), (&other, false)] {
        let run = tempfile::tempdir().unwrap();
        let tracing = format!(
            "\n[tracing]\notlp_endpoint = \"https://localhost:{}\"\nca = \"{}\"\nexport_interval_ms = 50\n",
            collector.port(),
            ca.display()
        );
        let mut p = binary(run.path(), &(route("/pub", "echo", "public = true") + &tracing));
        let gw_cert = read_cert(&run.path().join("certs/gateway.crt"));
        let mut c = Conn::tls(p.https, std::slice::from_ref(&gw_cert), false).await;
        assert_eq!(c.send(req("GET", "/pub/x", &[], empty())).await.status, 200);
        if works {
            let exported = || seen.lock().unwrap().iter().any(|p| p == "/v1/traces");
            poll::eventually(10, "spans posted to the pinned collector", || async { exported() }).await;
        } else {
            let line = p.wait_line("the refused export", |v| {
                v["message"].as_str().is_some_and(|m| m.starts_with("span export failed"))
            });
            let error = line["error"].as_str().expect("error field");
            assert!(
                error.contains("the certificate of localhost is a CA certificate (CA:TRUE)")
                    && error.contains("tracing.ca pins"),
                "{error}"
            );
            assert_words(error);
        }
    }
}
