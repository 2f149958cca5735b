//! `[server]` limits: header read timeout (slowloris, idle keep-alive, silent connections), TLS
//! handshake timeout, and the overall and per-address connection caps. Each checks the cut, the
//! `tokengate_limit_hits_total` series where docs/configuration.md names one, and that others are served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;
use crate::*;

/// Short timeouts: a cut is expected after about one second.
const SHORT: &str = "header_read_timeout_secs = 1\ntls_handshake_timeout_secs = 1";
/// A closing connection must be gone within this long after the 1 s timeout would fire.
const CUT_MAX: Duration = Duration::from_millis(2500);
const CUT_MIN: Duration = Duration::from_millis(800);

const CLOSE_REQ: &str = "GET /pub/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn assert_cut(what: &str, end: &Ending, took: Duration) {
    assert!(end.closed_after.is_some(), "{what}: still open after {took:?}; got {:?}", end.text());
    assert!(took >= CUT_MIN && took <= CUT_MAX, "{what}: closed after {took:?}, expected about 1 s");
    assert!(!end.text().contains(" 200 "), "{what}: was answered: {}", end.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_request_head_is_cut_after_header_read_timeout() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let start = Instant::now();
    let (mut rd, mut wr) = TcpStream::connect(gw.plain).await.expect("connect").into_split();
    let dripper = tokio::spawn(async move {
        if wr.write_all(b"GET /pub/x HTTP/1.1\r\nHost: x\r\n").await.is_err() {
            return;
        }
        // One byte every 300 ms, for far longer than the timeout.
        for b in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')).take(30) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    assert_serving(&gw, "during the slowloris").await;
    let end = read_until_closed(&mut rd, Duration::from_secs(5)).await;
    let took = start.elapsed();
    dripper.abort();
    eprintln!("slowloris: closed after {took:?} ({} bytes answered)", end.bytes.len());
    assert_cut("dripped request head", &end, took);
    assert_serving(&gw, "after the slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let mut s = TcpStream::connect(gw.plain).await.expect("connect");
    s.write_all(b"GET /pub/first HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (status, _) = read_one_response(&mut s).await;
    assert_eq!(status, 200, "the first request is answered");
    let answered = Instant::now();
    let end = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let took = answered.elapsed();
    eprintln!("idle keep-alive: closed {took:?} after the response");
    assert!(end.bytes.is_empty(), "nothing more was asked: {}", end.text());
    assert!(end.closed_after.is_some(), "an idle keep-alive connection stayed open for {took:?}");
    assert!(took >= Duration::from_millis(600) && took <= CUT_MAX, "idle connection closed after {took:?}");
}

/// docs/configuration.md: `header_read_timeout_secs` is "time a client gets to send a request head", and an
/// idle connection is closed once it runs out. A client that connects and sends nothing at all
/// (plain) or nothing after its TLS handshake is the cheapest slowloris; it must be cut too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let start = Instant::now();
    let mut plain = TcpStream::connect(gw.plain).await.expect("connect");
    let mut tls = tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[b"http/1.1"]).await;
    // ALPN h2 sends hyper's h2 side, whose handshake has no timer of its own.
    let mut tls_h2 = tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[b"h2"]).await;
    let limit = Duration::from_millis(3500);
    let (p, t, t2) = tokio::join!(
        read_until_closed(&mut plain, limit),
        read_until_closed(&mut tls, limit),
        read_until_closed(&mut tls_h2, limit)
    );
    let took = start.elapsed();
    eprintln!("silent: plain {:?}, TLS h1 {:?}, TLS h2 {:?}", p.closed_after, t.closed_after, t2.closed_after);
    assert!(
        p.closed_after.is_some() && t.closed_after.is_some() && t2.closed_after.is_some(),
        "silent connections were not cut within {took:?} (plain closed: {:?}, TLS-after-handshake closed: {:?}, \
         TLS h2 closed: {:?}); a client sending no bytes holds a connection slot forever",
        p.closed_after,
        t.closed_after,
        t2.closed_after
    );
}

/// docs/configuration.md: "Every limit that refuses or cuts off a client counts in tokengate_limit_hits_total".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_cut_counts_in_limit_hits() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let before = all_limit_hits(&gw).await;
    let mut s = TcpStream::connect(gw.plain).await.expect("connect");
    s.write_all(b"GET /pub/x HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let end = read_until_closed(&mut s, Duration::from_secs(4)).await;
    assert!(end.closed_after.is_some(), "the partial head was not cut");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = gw.metrics().await;
    let hits: Vec<&str> = m.lines().filter(|l| l.starts_with("tokengate_limit_hits")).collect();
    assert!(
        all_limit_hits(&gw).await > before,
        "a connection cut by header_read_timeout_secs is not counted in tokengate_limit_hits_total: {hits:?}"
    );
}

/// The bytes of a real ClientHello for `localhost`.
fn client_hello(gw: &Gw) -> Vec<u8> {
    let cfg = Arc::new(tls_client_config(std::slice::from_ref(&gw.cert), &[b"http/1.1"]));
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(cfg, name).expect("client connection");
    let mut out = Vec::new();
    c.write_tls(&mut out).expect("ClientHello");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_timeout_closes_silent_and_half_hello_connections() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let before = limit_hits(&gw, "tls_handshake_timeout").await;
    let hello = client_hello(&gw);
    let start = Instant::now();
    let mut silent = TcpStream::connect(gw.https).await.expect("connect");
    let mut half = TcpStream::connect(gw.https).await.expect("connect");
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert_serving(&gw, "while two handshakes stall").await;
    let limit = Duration::from_secs(4);
    let (a, b) = tokio::join!(read_until_closed(&mut silent, limit), read_until_closed(&mut half, limit));
    let took = start.elapsed();
    eprintln!("TLS handshake: silent closed {:?}, half hello closed {:?}", a.closed_after, b.closed_after);
    assert_cut("silent TLS client", &a, took);
    assert_cut("half a ClientHello", &b, took);
    assert!(a.bytes.is_empty() && b.bytes.is_empty(), "the server sent bytes to an unfinished hello");
    eventually(3, "tls_handshake_timeout counted twice", || async {
        limit_hits(&gw, "tls_handshake_timeout").await == before + 2
    })
    .await;
    assert_serving(&gw, "after the handshake timeouts").await;
}

/// Reads one HTTP/1.1 response with a Content-Length body; (status, whole response).
async fn read_one_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().expect("content-length"));
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                return (status, buf);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("timely").expect("read");
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether a TLS handshake to the gateway completes (false: refused, closed or timed out).
async fn tls_handshake_ok(gw: &Gw) -> bool {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(std::slice::from_ref(&gw.cert), &[b"http/1.1"])));
    let Ok(tcp) = TcpStream::connect(gw.https).await else { return false };
    let name = ServerName::try_from("localhost").unwrap();
    matches!(tokio::time::timeout(Duration::from_secs(3), connector.connect(name, tcp)).await, Ok(Ok(_)))
}

