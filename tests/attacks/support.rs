//! Shared fixtures for the adversarial suite: one gateway ("lab") with a public root route, a
//! protected `/admin` and `/api`, three external issuers (RSA, RSA+HS256, HMAC), token-endpoint
//! clients and a user; raw TCP/TLS byte clients that never panic on a closed connection.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokengate::config::RsaAlg;
use tokengate::keys::{generate_pem, Alg, SigningKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

pub const RSA_ISS: &str = "https://rsa-idp.test";
pub const MIX_ISS: &str = "https://mixed-idp.test";
pub const HS_ISS: &str = "https://hmac-idp.test";
/// The 32-byte secret of the HMAC issuer's `oct` key `h1`.
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The RSA key of the external issuers, generated once per test binary.
fn rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate_pem(Alg::RS256).expect("RSA key"))
}

pub fn rsa_key(alg: RsaAlg) -> SigningKey {
    SigningKey::from_pem("rsa1", rsa_pem().as_bytes(), alg).expect("RSA key parses")
}

/// The lab's clients (one per grant, and `jwtc` with a client-assertion key) and user.
fn lab_tables(jwtc_pem: &str) -> String {
    let s = secret_hash(SECRET);
    let cc = ["client_credentials"];
    [
        client("svc", &s, &cc, &["read", "admin"], &["read"]),
        client("app", &s, &["password", "refresh_token"], &["read", "openid", "admin"], &["read"]),
        client("jwtc", &format!("public_key = \"{jwtc_pem}\""), &cc, &["read"], &["read"]),
        user("alice", ALICE_PW, &["read", "openid", "admin"], ""),
    ]
    .concat()
}

pub struct Lab {
    pub gw: Gw,
    /// Keys dir (absolute, outside the gateway's own temp dir) and JWKS files.
    pub aux: TempDir,
    /// Behind the public root route "/".
    pub public: Upstream,
    /// Behind "/admin" (scope `admin`).
    pub admin: Upstream,
    /// Behind "/api" (scope `read`, `X-Tenant` from the `tenant` claim).
    pub api: Upstream,
    /// Our own active signing key (kid `k1`, ES256).
    pub k1: SigningKey,
    /// The client-assertion key of client `jwtc`.
    pub assertion_key: SigningKey,
}

impl Lab {
    pub async fn start() -> Lab {
        Self::start_with("", "").await
    }

    /// `server_extra` goes into `[server]`, `top_extra` at the end of the file.
    pub async fn start_with(server_extra: &str, top_extra: &str) -> Lab {
        let aux = tempfile::tempdir().expect("tempdir");
        let keys = aux.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (k1_pem, k1) = fresh_key("k1", Alg::ES256);
        std::fs::write(keys.join("k1.pem"), k1_pem).unwrap();
        let mut rsa_jwk = rsa_key(RsaAlg::RS256).public_jwk().clone();
        write_json(&aux.path().join("rsa.jwks"), &json!({"keys": [rsa_jwk.clone()]}));
        rsa_jwk.as_object_mut().unwrap().remove("alg");
        write_json(&aux.path().join("mix.jwks"), &json!({"keys": [rsa_jwk]}));
        write_json(
            &aux.path().join("hs.jwks"),
            &json!({"keys": [{"kty": "oct", "kid": "h1", "k": B64.encode(HS_SECRET)}]}),
        );
        let (_, assertion_key) = fresh_key("jwtc-key", Alg::ES256);
        let spki = p256_spki_der(&jwk_point(assertion_key.public_jwk()));
        std::fs::write(aux.path().join("jwtc.pem"), tokengate::keys::pem_encode("PUBLIC KEY", &spki)).unwrap();
        let (public, admin, api) =
            (Upstream::start(Mode::Ok).await, Upstream::start(Mode::Ok).await, Upstream::start(Mode::Ok).await);
        let a = aux.path().display();
        let issuers =
            [(RSA_ISS, "rsa", r#""RS256""#), (MIX_ISS, "mix", r#""RS256", "HS256""#), (HS_ISS, "hs", r#""HS256""#)]
                .map(|(iss, f, algs)| {
                    format!("\n[[issuers]]\nissuer = \"{iss}\"\njwks = \"{a}/{f}.jwks\"\nalgorithms = [{algs}]\n")
                })
                .concat();
        let config = Config::new()
            .server("max_header_bytes = 8192\n")
            .server(server_extra)
            .shutdown_grace_secs(1)
            .keys_dir(format!("{a}/keys"))
            .log("level = \"error\"")
            .rest(&lockout(3, 60, 0))
            .rest("\n[state]\npath = \":memory:\"\n")
            .rest(&issuers)
            .rest(&route("/", &public.url(), "public = true"))
            .rest(&route("/admin", &admin.url(), "scopes = [\"admin\"]"))
            .rest(&route("/api", &api.url(), "scopes = [\"read\"]\nclaims_to_headers = { \"X-Tenant\" = \"tenant\" }"))
            .rest(&lab_tables(&format!("{a}/jwtc.pem")))
            .rest(top_extra);
        let gw = Gw::start_config(&config).await;
        Lab { gw, aux, public, admin, api, k1, assertion_key }
    }

    /// Total requests every upstream received.
    pub fn upstream_total(&self) -> usize {
        self.public.count() + self.admin.count() + self.api.count()
    }

    /// Asserts that `tok` on `/api/x` is 401 `invalid_token` and reaches no upstream.
    pub async fn assert_refused(&self, conn: &mut Conn, name: &str, tok: &str) {
        let before = self.upstream_total();
        let r = conn.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())).await;
        assert_eq!(r.status, 401, "{name}: expected 401, got {} {}", r.status, r.text());
        assert!(r.www_auth().contains("error=\"invalid_token\""), "{name}: {}", r.www_auth());
        assert_eq!(r.json()["error"], "invalid_token", "{name}");
        assert_eq!(self.upstream_total(), before, "{name}: a refused token reached an upstream");
    }

