//! The upstream connection pool, seen from an upstream that counts its connections: one warm
//! connection serves request after request, bodiless answers give it back too, a client leaving
//! mid-body never leaves a half-read connection in the pool, a connection the upstream closed
//! while idle costs no request, idle ones close after `upstream_idle_timeout_secs`, and a reload
//! keeps them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::client::{empty, full, req, streamed, Conn};
use crate::common::*;

/// An upstream that counts the connections it accepted and the ones that ended, and answers by
/// path: `/204` no content, `/big` 4 MiB streamed, anything else 200 "pooled".
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, e) = (accepted.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let e = e.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|r: Request<Incoming>| async move {
                        let body: BoxBody<Bytes, std::io::Error> = match r.uri().path() {
                            "/204" => {
                                let mut resp =
                                    Response::new(BoxBody::new(http_body_util::Empty::new().map_err(|e| match e {})));
                                *resp.status_mut() = StatusCode::NO_CONTENT;
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                            "/big" => streamed(4 << 20),
                            _ => full("pooled"),
                        };
                        Ok(Response::new(body))
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Counting { addr, accepted, ended }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

fn routes(up: SocketAddr) -> String {
    route("/", &format!("http://{up}"), "public = true")
}

async fn get(c: &mut Conn, path: &str) -> (u16, usize) {
    let r = c.send(req("GET", path, &[], empty())).await;
    (r.status.as_u16(), r.body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_warm_upstream_connection_serves_sequential_requests_of_many_clients() {
    let up = Counting::start().await;
    let gw = Gw::start("", &routes(up.addr)).await;
    for _ in 0..3 {
        let mut c = gw.plain_conn().await;
        for _ in 0..10 {
            assert_eq!(get(&mut c, "/x").await, (200, 6));
        }
    }
    assert_eq!(up.accepted(), 1, "30 sequential requests should share one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_answers_give_the_connection_back() {
    let up = Counting::start().await;
    let gw = Gw::start("", &routes(up.addr)).await;
    let mut c = gw.plain_conn().await;
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/204").await, (204, 0));
        let head = c.send(req("HEAD", "/x", &[], empty())).await;
        assert_eq!((head.status.as_u16(), head.body.len()), (200, 0));
        assert_eq!(get(&mut c, "/x").await, (200, 6));
    }
    assert_eq!(up.accepted(), 1, "204 and HEAD answers must return their connection to the pool");
}

/// A client that leaves mid-body leaves the rest of the upstream's response on the wire: that
/// connection must be closed, never handed to the next request (which would read stale bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_never_leaves_a_half_read_connection_in_the_pool() {
    let up = Counting::start().await;
    let gw = Gw::start("", &routes(up.addr)).await;
    let mut s = TcpStream::connect(gw.plain).await.expect("connect");
    s.write_all(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n").await.expect("write");
    let mut first = vec![0u8; 64 * 1024];
    let n = s.read(&mut first).await.expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = gw.plain_conn().await;
    for _ in 0..5 {
        assert_eq!(get(&mut c, "/x").await, (200, 6), "a later request read another response's bytes");
    }
    let big = c.send(req("GET", "/big", &[], empty())).await;
    assert_eq!(big.body.len(), 4 << 20);
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    assert_eq!(up.accepted(), 2, "the abandoned connection is replaced once, then reused");
}

/// An upstream closing a keep-alive connection after every answer (as one whose keep-alive
/// timeout just ran out would) costs the client nothing: the request goes on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_upstream_closed_costs_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // Says nothing of closing (keep-alive by default), then closes anyway.
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let gw = Gw::start("", &routes(addr)).await;
    let mut c = gw.plain_conn().await;
    for i in 0..5 {
        assert_eq!(get(&mut c, "/x").await, (200, 2), "request {i} failed on a connection the upstream had closed");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let up = Counting::start().await;
    let gw = Gw::start("upstream_idle_timeout_secs = 1", &routes(up.addr)).await;
    let mut c = gw.plain_conn().await;
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    assert_eq!(up.ended(), 0);
    let start = Instant::now();
    while up.ended() == 0 {
        assert!(start.elapsed() < Duration::from_secs(4), "an idle upstream connection outlived its 1 s timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(700), "closed after {took:?}, before the idle timeout");
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_warm_upstream_connections_and_a_new_upstream_gets_its_own() {
    let up = Counting::start().await;
    let other = Counting::start().await;
    let gw = Gw::start("", &routes(up.addr)).await;
    let mut c = gw.plain_conn().await;
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    gw.wait_watcher_ready().await;
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    assert_eq!(up.accepted(), 1, "a reload with the same upstream dropped its warm connection");

    let text = std::fs::read_to_string(&gw.config).expect("read config");
    let generation = gw.generation().await;
    replace_file(&gw.config, text.replace(&up.addr.to_string(), &other.addr.to_string()).as_bytes());
    gw.wait_generation_above(generation, 10).await;
    assert_eq!(get(&mut c, "/x").await, (200, 6));
    assert_eq!((up.accepted(), other.accepted()), (1, 1));
}

/// An HTTPS upstream (its own self-signed certificate for 127.0.0.1) offering `alpn`; answers
/// with the HTTP version it served. Returns its address, the CA file to trust, and its count of
/// accepted connections.
async fn tls_upstream(dir: &std::path::Path, alpn: &[&[u8]]) -> (SocketAddr, std::path::PathBuf, Arc<AtomicUsize>) {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = (dir.join("up.crt"), dir.join("up.key"));
    tokengate::tls::write_self_signed(&cert, &key).expect("upstream certificate");
    let certified = tokengate::tls::load_certified_key(&cert, &key).expect("load certificate");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certified.cert.clone(), {
            let pem = std::fs::read(&key).expect("key");
            rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem).expect("key pem")
        })
        .expect("server config");
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(|r: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(full(format!("{:?}", r.version()))))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (addr, cert, accepted)
}

/// `https://` upstreams: h2 when the upstream offers it (one multiplexed connection), HTTP/1.1
/// otherwise, the route's `upstream_ca` trusted, and a certificate nobody vouches for refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_speak_h2_or_http1_and_are_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d2, d1) = (dir.path().join("h2"), dir.path().join("h1"));
    let (h2_addr, h2_ca, h2_conns) = tls_upstream(&d2, &[b"h2", b"http/1.1"]).await;
    let (h1_addr, h1_ca, h1_conns) = tls_upstream(&d1, &[b"http/1.1"]).await;
    let routes = [
        route("/two", &format!("https://{h2_addr}"), &format!("public = true\nupstream_ca = \"{}\"", h2_ca.display())),
        route("/one", &format!("https://{h1_addr}"), &format!("public = true\nupstream_ca = \"{}\"", h1_ca.display())),
        route("/untrusted", &format!("https://{h1_addr}"), "public = true"),
    ]
    .concat();
    let gw = Gw::start("", &routes).await;
    let mut c = gw.plain_conn().await;
    for _ in 0..3 {
        let r = c.send(req("GET", "/two/x", &[], empty())).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "HTTP/2.0"));
        let r = c.send(req("GET", "/one/x", &[], empty())).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "HTTP/1.1"));
    }
    assert_eq!(h2_conns.load(Ordering::SeqCst), 1, "h2 requests share one connection");
    assert_eq!(h1_conns.load(Ordering::SeqCst), 1, "HTTP/1.1 requests reuse their pooled connection");
    let r = c.send(req("GET", "/untrusted/x", &[], empty())).await;
    assert_eq!(r.status.as_u16(), 502, "a self-signed upstream was trusted without upstream_ca: {}", r.text());
}
