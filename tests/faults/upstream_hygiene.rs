//! The other side of the proxy (issue 15): upstream responses framed two ways, over-size upstream
//! heads, upstreams and clients that stall mid-body, clients that never read, h2 clients that stop
//! mid-HEADERS, and the h2 defences showing in `tokengate_limit_hits_total`. Raw-socket upstreams;
//! raw h2 clients (the `h2` crate, or hand-made frames where it would refuse to misbehave).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::*;

/// Short timeouts: every cut in this file is expected after 1-1.5 s.
const SHORT: &str = "upstream_timeout_secs = 5\nupstream_body_idle_timeout_secs = 1\n\
                     request_body_idle_timeout_secs = 1\nsend_idle_timeout_secs = 1\nheader_read_timeout_secs = 1";

/// 63 bytes, sent chunked under a lying `Content-Length: 4`.
const BODY63: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!";

async fn length_and_chunked(mut s: TcpStream) {
    read_request_head(&mut s).await;
    let mut r =
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    r.extend_from_slice(format!("{:x}\r\n", BODY63.len()).as_bytes());
    r.extend_from_slice(BODY63);
    r.extend_from_slice(b"\r\n0\r\n\r\n");
    let _ = s.write_all(&r).await;
    let _ = read_until_closed(&mut s, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_with_content_length_and_chunked_is_forwarded_whole_without_the_length() {
    let up = raw_upstream(length_and_chunked).await;
    let routes = [route("/both", &format!("http://{up}"), "public = true"), ECHO_ROUTES.to_owned()].concat();
    let gw = Gw::start(SHORT, &routes).await;
    for h2 in [false, true] {
        let r = gw.tls(h2).await.send(req("GET", "/both/x", &[], empty())).await;
        eprintln!(
            "CL+TE (h2 {h2}): {} content-length {:?}, {} bytes",
            r.status,
            r.header("content-length"),
            r.body.len()
        );
        assert_eq!(r.status, 200);
        assert_ne!(r.header("content-length"), Some("4"), "h2 {h2}: the upstream's Content-Length was passed on");
        assert_eq!(&r.body[..], BODY63, "h2 {h2}: the body was cut to the stale length");
    }
}

/// A 200 whose head carries `extra` after the status line.
fn head_with(extra: String) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let extra = Arc::new(extra);
    move |mut s: TcpStream| {
        let extra = extra.clone();
        Box::pin(async move {
            read_request_head(&mut s).await;
            let r = format!("HTTP/1.1 200 OK\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = s.write_all(r.as_bytes()).await;
            let _ = read_until_closed(&mut s, Duration::from_secs(2)).await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_head_over_the_limits_or_over_the_clients_own_is_502_and_counted() {
    let huge = raw_upstream(head_with(format!("X-Huge: {}\r\n", "h".repeat(200_000)))).await;
    let many = raw_upstream(head_with((0..150).map(|i| format!("X-H{i}: v\r\n")).collect())).await;
    let mid = raw_upstream(head_with(format!("X-Mid: {}\r\n", "m".repeat(30_000)))).await;
    let routes = [
        route("/huge", &format!("http://{huge}"), "public = true"),
        route("/many", &format!("http://{many}"), "public = true"),
        route("/mid", &format!("http://{mid}"), "public = true"),
        ECHO_ROUTES.to_owned(),
    ]
    .concat();
    let gw = Gw::start(SHORT, &routes).await;
    for path in ["/huge/x", "/many/x"] {
        let r = gw.get(path, &[]).await;
        eprintln!(
            "{path}: {} {} header bytes",
            r.status,
            r.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>()
        );
        assert_eq!(r.status, 502, "{path}: an over-limit upstream head was passed on");
        assert_eq!(r.json()["error"], "bad_gateway");
    }
    assert_eq!(limit_hits(&gw, "upstream_max_header_bytes").await, 2);
    // Under our 64 KiB but over what this client advertised: 502 on that stream, not a broken connection.
    let r = gw.get("/mid/x", &[]).await;
    assert_eq!(r.status, 200, "HTTP/1.1 and no advertised limit: passed on");

    let tcp = TcpStream::connect(gw.plain).await.unwrap();
    let (client, conn) =
        h2::client::Builder::new().max_header_list_size(16 * 1024).handshake::<_, Bytes>(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    for (path, want) in [("/mid/x", 502), ("/pub/after", 200)] {
        let (resp, _) =
            client.send_request(http::Request::get(format!("http://x{path}")).body(()).unwrap(), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("timely")
            .expect("the h2 connection survives");
        let status = resp.status();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while let Some(Ok(d)) = body.data().await {
            let _ = body.flow_control().release_capacity(d.len());
            text.extend_from_slice(&d);
        }
        eprintln!("h2 client advertising 16 KiB, {path}: {status} {}", String::from_utf8_lossy(&text));
        assert_eq!(status, want, "{path}");
        client = client.ready().await.unwrap();
    }
    assert_eq!(limit_hits(&gw, "client_max_header_list_size").await, 1);
}

/// Head promising 100000 bytes, 10 of them, then silence with the socket open.
async fn stalls_mid_body(mut s: TcpStream) {
    read_request_head(&mut s).await;
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789").await;
    tokio::time::sleep(Duration::from_secs(20)).await;
}

/// Reads the request head, then everything until the gateway closes; answers only after that.
async fn reads_upload(mut s: TcpStream) {
    read_request_head(&mut s).await;
    let _ = read_until_closed(&mut s, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_or_client_stalling_mid_body_is_cut_at_the_body_idle_timeout() {
    let stall = raw_upstream(stalls_mid_body).await;
    let sink = raw_upstream(reads_upload).await;
    let routes = [
        route("/stall", &format!("http://{stall}"), "public = true"),
        route("/sink", &format!("http://{sink}"), "public = true"),
        ECHO_ROUTES.to_owned(),
    ]
    .concat();
    let gw = Gw::start(SHORT, &routes).await;
    for h2 in [false, true] {
        let t = Instant::now();
        let resp = gw.tls(h2).await.send_streaming(req("GET", "/stall/x", &[], empty())).await;
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("h2 {h2}: a stalled upstream held the client for 5 s"));
        eprintln!("stalled upstream (h2 {h2}): cut after {:?}: {:?}", t.elapsed(), body.as_ref().err());
        assert!(body.is_err(), "h2 {h2}: a cut body must not look complete");
    }
    assert_eq!(limit_hits(&gw, "upstream_body_idle_timeout").await, 2);

    // An upload that stops after 10 of 1000 bytes: 408 about a second later.
    let mut s = TcpStream::connect(gw.plain).await.unwrap();
    let t = Instant::now();
    s.write_all(b"POST /sink/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789").await.unwrap();
    let end = read_until_closed(&mut s, Duration::from_secs(5)).await;
    eprintln!("stalled upload: {:?} after {:?}", end.text().lines().next(), t.elapsed());
    assert!(end.text().starts_with("HTTP/1.1 408"), "stalled upload: {}", end.text());
    assert_eq!(limit_hits(&gw, "request_body_idle_timeout").await, 1);
}

/// Streams a chunked body as fast as the gateway takes it; counts connections that ended.
fn endless(
    released: Arc<AtomicUsize>,
) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    move |mut s: TcpStream| {
        let released = released.clone();
        Box::pin(async move {
            read_request_head(&mut s).await;
            let chunk = [format!("{:x}\r\n", 16384).into_bytes(), vec![b'z'; 16384], b"\r\n".to_vec()].concat();
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            loop {
                out.extend_from_slice(&chunk);
                if tokio::time::timeout(Duration::from_secs(30), s.write_all(&out)).await.map_or(true, |r| r.is_err()) {
                    break;
                }
                out.clear();
            }
            released.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_closed_and_its_upstream_released() {
    let released = Arc::new(AtomicUsize::new(0));
    let up = raw_upstream(endless(released.clone())).await;
    let routes = [route("/stream", &format!("http://{up}"), "public = true"), ECHO_ROUTES.to_owned()].concat();
    let gw = Gw::start(SHORT, &routes).await;

    // h2 with a zero window: the gateway may send the head and not one byte of body.
    let tcp = TcpStream::connect(gw.plain).await.unwrap();
    let t = Instant::now();
    let (client, conn) = h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(http::Request::get("http://x/stream/h2").body(()).unwrap(), true).unwrap();
    // Kept, unread: dropping it would reset the stream (CANCEL), which is not what is tested.
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    eprintln!(
        "zero-window h2 client: connection ended after {:?} ({} send_idle_timeout hits)",
        t.elapsed(),
        limit_hits(&gw, "send_idle_timeout").await
    );
    assert!(ended.is_ok(), "a client that never opens its window held the connection for 5 s");
    eventually(5, "the upstream of the zero-window client released", || async { released.load(Ordering::SeqCst) >= 1 })
        .await;

    // HTTP/1.1 that never reads: the TCP buffers fill, then the same.
    let mut s = TcpStream::connect(gw.plain).await.unwrap();
    s.write_all(b"GET /stream/h1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let t = Instant::now();
    eventually(8, "the upstream of the non-reading HTTP/1.1 client released", || async {
        released.load(Ordering::SeqCst) >= 2
    })
    .await;
    eprintln!("non-reading HTTP/1.1 client: upstream released after {:?}", t.elapsed());
    assert_eq!(limit_hits(&gw, "send_idle_timeout").await, 2);
    drop(s);
    assert_serving(&gw, "after clients that never read").await;
}

// ---- hand-made h2 frames, for clients the h2 crate will not imitate ----

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    [&[len[1], len[2], len[3], kind, flags][..], &stream.to_be_bytes(), payload].concat()
}

/// HPACK integer with an `n`-bit prefix under `first` (RFC 7541 section 5.1).
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        return out.push(first | v as u8);
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal field without indexing: by static-table name index, or with a new name.
fn literal(out: &mut Vec<u8>, name: Result<usize, &str>, value: &str) {
    match name {
        Ok(index) => hpack_int(0x00, 4, index, out),
        Err(name) => {
            out.push(0);
            hpack_int(0, 7, name.len(), out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

/// `POST http://x/pub/<path>`, plus `extra` fields.
fn post_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut b, Ok(4), path);
    literal(&mut b, Ok(1), "x");
    for (k, v) in extra {
        literal(&mut b, Err(k), v);
    }
    b
}

/// A plain connection that has sent the preface and SETTINGS, read the server's, and acked them.
async fn raw_h2(gw: &Gw) -> TcpStream {
    let mut s = TcpStream::connect(gw.plain).await.unwrap();
    s.write_all(&[&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &frame(0x4, 0, 0, &[])].concat()).await.unwrap();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_stops_mid_headers_is_closed_at_the_header_read_timeout() {
    let gw = Gw::start(SHORT, ECHO_ROUTES).await;
    let before = limit_hits(&gw, "header_read_timeout").await;
    let mut s = raw_h2(&gw).await;
    let block = post_block("/pub/x", &[]);
    // HEADERS with half its block and no END_HEADERS; the CONTINUATION never comes.
    s.write_all(&frame(0x1, 0, 1, &block[..block.len() / 2])).await.unwrap();
    let t = Instant::now();
    let end = read_until_closed(&mut s, Duration::from_secs(6)).await;
    eprintln!("h2 stopped mid-HEADERS: closed after {:?}", end.closed_after);
    let took = end.closed_after.expect("an h2 client stopped mid-HEADERS was still connected after 6 s");
    assert!(took <= Duration::from_millis(2500) && t.elapsed() >= Duration::from_millis(500), "closed after {took:?}");
    eventually(3, "the cut counted as header_read_timeout", || async {
        limit_hits(&gw, "header_read_timeout").await > before
    })
    .await;
    assert_serving(&gw, "after an h2 client stopped mid-HEADERS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_defences_are_counted_in_limit_hits() {
    let gw = Gw::start(&format!("{SHORT}\nmax_h2_streams = 2\nmax_header_bytes = 4096"), ECHO_ROUTES).await;

    // Stream cap: four open uploads on a connection allowing two; two are refused.
    let mut s = raw_h2(&gw).await;
    for id in [1u32, 3, 5, 7] {
        s.write_all(&frame(0x1, 0x4, id, &post_block("/pub/open", &[]))).await.unwrap();
    }
    eventually(5, "refused streams counted as max_h2_streams", || async {
        limit_hits(&gw, "max_h2_streams").await >= 2
    })
    .await;

    drop(s);

    // Header list cap: 431 on the stream, counted as max_header_bytes.
    let mut s = raw_h2(&gw).await;
    let big = "b".repeat(6000);
    s.write_all(&frame(0x1, 0x5, 9, &post_block("/pub/big", &[("x-big", &big)]))).await.unwrap();
    eventually(5, "the 431 counted as max_header_bytes", || async { limit_hits(&gw, "max_header_bytes").await >= 1 })
        .await;
    drop(s);

    // CONTINUATION flood: GOAWAY ENHANCE_YOUR_CALM.
    let mut s = raw_h2(&gw).await;
    let block = post_block("/pub/flood", &[]);
    let mut flood = frame(0x1, 0, 11, &block[..2]);
    for _ in 0..200 {
        flood.extend(frame(0x9, 0, 11, &[]));
    }
    let _ = s.write_all(&flood).await;
    let _ = read_until_closed(&mut s, Duration::from_secs(3)).await;
    eventually(5, "the CONTINUATION flood counted as h2_flood", || async { limit_hits(&gw, "h2_flood").await >= 1 })
        .await;

    // A frame over the advertised size: GOAWAY FRAME_SIZE_ERROR.
    let mut s = raw_h2(&gw).await;
    let _ = s.write_all(&frame(0x0, 0, 1, &vec![0u8; 20_000])).await;
    let _ = read_until_closed(&mut s, Duration::from_secs(3)).await;
    eventually(5, "the big frame counted as h2_frame_size", || async { limit_hits(&gw, "h2_frame_size").await >= 1 })
        .await;
    assert_serving(&gw, "after the h2 defences fired").await;
}
