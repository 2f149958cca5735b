//! Shared helpers for the over-the-wire tests: a gateway in a temp dir, HTTPS (h1/h2) and plain
//! clients, a raw-TCP client, a recording upstream, and token forging.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tokengate::commands::{mint, MintRequest};
use tokengate::config::RsaAlg;
use tokengate::keys::SigningKey;
use tokengate::server::Running;

pub const ISSUER: &str = "https://tokengate.test";
pub const AUD: &str = "api";
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Gateway

/// The `gateway.toml` used by the tests; `server_extra` goes into `[server]`, `routes` at the end.
pub fn config_text(server_extra: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
listen_plain = "127.0.0.1:0"
shutdown_grace_secs = 5
{server_extra}

[tls]
cert = "certs/gateway.crt"
key = "certs/gateway.key"
self_signed_if_missing = true

[admin]
listen = "127.0.0.1:0"

[tokens]
issuer = "{ISSUER}"
audience = "{AUD}"
keys_dir = "keys"
active_kid = "k1"
generate_if_missing = true
leeway_secs = 5

[log]
level = "warn"

{routes}
"#
    )
}

/// A gateway running in-process from a config in its own temp dir.
pub struct Gw {
    pub dir: TempDir,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub plain: SocketAddr,
    pub admin: SocketAddr,
    /// The certificate served at start (trusted by `conn_*`).
    pub cert: CertificateDer<'static>,
    running: Option<Running>,
}

impl Gw {
    pub async fn start(server_extra: &str, routes: &str) -> Gw {
        Self::start_text(&config_text(server_extra, routes)).await
    }

    pub async fn start_text(text: &str) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).expect("write config");
        let running = tokengate::server::start(config.clone()).await.expect("gateway starts");
        let cert = read_cert(&dir.path().join("certs/gateway.crt"));
        Gw {
            https: running.https_addr,
            plain: running.plain_addr.expect("listen_plain is configured"),
            admin: running.admin_addr,
            cert,
            config,
            dir,
            running: Some(running),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Graceful shutdown; returns when every task has ended.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// A valid token from `tokengate::commands::mint`.
    pub fn mint(&self, sub: &str, scope: &str) -> String {
        mint(&self.config, &MintRequest { sub, scope, ttl: Some(600), aud: None, client_id: Some("client-7") }).expect("mint")
    }

    /// The private key `keys/<kid>.pem` as a `SigningKey`.
    pub fn key(&self, kid: &str) -> SigningKey {
        load_key(&self.path(&format!("keys/{kid}.pem")), kid)
    }

    /// A fresh HTTPS connection (h2 when `h2`), trusting the start certificate.
    pub async fn tls(&self, h2: bool) -> Conn {
        Conn::tls(self.https, &[self.cert.clone()], h2).await
    }

    /// A fresh plain-HTTP/1.1 connection to `listen_plain`.
    pub async fn plain_conn(&self) -> Conn {
        Conn::plain(self.plain).await
    }

    /// One GET over a fresh HTTPS/1.1 connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.tls(false).await.send(req("GET", path, headers, empty())).await
    }

    /// GET with `Authorization: Bearer <token>`.
    pub async fn get_with(&self, path: &str, token: &str) -> Resp {
        self.get(path, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// One admin request; (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = raw(self.admin, &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")).await;
        (r.status, r.body_text())
    }

    pub async fn reload_status(&self) -> Value {
        let (status, body) = self.admin_get("/reload").await;
        assert_eq!(status, 200, "GET /reload: {body}");
        serde_json::from_str(&body).expect("/reload is JSON")
    }

    pub async fn generation(&self) -> u64 {
        self.reload_status().await["generation"].as_u64().expect("generation is a number")
    }

    /// Polls `/reload` until `generation > above` (panics after `secs`); returns the document.
    pub async fn wait_generation_above(&self, above: u64, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let doc = self.reload_status().await;
            if doc["generation"].as_u64().unwrap_or(0) > above {
                return doc;
            }
            assert!(Instant::now() < deadline, "no reload within {secs}s; /reload = {doc}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/reload` until `last_error` is set (panics after `secs`); returns the document.
    pub async fn wait_reload_error(&self, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let doc = self.reload_status().await;
            if !doc["last_error"].is_null() {
                return doc;
            }
            assert!(Instant::now() < deadline, "no failed reload within {secs}s; /reload = {doc}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The file watcher is registered asynchronously after `start`: rewrite the config (same
    /// content) until a reload is observed, so later file changes cannot be missed.
    pub async fn wait_watcher_ready(&self) -> u64 {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let base = self.generation().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            replace_file(&self.config, text.as_bytes());
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let g = self.generation().await;
                if g > base {
                    return g;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(Instant::now() < deadline, "the config file watcher never reloaded");
        }
    }
}

pub fn read_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).expect("cert file").next().expect("one cert").expect("cert PEM")
}

pub fn load_key(path: &Path, kid: &str) -> SigningKey {
    let pem = std::fs::read(path).expect("key file");
    SigningKey::from_pem(kid, &pem, RsaAlg::RS256).expect("key PEM")
}

/// Writes `bytes` to a temporary sibling and renames it over `path`, like an editor.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

// ---------------------------------------------------------------------------------------------
// Clients

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body fed from a channel: no length is known in advance, so it is sent chunked / streamed.
pub struct ChanBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed body of `total` bytes of `pattern_byte` data, produced in 64 KiB chunks.
pub fn streamed(total: usize) -> ReqBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut off = 0;
        while off < total {
            let n = (total - off).min(64 * 1024);
            let chunk: Vec<u8> = (off..off + n).map(pattern_byte).collect();
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            off += n;
        }
    });
    ChanBody(rx).boxed()
}

