//! A certificate per server name (`[[tls.certificates]]`, SNI), over the wire. Certificates are
//! made with the `openssl` command line as people make them; which one the gateway serves is read
//! by `openssl s_client` (its `subject=` line) and by a rustls client (the DER it was sent, and
//! whether a client trusting the certificates accepts it for the name it asked). An exact name
//! beats a `*.` wildcard (one label), which beats `tls.cert`, the certificate of unknown names and
//! of clients that send none. Requests go through on both HTTP versions, a replaced certificate is
//! served on the next handshake with not one request failing, `client_auth` holds whichever
//! certificate is served, and a bad entry is one sentence naming it, the file and the name.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use common::*;

/// `openssl req -x509` for `cn` with the subjectAltName `san`, written to `dir/<file>.crt` and
/// `.key`. `basicConstraints=CA:FALSE` is added so that a webpki client (rustls) takes it as a
/// server's own certificate: OpenSSL 3 marks a bare `req -x509` certificate `CA:TRUE`.
fn openssl_cert(dir: &Path, file: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={cn}"), "-addext", &format!("subjectAltName={san}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("the openssl command line (Debian's openssl package)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// `openssl x509 -noout -subject` of a certificate file: `subject=CN = ...`.
fn subject_of(cert: &Path) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", "-subject", "-in"]).arg(cert).output().unwrap();
    assert!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The `subject=` line of what `openssl s_client` is served asking for `sni` (None:
/// `-noservername`).
async fn s_client_subject(addr: SocketAddr, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]).stdin(std::process::Stdio::null());
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("openssl s_client")).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("subject="));
    line.unwrap_or_else(|| panic!("no subject= line ({sni:?}): {text}{}", String::from_utf8_lossy(&out.stderr))).into()
}

