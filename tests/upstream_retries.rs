//! A group's retries over the wire: a request written to an endpoint that then closes the
//! connection without an answer is retried on another only when its method is idempotent and its
//! body was kept (`retry_buffer_bytes`), within the retry budget; and a group's `ca` for its
//! `https://` endpoints.

mod common;
#[path = "support/test_ca.rs"]
mod test_ca;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An endpoint that reads each request whole (head and `content-length` body), then closes the
/// connection without answering: a request written, then reset before its answer's head.
async fn dropper() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tcp.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap_or(0));
                    if buf.len() >= end + 4 + length {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let _ = tcp.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// A group `svc` of the dropper (picked first) and a recording upstream, and a route to it.
async fn gateway(extra: &str) -> (Gw, Arc<AtomicUsize>, Upstream, String) {
    let (drop_addr, dropped) = dropper().await;
    let ok = Upstream::start(Mode::Ok).await;
    let dropper_url = format!("http://{drop_addr}");
    let group = format!(
        "\n[[upstreams]]\nname = \"svc\"\nendpoints = [{dropper_url:?}, {:?}]\n\
         eject = {{ consecutive_failures = 100 }}\n{extra}\n{}",
        ok.url(),
        route("/svc", "svc", "public = true")
    );
    let gw = Gw::start_text(&Config::new().rest(&group).text()).await;
    (gw, dropped, ok, dropper_url)
}

/// Round robin starts at the dropper and a retry takes no turn: every odd request goes to it
/// first. `filler` sends the even one to the other endpoint.
async fn filler(conn: &mut Conn) {
    assert_eq!(conn.send(req("GET", "/svc/filler", &[], empty())).await.status, 200);
}

fn counter(metrics: &str, name: &str, endpoint: &str) -> u64 {
    sample(metrics, &format!("tokengate_upstream_endpoint_{name}_total{{group=\"svc\",endpoint=\"{endpoint}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_retried_only_for_idempotent_methods_with_a_kept_body() {
    let (gw, dropped, ok, dropper_url) = gateway("retry_buffer_bytes = 1024").await;
    let mut conn = gw.plain_conn().await;

    let r = conn.send(req("GET", "/svc/a", &[], empty())).await;
    assert_eq!((r.status.as_u16(), dropped.load(Ordering::SeqCst)), (200, 1), "a reset GET is answered by the other");
    assert_eq!(ok.last().uri, "/svc/a");
    filler(&mut conn).await;

    let r = conn.send(req("POST", "/svc/b", &[], full("order-1"))).await;
    assert_eq!((r.status.as_u16(), dropped.load(Ordering::SeqCst)), (502, 2), "a written POST is never sent twice");
    assert!(ok.seen().iter().all(|s| s.method != "POST"), "the POST reached only the first endpoint");
    filler(&mut conn).await;

    let body = vec![b'p'; 1000];
    let r = conn.send(req("PUT", "/svc/c", &[], full(body.clone()))).await;
    assert_eq!(
        (r.status.as_u16(), dropped.load(Ordering::SeqCst)),
        (200, 3),
        "a PUT whose body was kept is sent again"
    );
    let put = ok.last();
    assert_eq!((put.method.as_str(), put.body_len, put.body_sha256), ("PUT", 1000, sha256(&body)), "body intact");
    filler(&mut conn).await;

    let r = conn.send(req("PUT", "/svc/d", &[], full(vec![b'q'; 2000]))).await;
    assert_eq!(
        (r.status.as_u16(), dropped.load(Ordering::SeqCst)),
        (502, 4),
        "a body past retry_buffer_bytes is not kept"
    );
    assert!(ok.seen().iter().all(|s| s.uri != "/svc/d"));

    let metrics = gw.metrics().await;
    assert_eq!(counter(&metrics, "retries", &dropper_url), 2, "{metrics}");
    assert_eq!(counter(&metrics, "retry_budget_exhausted", &dropper_url), 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_beyond_the_budget_or_with_retries_0() {
    let (gw, dropped, _ok, dropper_url) = gateway("retry_budget = { ratio = 0.0, min_retries_per_sec = 0 }").await;
    let mut conn = gw.plain_conn().await;
    let r = conn.send(req("GET", "/svc/a", &[], empty())).await;
    assert_eq!((r.status.as_u16(), dropped.load(Ordering::SeqCst)), (502, 1), "the budget has no retry to give");
    let metrics = gw.metrics().await;
    assert_eq!(counter(&metrics, "retry_budget_exhausted", &dropper_url), 1, "{metrics}");
    assert_eq!(counter(&metrics, "retries", &dropper_url), 0, "{metrics}");

    let (gw, dropped, _ok, _) = gateway("retries = 0").await;
    let r = gw.plain_conn().await.send(req("GET", "/svc/a", &[], empty())).await;
    assert_eq!((r.status.as_u16(), dropped.load(Ordering::SeqCst)), (502, 1), "retries = 0: none");
}

/// An HTTPS endpoint presenting a certificate for 127.0.0.1 signed by `ca`.
async fn https_endpoint(ca: &test_ca::TestCa) -> SocketAddr {
    let (cert, key) = ca.server_cert(&["127.0.0.1"]);
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.expect("chain"), key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(|_r: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("tls-ok")))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_ca_verifies_its_https_endpoints() {
    let ca = test_ca::TestCa::new("orders test CA");
    let addr = https_endpoint(&ca).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/orders-ca.pem"), &ca.pem).unwrap();
    let groups = |ca: &str| {
        format!(
            "\n[[upstreams]]\nname = \"orders\"\nendpoints = [\"https://{addr}\"]\n{ca}\n\n\
             [[upstreams]]\nname = \"unpinned\"\nendpoints = [\"https://{addr}\"]\n{}{}",
            route("/orders", "orders", "public = true"),
            route("/unpinned", "unpinned", "public = true")
        )
    };
    let gw = Gw::start_in(dir, &Config::new().rest(&groups("ca = \"certs/orders-ca.pem\"")).text()).await;
    let mut conn = gw.plain_conn().await;
    let r = conn.send(req("GET", "/orders/1", &[], empty())).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "tls-ok"), "the group's ca is trusted");
    let r = conn.send(req("GET", "/unpinned/1", &[], empty())).await;
    assert_eq!(r.status, 502, "without it, the webpki roots refuse the test CA: {}", r.text());
}
