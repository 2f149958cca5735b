//! Header attacks: spoofed forwarding and identity headers (also under `_` aliases), Host
//! oddities on HTTP/1.1 and h2, oversized and too many headers, an oversized token, and an
//! HTTP/2 rapid-reset flood. The gateway must stay healthy after each.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

fn all(seen: &Seen, name: &str) -> Vec<String> {
    seen.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_and_identity_headers_are_replaced_in_any_case() {
    let lab = Lab::start().await;
    let tok = token(&lab.k1, &claims("bob", "read"));
    let spoof = "X-FORWARDED-FOR: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n\
                 x-FORWARDED-host: evil.example\r\nFORWARDED: for=6.6.6.6;host=evil.example;proto=https\r\n\
                 X-AUTH-SUBJECT: root\r\nx-auth-client-id: evil\r\nX-Auth-SCOPE: admin\r\nx-TENANT: other\r\n";
    for (path, auth) in [("/pub", String::new()), ("/api/x", format!("Authorization: Bearer {tok}\r\n"))] {
        let r = raw(
            lab.gw.plain,
            &format!("GET {path} HTTP/1.1\r\nHost: gw.example\r\n{auth}{spoof}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body_text());
        let seen = if path == "/pub" { lab.public.last() } else { lab.api.last() };
        assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"], "{path}");
        assert_eq!(all(&seen, "x-forwarded-proto"), ["http"], "{path}");
        assert_eq!(all(&seen, "x-forwarded-host"), ["gw.example"], "{path}");
        assert!(all(&seen, "forwarded").is_empty(), "{path}");
        if path != "/pub" {
            // X-Tenant is an identity header of /api only (its claims_to_headers).
            assert!(all(&seen, "x-tenant").is_empty(), "{path}");
        }
        let (sub, cid, scope): (&[&str], &[&str], &[&str]) =
            if path == "/pub" { (&[], &[], &[]) } else { (&["bob"], &["forge-client"], &["read"]) };
        assert_eq!(all(&seen, "x-auth-subject"), sub, "{path}");
        assert_eq!(all(&seen, "x-auth-client-id"), cid, "{path}");
        assert_eq!(all(&seen, "x-auth-scope"), scope, "{path}");
    }
}

/// CGI, WSGI, PHP and many frameworks map `X_Auth_Subject` and `X-Auth-Subject` to the same
/// variable (HTTP_X_AUTH_SUBJECT). An underscore alias of an identity or hop-by-hop header must
/// therefore not reach the upstream, or a client on a public route sets its own identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_aliases_of_identity_and_framing_headers_are_not_forwarded() {
    let lab = Lab::start().await;
    let r = raw(
        lab.gw.plain,
        "GET /pub HTTP/1.1\r\nHost: gw\r\nX_Auth_Subject: root\r\nx_auth_scope: admin\r\nX_AUTH_CLIENT_ID: evil\r\n\
         X_Tenant: other\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let seen = lab.public.last();
    let leaked: Vec<String> = seen
        .headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.contains('_'))
        .filter(|k| {
            let n = k.replace('_', "-");
            n.starts_with("x-auth-") || n == "x-tenant" || n.starts_with("x-forwarded-") || n == "transfer-encoding"
        })
        .collect();
    assert!(leaked.is_empty(), "underscore aliases forwarded to the upstream: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_oddities_never_reach_the_upstream_as_host() {
    let lab = Lab::start().await;
    let up_host = lab.public.addr.to_string();
    let cases = [
        ("missing Host", "GET /pub HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned()),
        (
            "duplicate Host",
            "GET /pub HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n".into(),
        ),
        ("Host with port 99999", "GET /pub HTTP/1.1\r\nHost: evil.com:99999\r\nConnection: close\r\n\r\n".into()),
        ("Host with a space", "GET /pub HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".into()),
        ("Host with userinfo", "GET /pub HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n".into()),
        (
            "absolute-form target disagreeing with Host",
            "GET http://evil.example/pub HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n".into(),
        ),
        (
            "absolute-form target to /admin",
            "GET http://good.example/admin/x HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n".into(),
        ),
    ];
    let mut report = Vec::new();
    for (name, bytes) in cases {
        let before = lab.public.count();
        let out = raw_plain(lab.gw.plain, bytes.as_bytes()).await;
        let st = statuses(&out);
        let fwd = lab.public.seen().into_iter().skip(before).collect::<Vec<_>>();
        for s in &fwd {
            assert_eq!(all(s, "host"), std::slice::from_ref(&up_host), "{name}: Host sent upstream");
            assert!(all(s, "x-forwarded-host").len() <= 1, "{name}: several X-Forwarded-Host");
        }
        report.push(format!(
            "{name}: {st:?}, X-Forwarded-Host {:?}",
            fwd.iter().map(|s| all(s, "x-forwarded-host")).collect::<Vec<_>>()
        ));
    }
    assert_eq!(lab.admin.count(), 0);
    // h2: `:authority` and a disagreeing `Host`.
    let mut h2c = h2_client(&lab.gw).await.ready().await.expect("h2 ready");
    let r = http::Request::get("https://good.example/pub").header("host", "evil.example").body(()).unwrap();
    let before = lab.public.count();
    let outcome = match h2c.send_request(r, true) {
        Ok((fut, _)) => match tokio::time::timeout(Duration::from_secs(5), fut).await {
            Ok(Ok(resp)) => format!("{}", resp.status()),
            other => format!("stream refused: {other:?}"),
        },
        Err(e) => format!("refused by the client library: {e}"),
    };
    let fwd = lab.public.seen().into_iter().skip(before).collect::<Vec<_>>();
    for s in &fwd {
        assert_eq!(all(s, "host"), std::slice::from_ref(&up_host), "h2: Host sent upstream");
        assert!(all(s, "x-forwarded-host").len() <= 1);
    }
    report.push(format!(
        "h2 :authority good.example + Host evil.example: {outcome}, X-Forwarded-Host {:?}",
        fwd.iter().map(|s| all(s, "x-forwarded-host")).collect::<Vec<_>>()
    ));
    eprintln!("host oddities:\n  {}", report.join("\n  "));
    lab.healthy().await;
}

/// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
/// HTTP/1.1 request message that lacks a Host header field and to any request message that
/// contains more than one Host header field line or a Host header field with an invalid field
/// value."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_duplicate_or_invalid_host_is_400() {
    let lab = Lab::start().await;
    let mut wrong = Vec::new();
    for (name, head) in [
        ("missing Host", ""),
        ("duplicate Host", "Host: good.example\r\nHost: evil.example\r\n"),
        ("Host with a space", "Host: a b\r\n"),
        ("Host with port 99999", "Host: evil.com:99999\r\n"),
    ] {
        let out =
            raw_plain(lab.gw.plain, format!("GET /pub HTTP/1.1\r\n{head}Connection: close\r\n\r\n").as_bytes()).await;
        let st = statuses(&out);
        if st != [400] {
            wrong.push(format!("{name}: {st:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "Host violations not refused with 400 (upstream received {}): {wrong:?}",
        lab.public.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_headers_are_refused_and_the_gateway_stays_healthy() {
    let lab = Lab::start().await;
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    let many: String = (0..300).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let over_100: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let mut report = Vec::new();
    for (name, hdrs) in [("one 9000-byte header", big), ("300 headers", many), ("120 small headers", over_100)] {
        let req = format!("GET /pub HTTP/1.1\r\nHost: gw\r\n{hdrs}Connection: close\r\n\r\n");
        for tls in [false, true] {
            let t = Instant::now();
            let out = if tls {
                raw_tls(&lab.gw, req.as_bytes()).await
            } else {
                raw_plain(lab.gw.plain, req.as_bytes()).await
            };
            let st = statuses(&out);
            assert!(st.iter().all(|s| *s == 431 || *s == 400), "{name} (tls={tls}): {st:?}");
            assert!(t.elapsed() < Duration::from_secs(3), "{name}: slow refusal");
            report.push(format!("{name} tls={tls}: {st:?}"));
        }
    }
    // h2: a 20 KB header list.
    let mut h2c = h2_client(&lab.gw).await.ready().await.expect("h2 ready");
    let mut r = http::Request::get("https://localhost/pub");
    for i in 0..40 {
        r = r.header(format!("x-h{i}"), "b".repeat(500));
    }
    let outcome = match h2c.send_request(r.body(()).unwrap(), true) {
        Ok((fut, _)) => match tokio::time::timeout(Duration::from_secs(5), fut).await {
            Ok(Ok(resp)) => resp.status().as_u16().to_string(),
            other => format!("refused: {other:?}"),
        },
        Err(e) => format!("refused: {e}"),
    };
    assert!(!outcome.starts_with("200"), "h2 20 KB header list: {outcome}");
    report.push(format!("h2 20 KB header list: {outcome}"));
    eprintln!("header limits:\n  {}", report.join("\n  "));
    assert_eq!(lab.upstream_total(), 0);
    lab.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_flood_leaves_the_gateway_serving_others() {
    let lab = Lab::start().await;
    let t = Instant::now();
    let (mut sent, mut conns) = (0usize, 0usize);
    'outer: while sent < 5000 && conns < 200 && t.elapsed() < Duration::from_secs(20) {
        conns += 1;
        let mut h2c = h2_client(&lab.gw).await;
        while sent < 5000 {
            h2c = match tokio::time::timeout(Duration::from_secs(2), h2c.ready()).await {
                Ok(Ok(c)) => c,
                _ => continue 'outer,
            };
            let r = http::Request::get("https://localhost/api/rr").body(()).unwrap();
            match h2c.send_request(r, true) {
                Ok((_fut, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => continue 'outer,
            }
        }
    }
    eprintln!("rapid reset: {sent} HEADERS+RST_STREAM pairs over {conns} connections in {:?}", t.elapsed());
    assert!(sent >= 1000, "only {sent} streams could be opened");
    assert_eq!(lab.api.count(), 0);
    lab.healthy().await;
    let mut other = lab.gw.tls(true).await;
    let tok = token(&lab.k1, &claims("other", "read"));
    let r = other.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())).await;
    assert_eq!(r.status, 200, "another h2 client after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_token_is_refused_fast_and_the_gateway_stays_healthy() {
    let lab = Lab::start().await;
    let big = format!("{}{}", token(&lab.k1, &claims("m", "read")), "A".repeat(100 * 1024));
    let request =
        format!("GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {big}\r\nConnection: close\r\n\r\n");
    for over_tls in [false, true] {
        let t = Instant::now();
        let out = if over_tls {
            raw_tls(&lab.gw, request.as_bytes()).await
        } else {
            raw_plain(lab.gw.plain, request.as_bytes()).await
        };
        let st = statuses(&out);
        assert!(st.iter().all(|s| matches!(s, 400 | 401 | 431)), "tls={over_tls}: {st:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "tls={over_tls}: took {:?}", t.elapsed());
    }
    // Over h2 as well: refused (stream error or a 4xx), never forwarded.
    let mut h2c = h2_client(&lab.gw).await;
    let r = http::Request::get("https://localhost/api/x")
        .header("authorization", format!("Bearer {big}"))
        .body(())
        .unwrap();
    if let Ok(mut ready) = h2c.clone().ready().await {
        if let Ok((fut, _)) = ready.send_request(r, true) {
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(3), fut).await {
                assert!(matches!(resp.status().as_u16(), 400 | 401 | 431), "h2: {}", resp.status());
            }
        }
    }
    let _ = &mut h2c;
    assert_eq!(lab.upstream_total(), 0);
    lab.healthy().await;
}
