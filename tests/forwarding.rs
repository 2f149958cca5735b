//! Forwarding over the wire: header rewriting, path handling, upstream failures, streaming,
//! and the HTTPS listener's protocols.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Version;

fn bearer(tok: &str) -> String {
    format!("Bearer {tok}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let auth = bearer(&tok);
    let headers = [
        ("authorization", auth.as_str()),
        ("connection", "X-Hop, keep-alive"),
        ("x-hop", "1"),
        ("keep-alive", "5"),
        ("te", "trailers"),
        ("proxy-foo", "x"),
        ("proxy-authorization", "Basic eDp5"),
        ("x-end-to-end", "kept"),
    ];
    let r = gw.get("/api/h", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    for gone in ["x-hop", "keep-alive", "te", "proxy-foo", "proxy-authorization"] {
        assert!(seen.header(gone).is_none(), "{gone} reached the upstream: {:?}", seen.headers);
    }
    if let Some(c) = seen.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-hop"), "connection: {c}");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    // A Connection header cannot make the gateway drop the credentials it forwards.
    assert_eq!(seen.header("authorization"), Some(auth.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_returned() {
    let up = Upstream::start(Mode::HopHeaders).await;
    // Sanity: the upstream really sends them.
    let direct = raw(up.addr, "GET / HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n").await;
    assert_eq!(direct.header("x-resp-hop"), Some("1"));
    assert_eq!(direct.header("proxy-bar"), Some("2"));
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    for h2 in [false, true] {
        let mut c = gw.tls(h2).await;
        let r = c.send(req("GET", "/api/r", &[("authorization", &bearer(&tok))], empty())).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hop");
        for gone in ["x-resp-hop", "proxy-bar", "keep-alive"] {
            assert!(r.header(gone).is_none(), "h2={h2}: {gone} reached the client: {:?}", r.headers);
        }
        if let Some(c) = r.header("connection") {
            assert!(!c.to_ascii_lowercase().contains("x-resp-hop"), "connection: {c}");
        }
        assert_eq!(r.header("x-end-to-end"), Some("kept"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_spoofs_replaced_when_untrusted() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("trust_forwarded = false", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let spoof = [
        ("authorization", bearer(&tok)),
        ("x-forwarded-for", "6.6.6.6".into()),
        ("x-forwarded-proto", "gopher".into()),
        ("x-forwarded-host", "evil.example".into()),
        ("forwarded", "for=6.6.6.6;proto=http".into()),
    ];
    let spoof: Vec<(&str, &str)> = spoof.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(gw.get("/api/f", &spoof).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("localhost"));
    assert!(seen.header("forwarded").is_none(), "{:?}", seen.headers);
    // The upstream gets its own authority as Host, the client's one only as X-Forwarded-Host.
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));

    // The plain listener says http, and the header is set even when the client sent none.
    let mut c = gw.plain_conn().await;
    let r = c.send(req("GET", "/api/f", &[("authorization", &bearer(&tok)), ("host", "plain.test")], empty())).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("plain.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_appended_when_trusted() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("trust_forwarded = true", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let auth = bearer(&tok);
    let h = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "front.example"),
    ];
    assert_eq!(gw.get("/api/f", &h).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("front.example"));
    // Without client-sent values the gateway still sets its own.
    assert_eq!(gw.get_with("/api/f", &tok).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_token_false_and_strip_prefix() {
    let up = Upstream::start(Mode::Ok).await;
    let u = up.url();
    let routes = [
        route("/legacy", &u, "forward_token = false"),
        route("/strip", &u, "strip_prefix = true"),
        route("/based", &format!("{u}/base/"), ""),
        route("/api", &u, ""),
    ]
    .concat();
    let gw = Gw::start("", &routes).await;
    let tok = gw.mint("alice", "");

    assert_eq!(gw.get_with("/legacy/x", &tok).await.status, 200);
    let seen = up.last();
    assert!(seen.header("authorization").is_none(), "token forwarded: {:?}", seen.headers);
    assert_eq!(seen.header("x-auth-subject"), Some("alice"));

    assert_eq!(gw.get_with("/api/x", &tok).await.status, 200);
    assert_eq!(up.last().header("authorization"), Some(bearer(&tok).as_str()));

    assert_eq!(gw.get_with("/strip/x/y?q=1&r=2", &tok).await.status, 200);
    assert_eq!(up.last().uri, "/x/y?q=1&r=2");
    assert_eq!(gw.get_with("/strip", &tok).await.status, 200);
    assert_eq!(up.last().uri, "/");

    assert_eq!(gw.get_with("/based/z?k=v", &tok).await.status, 200);
    assert_eq!(up.last().uri, "/base/based/z?k=v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_match_on_segment_boundaries() {
    let api = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &api.url(), "")).await;
    let tok = gw.mint("alice", "");
    for p in ["/api", "/api/", "/api/x"] {
        assert_eq!(gw.get_with(p, &tok).await.status, 200, "{p}");
        assert_eq!(api.last().uri, p);
    }
    let before = api.count();
    for p in ["/apix", "/ap", "/", "/x/api"] {
        let r = gw.get_with(p, &tok).await;
        assert_eq!(r.status, 404, "{p}: {}", r.text());
        assert_eq!(r.json()["error"], "not_found");
    }
    assert_eq!(api.count(), before, "an unmatched path reached the /api upstream");

    let root = Upstream::start(Mode::Ok).await;
    let routes = [route("/api", &api.url(), ""), route("/", &root.url(), "")].concat();
    let gw = Gw::start("", &routes).await;
    let tok = gw.mint("alice", "");
    assert_eq!(gw.get_with("/apix/1", &tok).await.status, 200);
    assert_eq!(root.last().uri, "/apix/1");
    assert_eq!(api.count(), before);
    assert_eq!(gw.get_with("/api/1", &tok).await.status, 200);
    assert_eq!(api.last().uri, "/api/1");
}

/// Paths whose meaning could differ between the gateway and the upstream are refused before
/// routing and authorization, and nothing reaches any upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_400_and_never_forwarded() {
    let up = Upstream::start(Mode::Ok).await;
    let routes = [route("/api", &up.url(), "scopes = [\"read\"]"), route("/", &up.url(), "public = true")].concat();
    let gw = Gw::start("", &routes).await;
    let tok = gw.mint("alice", "read");
    let bad = [
        "/a/../api/x",
        "/public/../api/x",
        "/api/./x",
        "/..",
        "/api/..",
        "//api/x",
        "/api//x",
        "/api%2fx",
        "/api%2Fsecret",
        "/public/..%2fapi",
        "/%2e%2e/api",
        "/%2E/api",
        "/api/%2e/x",
        "/api/.%2e/x",
        "/api%5cx",
        "/api%5C..%5Cx",
        "/api/x%00",
        "/api%00/x",
    ];
    for path in bad {
        let r = raw(
            gw.plain,
            &format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.body_text());
        assert_eq!(r.json()["error"], "invalid_request", "{path}");
        assert!(!r.body_text().contains(&tok));
    }
    assert_eq!(
        up.count(),
        0,
        "refused paths reached the upstream: {:?}",
        up.seen().iter().map(|s| &s.uri).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_unreserved_characters_are_matched_decoded() {
    let up = Upstream::start(Mode::Ok).await;
    let routes = [route("/api", &up.url(), "scopes = [\"read\"]"), route("/", &up.url(), "public = true")].concat();
    let gw = Gw::start("", &routes).await;
    // Without a token, /%61pi must hit the protected /api route, not the public root.
    let r = raw(gw.plain, "GET /%61pi/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert_eq!(up.count(), 0);
    let tok = gw.mint("alice", "read");
    let r = raw(
        gw.plain,
        &format!("GET /%61pi/x?y=%61 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let seen = up.last();
    assert_eq!(seen.uri, "/api/x?y=%61");
    assert_eq!(seen.header("x-auth-subject"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_json() {
    let dead = closed_port().await;
    let gw = Gw::start("", &route("/down", &format!("http://{dead}"), "")).await;
    let tok = gw.mint("alice", "");
    let r = gw.get_with("/down/x", &tok).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "bad_gateway");
    assert!(!r.mentions(&tok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_json_per_route_and_server_wide() {
    let up = Upstream::start(Mode::Slow(Duration::from_millis(1500))).await;
    let routes = [route("/slow", &up.url(), ""), route("/patient", &up.url(), "upstream_timeout_secs = 5")].concat();
    let gw = Gw::start("upstream_timeout_secs = 1", &routes).await;
    let tok = gw.mint("alice", "");
    let t = Instant::now();
    let r = gw.get_with("/slow/x", &tok).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(t.elapsed() < Duration::from_millis(1450), "504 took {:?}", t.elapsed());
    let r = gw.get_with("/patient/x", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slow-ok");

    let gw = Gw::start("", &route("/quick", &up.url(), "upstream_timeout_secs = 1")).await;
    let tok = gw.mint("alice", "");
    let r = gw.get_with("/quick/x", &tok).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streamed_request_body_arrives_intact() {
    const SIZE: usize = 20 * 1024 * 1024 + 123;
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let mut c = gw.tls(false).await;
    let r = c.send(req("POST", "/api/upload", &[("authorization", &bearer(&tok))], streamed(SIZE))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body_len, SIZE as u64);
    assert_eq!(seen.body_sha256, pattern_sha256(SIZE), "body corrupted in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upstream_response_streams_back_intact() {
    const SIZE: usize = 16 * 1024 * 1024 + 7;
    let up = Upstream::start(Mode::Big(SIZE)).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let want = pattern_sha256(SIZE);
    for h2 in [false, true] {
        let mut c = gw.tls(h2).await;
        let r = c.send(req("GET", "/api/big", &[("authorization", &bearer(&tok))], empty())).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), SIZE, "h2={h2}");
        assert_eq!(sha256(&r.body), want, "h2={h2}: body corrupted in transit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_speaks_http1_and_h2() {
    const SIZE: usize = 3 * 1024 * 1024;
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    for (h2, alpn, version) in [(false, &b"http/1.1"[..], Version::HTTP_11), (true, &b"h2"[..], Version::HTTP_2)] {
        let mut c = gw.tls(h2).await;
        assert_eq!(c.alpn.as_deref(), Some(alpn));
        assert_eq!(c.peer_cert.as_ref(), Some(&gw.cert));
        // Two requests on the same connection.
        for i in 0..2 {
            let r = c.send(req("GET", &format!("/api/v{i}"), &[("authorization", &bearer(&tok))], empty())).await;
            assert_eq!(r.status, 200, "h2={h2}");
            assert_eq!(r.version, version);
            assert_eq!(r.text(), "upstream-ok");
            let seen = up.last();
            assert_eq!(seen.uri, format!("/api/v{i}"));
            assert_eq!(seen.header("x-auth-subject"), Some("alice"));
            assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        }
        let r = c.send(req("PUT", "/api/put", &[("authorization", &bearer(&tok))], streamed(SIZE))).await;
        assert_eq!(r.status, 200, "h2={h2}");
        let seen = up.last();
        assert_eq!(seen.method, "PUT");
        assert_eq!((seen.body_len, seen.body_sha256), (SIZE as u64, pattern_sha256(SIZE)), "h2={h2}");
        // Refusals work the same on both protocols.
        let r = c.send(req("GET", "/api/x", &[], empty())).await;
        assert_eq!(r.status, 401, "h2={h2}");
    }
}

/// The plain listener tells h2 (prior knowledge) from HTTP/1.1 by peeking at the preface; the TLS
/// listener goes by ALPN, and a client offering none gets HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_speaks_h2_with_prior_knowledge_and_tls_without_alpn_is_http1() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    let mut h2 = Conn::plain_h2(gw.plain).await;
    let mut h1 = Conn::plain(gw.plain).await;
    for (c, version) in [(&mut h2, Version::HTTP_2), (&mut h1, Version::HTTP_11)] {
        for i in 0..2 {
            let r = c.send(req("GET", &format!("/api/p{i}"), &[("authorization", &bearer(&tok))], empty())).await;
            assert_eq!((r.status, r.version), (http::StatusCode::OK, version));
            assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
        }
        assert_eq!(c.send(req("GET", "/api/x", &[], empty())).await.status, 401, "{version:?}");
    }
    let stream = common::client::tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let r = s
        .send_request(
            http::Request::get("/api/n")
                .header("host", "localhost")
                .header("authorization", bearer(&tok))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2_streams_keep_their_own_identity() {
    let up = Upstream::start(Mode::Slow(Duration::from_millis(50))).await;
    let gw = Gw::start("", &route("/api", &up.url(), "")).await;
    let c = gw.tls(true).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let tok = gw.mint(&format!("user-{i}"), &format!("s{i}"));
        let mut c = c.clone_h2();
        tasks.push(tokio::spawn(async move {
            c.send(req("GET", &format!("/api/{i}"), &[("authorization", &bearer(&tok))], empty())).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 40);
    for s in seen {
        let i = s.uri.trim_start_matches("/api/");
        assert_eq!(s.header("x-auth-subject"), Some(format!("user-{i}").as_str()), "{}", s.uri);
        assert_eq!(s.header("x-auth-scope"), Some(format!("s{i}").as_str()), "{}", s.uri);
    }
}

/// `runtime = "per-core"`: each worker has its own runtime and its own SO_REUSEPORT listeners on
/// the same ports; the kernel spreads connections over them, so a core that did not accept would
/// leave about half of these connections unanswered. Shutdown stops every core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_runtimes_share_the_listeners_and_stop_on_shutdown() {
    let up = Upstream::start(Mode::Ok).await;
    let mut gw = Gw::start("workers = 3\nruntime = \"per-core\"", &route("/api", &up.url(), "")).await;
    let tok = gw.mint("alice", "");
    for i in 0..24 {
        let mut c = if i % 2 == 0 { gw.plain_conn().await } else { gw.tls(i % 4 == 1).await };
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.send(req("GET", "/api/x", &[("authorization", &bearer(&tok))], empty())),
        )
        .await
        .expect("every connection is answered, whichever core accepted it");
        assert_eq!(r.status, 200);
    }
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown()).await.expect("all cores stop on shutdown");
}