/// webpki's check, remembering the certificate it was shown.
#[derive(Debug)]
struct Seen {
    webpki: Arc<WebPkiServerVerifier>,
    cert: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Seen {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.cert.lock().unwrap() = Some(end_entity.clone().into_owned());
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What a rustls client trusting `roots` meets asking for `sni` (None: no SNI extension; the
/// certificate is then checked for `localhost`): the certificate sent, and the stream when the
/// client accepted it for that name.
struct Hello {
    cert: Option<CertificateDer<'static>>,
    stream: Result<tokio_rustls::client::TlsStream<TcpStream>, String>,
}

async fn rustls_hello(addr: SocketAddr, sni: Option<&str>, roots: &[CertificateDer<'static>], h2: bool) -> Hello {
    let mut store = rustls::RootCertStore::empty();
    roots.iter().for_each(|c| store.add(c.clone()).expect("trust cert"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build().unwrap();
    let seen = Arc::new(Seen { webpki, cert: Mutex::new(None) });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(seen.clone())
        .with_no_client_auth();
    cfg.enable_sni = sni.is_some();
    cfg.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let name = ServerName::try_from(sni.unwrap_or("localhost").to_owned()).expect("server name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connect = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp);
    let stream = tokio::time::timeout(Duration::from_secs(10), connect).await.expect("timely handshake");
    let cert = seen.cert.lock().unwrap().clone();
    Hello { cert, stream: stream.map_err(|e| e.to_string()) }
}

/// The certificate a rustls client trusting `roots` is sent for `sni` and accepts; panics if it
/// refuses it.
async fn accepted(addr: SocketAddr, sni: Option<&str>, roots: &[CertificateDer<'static>]) -> CertificateDer<'static> {
    let hello = rustls_hello(addr, sni, roots, false).await;
    hello.stream.unwrap_or_else(|e| panic!("{sni:?}: the client refused the certificate: {e}"));
    hello.cert.expect("a certificate was sent")
}

/// `[[tls.certificates]]` entries (in `[tls]`): `(names, file)` with `certs/<file>.crt|key`.
fn entries(list: &[(&[&str], &str)]) -> String {
    list.iter()
        .map(|(names, file)| {
            format!(
                "\n[[tls.certificates]]\nnames = {names:?}\ncert = \"certs/{file}.crt\"\nkey = \"certs/{file}.key\"\n"
            )
        })
        .collect()
}

/// `GET path` of `host`: its `Host` header on HTTP/1.1, its `:authority` on h2.
fn get_on(host: &str, path: &str, h2: bool) -> http::Request<ReqBody> {
    if h2 {
        req("GET", &format!("https://{host}{path}"), &[], empty())
    } else {
        req("GET", path, &[("host", host)], empty())
    }
}

const ADMIN_NAMES: &[&str] = &["admin.example.com", "*.admin.example.com"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_is_served_its_certificate_and_requests_go_through() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (admin_crt, _) =
        openssl_cert(&certs, "admin", "tokengate admin", "DNS:admin.example.com,DNS:*.admin.example.com");
    let (eu_crt, _) = openssl_cert(&certs, "eu", "tokengate eu", "DNS:eu.admin.example.com");
    let text = Config::new()
        .tls(&entries(&[(ADMIN_NAMES, "admin"), (&["EU.admin.example.com"], "eu")]))
        .rest(ECHO_ROUTES)
        .text();
    let gw = Gw::start_in(dir, &text).await;
    let (admin, eu, default) = (read_cert(&admin_crt), read_cert(&eu_crt), gw.cert.clone());
    let (admin_subject, eu_subject) = (subject_of(&admin_crt), subject_of(&eu_crt));
    let default_subject = subject_of(&gw.path("certs/gateway.crt"));
    assert!(admin_subject.contains("tokengate admin") && eu_subject.contains("tokengate eu"), "{admin_subject}");
    assert_ne!(default_subject, admin_subject);
    let roots = [default.clone(), admin.clone(), eu.clone()];

    // (SNI, what openssl s_client sees, what a rustls client is sent, whether it accepts it).
    let cases: [(Option<&str>, &str, &CertificateDer<'static>, bool); 9] = [
        (Some("admin.example.com"), &admin_subject, &admin, true),
        (Some("ADMIN.Example.COM"), &admin_subject, &admin, true),
        (Some("x.admin.example.com"), &admin_subject, &admin, true),
        // The exact name beats the wildcard that covers it too; listed in capitals, matched all the same.
        (Some("eu.admin.example.com"), &eu_subject, &eu, true),
        (Some("Eu.Admin.Example.Com"), &eu_subject, &eu, true),
        // A wildcard stands for one label, and not for its own domain's name.
        (Some("a.b.admin.example.com"), &default_subject, &default, false),
        (Some("example.com"), &default_subject, &default, false),
        (Some("unknown.example.net"), &default_subject, &default, false),
        (None, &default_subject, &default, true),
    ];
    for (sni, subject, cert, ok) in cases {
        assert_eq!(s_client_subject(gw.https, sni).await, subject, "openssl s_client, SNI {sni:?}");
        let hello = rustls_hello(gw.https, sni, &roots, false).await;
        assert_eq!(hello.cert.as_ref(), Some(cert), "rustls client, SNI {sni:?}");
        match (&hello.stream, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.contains("not valid for name"), "SNI {sni:?}: {e}"),
            (other, _) => panic!("SNI {sni:?}: accepted = {}, expected {ok}", other.is_ok()),
        }
    }

    // Requests through the admin certificate, HTTP/1.1 and h2, on the name it was served for.
    for h2 in [false, true] {
        let hello = rustls_hello(gw.https, Some("x.admin.example.com"), std::slice::from_ref(&admin), h2).await;
        let mut conn = Conn::over_tls(hello.stream.expect("handshake"), h2).await;
        assert_eq!(conn.peer_cert.as_ref(), Some(&admin));
        assert_eq!(conn.alpn.as_deref(), Some(if h2 { &b"h2"[..] } else { b"http/1.1" }));
        let r = conn.send(get_on("x.admin.example.com", "/pub/x", h2)).await;
        assert_eq!(r.status, 200, "h2 = {h2}: {}", r.text());
        let token = gw.mint("alice", "");
        let r = conn.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {token}"))], empty())).await;
        assert_eq!(r.status, 200, "h2 = {h2}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_on_the_next_handshake_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (crt, key) =
        openssl_cert(&certs, "admin", "tokengate admin one", "DNS:admin.example.com,DNS:*.admin.example.com");
    let text = Config::new().tls(&entries(&[(ADMIN_NAMES, "admin")])).rest(ECHO_ROUTES).text();
    let gw = Gw::start_in(dir, &text).await;
    let g0 = gw.wait_watcher_ready().await;
    // The next certificate, made beside the live one (another subject, so a client can trust both).
    let (next_crt, next_key) =
        openssl_cert(&certs, "next", "tokengate admin two", "DNS:admin.example.com,DNS:*.admin.example.com");
    let (one, two, default) = (read_cert(&crt), read_cert(&next_crt), gw.cert.clone());
    let roots = vec![one.clone(), two.clone(), default.clone()];
    assert_eq!(accepted(gw.https, Some("admin.example.com"), &roots).await, one);

    // Traffic throughout, on the admin name: a keep-alive connection, and a fresh handshake
    // (HTTP/1.1 and h2 in turn) for every fifth request.
    let busy = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (busy, addr, roots) = (busy.clone(), gw.https, roots.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed, mut seen) = (0u32, Vec::new(), Vec::new());
            let open = |h2: bool| {
                let roots = roots.clone();
                async move {
                    let hello = rustls_hello(addr, Some("api.admin.example.com"), &roots, h2).await;
                    Conn::over_tls(hello.stream.expect("handshake"), h2).await
                }
            };
            let (mut conn, mut h2) = (open(false).await, false);
            while busy.load(Ordering::Relaxed) {
                if sent % 5 == 4 {
                    h2 = sent % 10 == 9;
                    conn = open(h2).await;
                    seen.push(conn.peer_cert.clone());
                }
                let r = conn.send(get_on("api.admin.example.com", &format!("/pub/{sent}"), h2)).await;
                if r.status != 200 {
                    failed.push((sent, r.status, r.text()));
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, failed, seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Replaced as a certificate manager does: the key first, then the certificate, each renamed
    // over the live file. A reload in between (key and certificate not matching) is refused.
    std::fs::rename(&next_key, &key).unwrap();
    std::fs::rename(&next_crt, &crt).unwrap();
    let doc = gw
        .wait_reload(10, "the new certificate loaded", |d| {
            d["generation"].as_u64() > Some(g0) && d["last_error"].is_null()
        })
        .await;
    assert!(doc["last_error"].is_null(), "{doc}");
    assert_eq!(accepted(gw.https, Some("admin.example.com"), &roots).await, two, "the next handshake");
    assert_eq!(accepted(gw.https, Some("b.admin.example.com"), std::slice::from_ref(&two)).await, two);
    assert_eq!(accepted(gw.https, None, &roots).await, default, "the default certificate stays");

    // A broken certificate file is refused with its entry named; the last good one keeps serving.
    let g1 = gw.generation().await;
    replace_file(&crt, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    let doc = gw.wait_reload_error(10).await;
    let error = doc["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("[[tls.certificates]] \"admin.example.com\": ") && error.contains("admin.crt"),
        "{error}"
    );
    assert_eq!(doc["generation"].as_u64(), Some(g1), "{doc}");
    assert_eq!(accepted(gw.https, Some("admin.example.com"), &roots).await, two);
    tokio::time::sleep(Duration::from_millis(200)).await;

    busy.store(false, Ordering::Relaxed);
    let (sent, failed, seen) = traffic.await.unwrap();
    assert!(sent > 50, "traffic flowed: {sent} requests");
    assert!(failed.is_empty(), "{} of {sent} requests failed: {:?}", failed.len(), &failed[..1]);
    // The fresh handshakes went from the old certificate to the new one, never back.
    let first_new = seen.iter().position(|c| c.as_ref() == Some(&two)).expect("a handshake met the new certificate");
    assert!(seen[..first_new].iter().all(|c| c.as_ref() == Some(&one)), "before the swap: the old certificate");
    assert!(seen[first_new..].iter().all(|c| c.as_ref() == Some(&two)), "after the swap: the new one only");
    assert!(first_new > 0, "some handshakes happened before the swap");
}

/// `curl -k` to `https://<name>:port/pub/x`, resolved to the gateway, with a client certificate
/// when given: the body, or curl's error.
async fn curl(addr: SocketAddr, name: &str, client: Option<(&Path, &Path)>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "5", "--resolve", &format!("{name}:{}:127.0.0.1", addr.port())]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.arg(format!("https://{name}:{}/pub/x", addr.port()));
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().expect("curl")).await.unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_applies_whichever_certificate_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    openssl_cert(&certs, "admin", "tokengate admin", "DNS:admin.example.com,DNS:*.admin.example.com");
    // A client CA and a client certificate it signs, made with openssl as an operator would.
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&certs).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=clients"]]
        .concat());
    run(&[&["req", "-new"][..], &ec, &["-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client-7"]]
        .concat());
    // With extensions (an X.509 v3 certificate, which webpki requires), for client authentication.
    std::fs::write(certs.join("client.ext"), "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
        .unwrap();
    let sign = ["-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.crt"];
    run(&[&["x509", "-req", "-days", "2", "-extfile", "client.ext"][..], &sign].concat());
    let tls =
        format!("client_ca = \"certs/ca.crt\"\nclient_auth = \"required\"\n{}", entries(&[(ADMIN_NAMES, "admin")]));
    let gw = Gw::start_in(dir, &Config::new().tls(&tls).rest(ECHO_ROUTES).text()).await;
    let client = (gw.path("certs/client.crt"), gw.path("certs/client.key"));
    for name in ["admin.example.com", "x.admin.example.com", "localhost"] {
        let body = curl(gw.https, name, Some((&client.0, &client.1))).await;
        assert!(body.is_ok(), "{name} with a client certificate: {body:?}");
        let refused = curl(gw.https, name, None).await;
        assert!(refused.is_err(), "{name} without a client certificate: {refused:?}");
    }
    assert_eq!(s_client_subject(gw.https, Some("admin.example.com")).await, subject_of(&gw.path("certs/admin.crt")));
}

/// `tokengate check` of `text` in `dir`: its one line on stderr, which must carry no debug text.
fn check_error(dir: &Path, text: &str) -> String {
    let config = dir.join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["check", "--config"])
        .arg(&config)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tokengate");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for tell in ["os error", "Os {", "kind:", "Custom {", "backtrace", "Error {", "Some(", "\\\""] {
        assert!(!err.contains(tell), "debug text {tell:?} in: {err}");
    }
    err
}

#[test]
fn a_bad_entry_is_one_sentence_naming_it_the_file_and_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let p = |rel: &str| dir.path().join(rel).display().to_string();
    // The certificate names admin.example.com only: the wildcard the entry lists is not covered.
    openssl_cert(&certs, "admin", "tokengate admin", "DNS:admin.example.com");
    let err = check_error(dir.path(), &Config::new().tls(&entries(&[(ADMIN_NAMES, "admin")])).text());
    assert_eq!(
        err,
        format!(
            "tokengate: [[tls.certificates]] \"admin.example.com\": {}: does not cover the name \
             \"*.admin.example.com\" (its subjectAltName names admin.example.com)",
            p("certs/admin.crt")
        )
    );
    // A common name alone covers nothing.
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=admin.example.com", "-keyout"])
        .arg(certs.join("cn.key"))
        .arg("-out")
        .arg(certs.join("cn.crt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = check_error(dir.path(), &Config::new().tls(&entries(&[(&["admin.example.com"], "cn")])).text());
    assert_eq!(
        err,
        format!(
            "tokengate: [[tls.certificates]] \"admin.example.com\": {}: does not cover the name \
             \"admin.example.com\" (it has no subjectAltName, and its common name alone is not enough)",
            p("certs/cn.crt")
        )
    );
    // One name, two entries.
    let two = entries(&[(&["admin.example.com"], "admin"), (&["api.example.com", "Admin.Example.com"], "admin")]);
    let err = check_error(dir.path(), &Config::new().tls(&two).text());
    assert_eq!(
        err,
        format!(
            "tokengate: {}: [[tls.certificates]] \"api.example.com\" lists the name \"Admin.Example.com\", which \
             [[tls.certificates]] \"admin.example.com\" lists already; a name has one certificate",
            p("gateway.toml")
        )
    );
    // A file that is not there.
    let err = check_error(dir.path(), &Config::new().tls(&entries(&[(&["admin.example.com"], "missing")])).text());
    assert_eq!(
        err,
        format!("tokengate: [[tls.certificates]] \"admin.example.com\": {}: does not exist", p("certs/missing.crt"))
    );
    // Files that are there, and no mistake: check passes.
    let ok = entries(&[(&["admin.example.com"], "admin")]);
    std::fs::write(dir.path().join("gateway.toml"), Config::new().tls(&ok).text()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["check", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