/// Deterministic, non-periodic-looking test data.
pub fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8 ^ (i as u8)
}

pub fn pattern_sha256(total: usize) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut off = 0;
    while off < total {
        let n = (total - off).min(64 * 1024);
        let chunk: Vec<u8> = (off..off + n).map(pattern_byte).collect();
        ctx.update(&chunk);
        off += n;
    }
    ctx.finish().as_ref().to_vec()
}

pub fn sha256(b: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref().to_vec()
}

/// A request in origin form; `Conn::send` adapts it to h1 (Host) or h2 (absolute URI).
pub fn req(method: &str, path: &str, headers: &[(&str, &str)], body: ReqBody) -> Request<ReqBody> {
    let mut r = Request::builder().method(method).uri(path).body(body).expect("request");
    for (k, v) in headers {
        r.headers_mut().append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
    }
    r
}

/// A collected response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }
    pub fn www_auth(&self) -> &str {
        self.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate on {} {}", self.status, self.text()))
    }
    /// True when `needle` appears in the body or in any header value.
    pub fn mentions(&self, needle: &str) -> bool {
        self.text().contains(needle) || self.headers.values().any(|v| String::from_utf8_lossy(v.as_bytes()).contains(needle))
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// One client connection (HTTPS h1/h2 or plain h1).
pub struct Conn {
    sender: Sender,
    pub peer_cert: Option<CertificateDer<'static>>,
    pub alpn: Option<Vec<u8>>,
}

pub fn tls_client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.clone()).expect("trust cert");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg
}

/// TLS handshake to `addr` as "localhost"; returns the stream.
pub async fn tls_connect(addr: SocketAddr, roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(roots, alpn)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp)).await.expect("timely handshake").expect("TLS handshake")
}

impl Conn {
    pub async fn tls(addr: SocketAddr, roots: &[CertificateDer<'static>], h2: bool) -> Conn {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let stream = tls_connect(addr, roots, alpn).await;
        let (_, session) = stream.get_ref();
        let peer_cert = session.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1 handshake");
            tokio::spawn(conn);
            Sender::H1(s)
        };
        Conn { sender, peer_cert, alpn }
    }

    pub async fn plain(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("h1 handshake");
        tokio::spawn(conn);
        Conn { sender: Sender::H1(s), peer_cert: None, alpn: None }
    }

    /// Sends and returns the response head with its streaming body.
    pub async fn send_streaming(&mut self, mut r: Request<ReqBody>) -> Response<Incoming> {
        let fut = async {
            match &mut self.sender {
                Sender::H1(s) => {
                    if !r.headers().contains_key(http::header::HOST) {
                        r.headers_mut().insert(http::header::HOST, HeaderValue::from_static("localhost"));
                    }
                    s.ready().await.expect("h1 ready");
                    s.send_request(r).await
                }
                Sender::H2(s) => {
                    let pq = r.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
                    *r.uri_mut() = format!("https://localhost{pq}").parse().expect("h2 uri");
                    *r.version_mut() = Version::HTTP_2;
                    s.ready().await.expect("h2 ready");
                    s.send_request(r).await
                }
            }
        };
        tokio::time::timeout(IO_TIMEOUT, fut).await.expect("timely response").expect("response")
    }

    /// Sends and collects the whole response.
    pub async fn send(&mut self, r: Request<ReqBody>) -> Resp {
        let resp = self.send_streaming(r).await;
        collect(resp).await
    }
}