    /// GET /api/x with the token; the status.
    pub async fn status_of(&self, conn: &mut Conn, tok: &str) -> u16 {
        conn.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())).await.status.as_u16()
    }

    pub async fn healthy(&self) {
        let (s, body) = self.gw.admin_get("/healthz").await;
        assert_eq!(s, 200, "/healthz: {body}");
        let tok = token(&self.k1, &claims("health", "read admin"));
        let r = self.gw.get_with("/api/health", &tok).await;
        assert_eq!(r.status, 200, "a valid request after the attack: {}", r.text());
    }
}

/// Claims for an external issuer.
pub fn ext_claims(iss: &str, scope: &str) -> Value {
    let mut c = claims("ext", scope);
    c["iss"] = json!(iss);
    c
}

/// DER SEQUENCE/INTEGER/... with a definite length.
pub fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let b = n.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        out.push(0x80 | (b.len() - skip) as u8);
        out.extend(&b[skip..]);
    }
    out.extend(body);
    out
}

/// (PKCS#1 DER, SPKI DER) of an RSA JWK.
pub fn rsa_public_ders(jwk: &Value) -> (Vec<u8>, Vec<u8>) {
    let int = |name: &str| {
        let mut v = B64.decode(jwk[name].as_str().unwrap()).unwrap();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        der(0x02, &v)
    };
    let pkcs1 = der(0x30, &[int("n"), int("e")].concat());
    let alg_id =
        der(0x30, &[der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]), vec![0x05, 0x00]].concat());
    let mut bits = vec![0u8];
    bits.extend(&pkcs1);
    let spki = der(0x30, &[alg_id, der(0x03, &bits)].concat());
    (pkcs1, spki)
}

/// Statuses of every HTTP/1.x response head in `buf` (pipelined answers included).
pub fn statuses(buf: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(buf);
    text.match_indices("HTTP/1.").filter_map(|(i, _)| text.get(i + 9..i + 12)).filter_map(|s| s.parse().ok()).collect()
}

/// Writes `bytes` (ignoring write errors: the server may close early) and reads until the
/// server closes, an error, or `idle` passes without data; never longer than 10 s.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: &[u8], idle: Duration) -> Vec<u8> {
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        match tokio::time::timeout(idle, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

pub async fn raw_plain(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.expect("connect");
    exchange(s, bytes, Duration::from_millis(800)).await
}

pub async fn raw_tls(gw: &Gw, bytes: &[u8]) -> Vec<u8> {
    let s = tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[b"http/1.1"]).await;
    exchange(s, bytes, Duration::from_millis(800)).await
}

/// A TLS stream negotiated for h2, for the `h2` crate.
pub async fn h2_client(gw: &Gw) -> h2::client::SendRequest<bytes::Bytes> {
    let s = tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[b"h2"]).await;
    let (send, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A listener that counts connections: proof that nothing was fetched from it.
pub struct Tripwire {
    pub addr: SocketAddr,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl Tripwire {
    pub async fn start() -> Tripwire {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = l.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Tripwire { addr, hits }
    }
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}
