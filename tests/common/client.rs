//! Clients: HTTPS (h1 or h2 over tokio-rustls), plain HTTP/1.1, raw TCP; request bodies.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

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
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
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

/// `Content-Type` of a form POST.
pub const FORM_CT: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// `Basic` client credentials, id and secret form-urlencoded first (RFC 6749 2.3.1).
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret))))
}

/// An `application/x-www-form-urlencoded` body.
pub fn encode_form(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A request in origin form; `Conn::send` adapts it to h1 (Host) or h2 (absolute URI).
pub fn req(method: &str, path: &str, headers: &[(&str, &str)], body: ReqBody) -> Request<ReqBody> {
    let mut r = Request::builder().method(method).uri(path).body(body).expect("request");
    for (k, v) in headers {
        r.headers_mut()
            .append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
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
        self.header("www-authenticate")
            .unwrap_or_else(|| panic!("no WWW-Authenticate on {} {}", self.status, self.text()))
    }
    /// True when `needle` appears in the body or in any header value.
    pub fn mentions(&self, needle: &str) -> bool {
        self.text().contains(needle)
            || self.headers.values().any(|v| String::from_utf8_lossy(v.as_bytes()).contains(needle))
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
pub async fn tls_connect(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(roots, alpn)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("timely handshake")
        .expect("TLS handshake")
}

impl Conn {
    pub async fn tls(addr: SocketAddr, roots: &[CertificateDer<'static>], h2: bool) -> Conn {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        Conn::over_tls(tls_connect(addr, roots, alpn).await, h2).await
    }

    /// HTTP (h2 when `h2`) over a TLS stream made elsewhere (a client certificate, say).
    pub async fn over_tls(stream: tokio_rustls::client::TlsStream<TcpStream>, h2: bool) -> Conn {
        let (_, session) = stream.get_ref();
        let peer_cert = session.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2 handshake");
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

    /// h2 with prior knowledge (no TLS, no upgrade): what gRPC clients do on a plain port.
    pub async fn plain_h2(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
        tokio::spawn(conn);
        Conn { sender: Sender::H2(s), peer_cert: None, alpn: None }
    }

    /// Another handle on the same h2 connection, for concurrent streams.
    pub fn clone_h2(&self) -> Conn {
        match &self.sender {
            Sender::H2(s) => {
                Conn { sender: Sender::H2(s.clone()), peer_cert: self.peer_cert.clone(), alpn: self.alpn.clone() }
            }
            Sender::H1(_) => panic!("an HTTP/1.1 connection cannot be shared"),
        }
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
                    // An absolute target keeps its authority (`:authority`); a path goes to localhost.
                    if r.uri().authority().is_none() {
                        let pq = r.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
                        *r.uri_mut() = format!("https://localhost{pq}").parse().expect("h2 uri");
                    }
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

/// `n` GETs of `path` with a bearer `token`, all at once on clones of the HTTP/2 connection
/// `conn`: their responses, in the order sent.
pub async fn bearer_at_once(conn: &Conn, path: &str, token: &str, n: usize) -> Vec<Resp> {
    let auth = format!("Bearer {token}");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut c, auth, path) = (conn.clone_h2(), auth.clone(), path.to_owned());
            tokio::spawn(async move { c.send(req("GET", &path, &[("authorization", &auth)], empty())).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
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
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
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