pub async fn collect(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(IO_TIMEOUT, body.collect()).await.expect("timely body").expect("body").to_bytes();
    Resp { status: parts.status, version: parts.version, headers: parts.headers, body }
}

/// A response read off a raw TCP socket.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    /// Header lines as sent (name lowercased).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body_text()))
    }
}

/// Writes `request` verbatim to `addr` and reads the answer until the server closes
/// (send `Connection: close`). Chunked bodies are decoded.
pub async fn raw(addr: SocketAddr, request: &str) -> RawResp {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(IO_TIMEOUT, exchange).await.expect("timely raw answer");
    parse_raw(&buf)
}

pub fn parse_raw(buf: &[u8]) -> RawResp {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + size]);
            rest = &rest[p + 2 + size + 2..];
        }
        body = out;
    }
    RawResp { status, headers, body }
}

// ---------------------------------------------------------------------------------------------
// Recording upstream

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }
}

/// How the upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 200 `upstream-ok`, after reading the whole body.
    Ok,
    /// Reads the request, waits, then 200 `slow-ok`.
    Slow(Duration),
    /// 200 with a streamed body of `n` pattern bytes.
    Big(usize),
    /// 200 with hop-by-hop headers that must not reach the client.
    HopHeaders,
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type UpBody = BoxBody<Bytes, std::io::Error>;

impl Upstream {
    pub async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r: Request<Incoming>| {
                        let rec = rec.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(mode, rec, r).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received a request")
    }
}

async fn answer(mode: Mode, rec: Arc<Mutex<Vec<Seen>>>, r: Request<Incoming>) -> Response<UpBody> {
    let (parts, mut body) = r.into_parts();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            len += d.len() as u64;
            ctx.update(d);
        }
    }
    let uri = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    rec.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri,
        headers: parts.headers,
        body_len: len,
        body_sha256: ctx.finish().as_ref().to_vec(),
    });
    let mut resp = match mode {
        Mode::Ok => Response::new(full("upstream-ok")),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            Response::new(full("slow-ok"))
        }
        Mode::Big(n) => Response::new(streamed(n)),
        Mode::HopHeaders => {
            let mut r = Response::new(full("hop"));
            let h = r.headers_mut();
            h.insert("connection", HeaderValue::from_static("X-Resp-Hop"));
            h.insert("x-resp-hop", HeaderValue::from_static("1"));
            h.insert("proxy-bar", HeaderValue::from_static("2"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("x-end-to-end", HeaderValue::from_static("kept"));
            r
        }
    };
    resp.headers_mut().insert("x-upstream", HeaderValue::from_static("yes"));
    resp
}

/// A local port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

// ---------------------------------------------------------------------------------------------
// Tokens

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn b64json(v: &Value) -> String {
    B64.encode(v.to_string())
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The header tokengate itself would write for `kid`/`alg`.
pub fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": "at+jwt"})
}

/// Claims of a token that is valid for the test issuer and audience.
pub fn claims(sub: &str, scope: &str) -> Value {
    let n = now();
    json!({"iss": ISSUER, "aud": AUD, "sub": sub, "client_id": "forge-client", "scope": scope,
           "iat": n - 10, "exp": n + 600, "jti": format!("jti-{sub}-{n}")})
}

/// `header.claims` signed by `key` (the header is taken as given, so it can lie).
pub fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64json(header), b64json(claims));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// A token with the normal header for `key`.
pub fn token(key: &SigningKey, claims: &Value) -> String {
    sign_with(key, &header(key.alg.as_str(), &key.kid), claims)
}

/// `header.claims` with an HMAC-SHA256 signature under `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64json(header), b64json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Flips one bit in the middle of the signature (re-encoded canonically).
pub fn flip_signature_bit(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    let mut raw = B64.decode(sig).expect("b64 signature");
    let i = raw.len() / 2;
    raw[i] ^= 0x01;
    format!("{input}.{}", b64(&raw))
}

/// SubjectPublicKeyInfo DER of a P-256 public key given as an uncompressed point.
pub fn p256_spki_der(point: &[u8]) -> Vec<u8> {
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    der
}

/// The uncompressed EC point of a P-256 JWK.
pub fn jwk_point(jwk: &Value) -> Vec<u8> {
    let mut p = vec![4u8];
    p.extend(B64.decode(jwk["x"].as_str().expect("x")).expect("b64 x"));
    p.extend(B64.decode(jwk["y"].as_str().expect("y")).expect("b64 y"));
    p
}
