//! Upstreams that misbehave: die in the middle of a body, reset before answering, never accept
//! the TCP connection, or answer slowly within the timeout. Refused and timed-out answers and the
//! plain response timeout are in tests/forwarding.rs and not repeated here.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;
use crate::*;

/// Sends a 200 head promising 100000 bytes, then 10 bytes, then closes.
async fn dies_mid_body(mut s: TcpStream) {
    read_request_head(&mut s).await;
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n";
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(b"0123456789").await;
    let _ = s.flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Reads the request, then resets the connection (SO_LINGER 0, then close) without a byte.
async fn resets_after_request(mut s: TcpStream) {
    read_request_head(&mut s).await;
    s.set_zero_linger().expect("SO_LINGER 0");
    drop(s);
}

/// Resets the connection as soon as it is accepted.
async fn resets_at_once(s: TcpStream) {
    s.set_zero_linger().expect("SO_LINGER 0");
    drop(s);
}

/// Answers the head at once, then 5 x 10 bytes 300 ms apart (1.5 s in all).
async fn trickles_body(mut s: TcpStream) {
    read_request_head(&mut s).await;
    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\n").await.is_err() {
        return;
    }
    for i in 0..5u8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(&[b'a' + i; 10]).await.is_err() {
            return;
        }
    }
    let _ = s.flush().await;
}

fn assert_json_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{status} content type");
    assert_eq!(r.json()["error"], code, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_body_cuts_the_client_response_and_the_gateway_stays_healthy() {
    let cut = raw_upstream(dies_mid_body).await;
    let ok = Upstream::start(Mode::Ok).await;
    let routes = [
        route("/cut", &format!("http://{cut}"), "public = true"),
        route("/ok", &ok.url(), "public = true"),
        ECHO_ROUTES.to_owned(),
    ]
    .concat();
    let gw = Gw::start("upstream_timeout_secs = 5", &routes).await;

    // HTTP/1.1: the head was already sent, so the only honest signal left is a cut body.
    let mut c = gw.tls(false).await;
    let t = Instant::now();
    let resp = c.send_streaming(req("GET", "/cut/x", &[], empty())).await;
    assert_eq!(resp.status(), 200, "the head came before the upstream died");
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("a cut body must end with an error, not hang");
    eprintln!("mid-body death (h1): client saw {:?} after {:?}", body.as_ref().map(|_| "a complete body"), t.elapsed());
    match body {
        Err(_) => {}
        Ok(b) => panic!("a truncated upstream body reached the client as complete ({} bytes)", b.to_bytes().len()),
    }

    // h2: the stream is reset, the connection itself stays usable.
    let h2 = gw.tls(true).await;
    let mut same = h2.clone_h2();
    let mut h2 = h2;
    let resp = h2.send_streaming(req("GET", "/cut/h2", &[], empty())).await;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.expect("no hang");
    assert!(body.is_err(), "h2: a truncated upstream body reached the client as complete");
    let r = same.send(req("GET", "/ok/after", &[], empty())).await;
    assert_eq!(r.status, 200, "h2 connection after a reset stream: {}", r.text());

    // Another route, new connections: all fine.
    let r = gw.get("/ok/next", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "upstream-ok"));
    assert_serving(&gw, "after the upstream died mid-body").await;
    assert_eq!(gw.admin_get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_answering_is_502_json() {
    let late = raw_upstream(resets_after_request).await;
    let early = raw_upstream(resets_at_once).await;
    let routes = [
        route("/late", &format!("http://{late}"), "public = true"),
        route("/early", &format!("http://{early}"), "public = true"),
        ECHO_ROUTES.to_owned(),
    ]
    .concat();
    let gw = Gw::start("upstream_timeout_secs = 5", &routes).await;
    for path in ["/late/x", "/early/x", "/late/again"] {
        let t = Instant::now();
        let r = gw.get(path, &[]).await;
        eprintln!("reset upstream {path}: {} after {:?}", r.status, t.elapsed());
        assert_json_error(&r, 502, "bad_gateway");
        assert!(t.elapsed() < Duration::from_secs(3), "{path}: a reset took {:?} to report", t.elapsed());
    }
    // POST with a body too: still 502, and the client connection is still usable afterwards.
    let mut c = gw.tls(false).await;
    let r = c.send(req("POST", "/late/post", &[], full(vec![b'x'; 4096]))).await;
    assert_json_error(&r, 502, "bad_gateway");
    let r = c.send(req("GET", "/pub/same-connection", &[], empty())).await;
    assert_eq!(r.status, 200, "the client connection after a 502: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_accepts_the_tcp_connection_is_502_after_the_connect_timeout() {
    // A listener with a backlog of 0 that never accepts: once its queue holds one connection,
    // further SYNs are dropped and a connect hangs, as with a black-holed address.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).expect("listen");
    let addr = listener.local_addr().unwrap();
    let fillers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let s = tokio::time::timeout(Duration::from_secs(8), TcpStream::connect(addr)).await;
                tokio::time::sleep(Duration::from_secs(8)).await;
                drop(s);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let routes = [route("/hole", &format!("http://{addr}"), "public = true"), ECHO_ROUTES.to_owned()].concat();
    let gw = Gw::start("upstream_connect_timeout_secs = 1\nupstream_timeout_secs = 10", &routes).await;
    let t = Instant::now();
    let r = gw.get("/hole/x", &[]).await;
    let took = t.elapsed();
    eprintln!("connect timeout: {} after {took:?}", r.status);
    assert_json_error(&r, 502, "bad_gateway");
    assert!(took >= Duration::from_millis(800), "502 after {took:?}: the connect did not hang (test setup)");
    assert!(took < Duration::from_millis(3000), "502 after {took:?}: connect timeout of 1 s not applied");
    assert_serving(&gw, "after a connect timeout").await;
    for f in fillers {
        f.abort();
    }
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answering_slowly_within_the_timeout_is_200() {
    let slow = Upstream::start(Mode::Slow(Duration::from_millis(700))).await;
    let trickle = raw_upstream(trickles_body).await;
    let routes = [
        route("/slow", &slow.url(), "public = true\nupstream_timeout_secs = 2"),
        route("/trickle", &format!("http://{trickle}"), "public = true\nupstream_timeout_secs = 1"),
        ECHO_ROUTES.to_owned(),
    ]
    .concat();
    let gw = Gw::start("", &routes).await;

    let t = Instant::now();
    let r = gw.get("/slow/x", &[]).await;
    let took = t.elapsed();
    eprintln!("slow upstream (700 ms, timeout 2 s): {} after {took:?}", r.status);
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "slow-ok"));
    assert!(took >= Duration::from_millis(700), "{took:?}");

    // The timeout is for the response head: a body that streams in over 1.5 s under a 1 s
    // timeout arrives whole (cutting long downloads would break streaming).
    let t = Instant::now();
    let r = gw.get("/trickle/x", &[]).await;
    let took = t.elapsed();
    eprintln!("trickled body (1.5 s, timeout 1 s): {} {} bytes after {took:?}", r.status, r.body.len());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeee");
}