/// Asserts that a raw exchange was refused at accept: closed at once, no response.
fn assert_refused(what: &str, end: &Ending) {
    let after = end.closed_after.unwrap_or_else(|| panic!("{what}: the connection stayed open"));
    assert!(end.bytes.is_empty(), "{what}: expected no response, got {}", end.text());
    assert!(after < Duration::from_millis(1000), "{what}: closed only after {after:?}");
}

async fn held_plain(gw: &Gw) -> Conn {
    let mut c = gw.plain_conn().await;
    assert_eq!(c.send(req("GET", "/pub/held", &[], empty())).await.status, 200);
    c
}

async fn held_tls(gw: &Gw) -> Conn {
    let mut c = gw.tls(false).await;
    assert_eq!(c.send(req("GET", "/pub/held", &[], empty())).await.status, 200);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_connection_from_one_address_is_refused_and_others_are_served() {
    let gw = Gw::start("header_read_timeout_secs = 5\nmax_connections_per_ip = 3", ECHO_ROUTES).await;
    let mut held = vec![held_plain(&gw).await, held_plain(&gw).await, held_tls(&gw).await];
    let before = limit_hits(&gw, "per_ip_connections").await;

    let s = TcpStream::connect(gw.plain).await.expect("the kernel still accepts the TCP handshake");
    assert_refused("4th plain connection from 127.0.0.1", &raw_exchange(s, CLOSE_REQ).await);
    assert!(!tls_handshake_ok(&gw).await, "a 4th TLS connection from 127.0.0.1 got through");
    eventually(3, "per_ip_connections counted twice", || async {
        limit_hits(&gw, "per_ip_connections").await == before + 2
    })
    .await;
    assert_eq!(limit_hits(&gw, "max_connections").await, 0, "the overall cap was not hit");

    // Another address is not affected.
    let other = connect_from([127, 0, 0, 2], gw.plain).await.expect("connect from 127.0.0.2");
    let end = raw_exchange(other, CLOSE_REQ).await;
    assert!(end.text().starts_with("HTTP/1.1 200"), "127.0.0.2 was not served: {}", end.text());

    // The held connections still work, and closing one frees a slot.
    assert_eq!(held[0].send(req("GET", "/pub/again", &[], empty())).await.status, 200);
    drop(held.pop());
    eventually(3, "a new connection once one closed", || async {
        let s = TcpStream::connect(gw.plain).await.expect("connect");
        raw_exchange(s, CLOSE_REQ).await.text().starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifth_connection_over_all_listeners_is_refused_at_max_connections() {
    let gw =
        Gw::start("header_read_timeout_secs = 5\nmax_connections = 4\nmax_connections_per_ip = 0", ECHO_ROUTES).await;
    // Both listeners count together: two plain and two TLS connections fill the cap.
    let mut held = vec![held_plain(&gw).await, held_plain(&gw).await, held_tls(&gw).await, held_tls(&gw).await];
    let before = limit_hits(&gw, "max_connections").await;

    // From another address too: the cap is overall, not per address.
    let other = connect_from([127, 0, 0, 2], gw.plain).await.expect("connect from 127.0.0.2");
    assert_refused("5th connection (from 127.0.0.2)", &raw_exchange(other, CLOSE_REQ).await);
    assert!(!tls_handshake_ok(&gw).await, "a 5th TLS connection got through");
    eventually(3, "max_connections counted twice", || async { limit_hits(&gw, "max_connections").await == before + 2 })
        .await;
    assert_eq!(limit_hits(&gw, "per_ip_connections").await, 0, "per-address cap is disabled");
    // The admin listener is not capped: health and metrics still answer.
    assert_eq!(gw.admin_get("/healthz").await.0, 200);

    assert_eq!(held[2].send(req("GET", "/pub/again", &[], empty())).await.status, 200);
    drop(held.remove(0));
    eventually(3, "a new connection once one closed", || async {
        let s = connect_from([127, 0, 0, 2], gw.plain).await.expect("connect");
        raw_exchange(s, CLOSE_REQ).await.text().starts_with("HTTP/1.1 200")
    })
    .await;
}
