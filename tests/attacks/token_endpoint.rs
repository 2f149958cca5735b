//! Token endpoint abuse: credential stuffing and lockout with byte-identical answers, huge and
//! malformed bodies, broken Basic headers, duplicate parameters, assertion replay, and tokens
//! from the endpoint that are not access tokens (ID token, refresh token) or were revoked, and a
//! token whose signing key was removed from `keys_dir`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

async fn post(conn: &mut Conn, path: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> Resp {
    conn.send(req("POST", path, headers, full(body))).await
}

fn error_of(r: &Resp) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_stuffing_gets_identical_answers_and_locks_the_real_user() {
    let lab = Lab::start().await;
    let mut conn = lab.gw.tls(false).await;
    let auth = basic_header("app", SECRET);
    let h = [FORM_CT, ("authorization", auth.as_str())];
    let mut answers = Vec::new();
    for i in 0..200 {
        let user = format!("user-{i}-{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let r = post(&mut conn, "/oauth2/token", &h, format!("grant_type=password&username={user}&password=guess{i}"))
            .await;
        answers.push((r.status, r.body.clone()));
    }
    // The real user: wrong passwords until locked (max_failures = 3), then the right one.
    for i in 0..4 {
        let r =
            post(&mut conn, "/oauth2/token", &h, format!("grant_type=password&username=alice&password=wrong{i}")).await;
        answers.push((r.status, r.body.clone()));
    }
    let locked =
        post(&mut conn, "/oauth2/token", &h, format!("grant_type=password&username=alice&password={ALICE_PW}")).await;
    assert_eq!(error_of(&locked), "invalid_grant", "the locked account still logs in: {}", locked.text());
    answers.push((locked.status, locked.body.clone()));
    let first = answers[0].clone();
    assert_eq!(first.0, 400);
    assert!(String::from_utf8_lossy(&first.1).contains("invalid_grant"));
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &first, "answer {i} differs from the first: {:?}", String::from_utf8_lossy(&a.1));
    }
    assert_eq!(lab.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_malformed_bodies_are_refused_cleanly() {
    let lab = Lab::start().await;
    let auth = basic_header("svc", SECRET);
    // 1 MB with a Content-Length, and 1 MB chunked: 413 (or a close), never a 2xx/5xx.
    let body = format!("grant_type=client_credentials&x={}", "a".repeat(1 << 20));
    for chunked in [false, true] {
        let framing =
            if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {}", body.len()) };
        let payload = if chunked { format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()) } else { body.clone() };
        let head = format!("POST /oauth2/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {auth}\r\n{framing}\r\nConnection: close\r\n\r\n");
        let st = statuses(&raw_tls(&lab.gw, [head.as_bytes(), payload.as_bytes()].concat().as_slice()).await);
        assert!(st.is_empty() || st == [413], "1 MB body (chunked={chunked}): {st:?}");
        assert!(!st.is_empty() || chunked, "1 MB with Content-Length: no answer at all");
    }
    let mut conn = lab.gw.tls(false).await;
    let h = [FORM_CT, ("authorization", auth.as_str())];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid percent-encoding", b"grant_type=client_credentials&scope=%zz%".to_vec()),
        ("percent-encoded invalid UTF-8", b"grant_type=client_credentials&scope=%ff%fe".to_vec()),
        ("raw binary", (0u8..=255).rev().collect()),
        ("NUL bytes", b"grant_type=client_credentials\0&scope=read\0".to_vec()),
        ("encoded grant_type", b"grant_type=client%5Fcredentials%00".to_vec()),
        ("only separators", b"&&&===&=&".to_vec()),
        ("huge key count", "a=1&".repeat(3000).into_bytes()),
    ];
    for (name, b) in bodies {
        let r = post(&mut conn, "/oauth2/token", &h, b).await;
        let s = r.status.as_u16();
        assert!((400..500).contains(&s) && !error_of(&r).is_empty(), "{name}: {s} {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
    }
    let ok = post(&mut conn, "/oauth2/token", &h, "grant_type=client_credentials").await;
    assert_eq!(ok.status, 200, "the same connection still serves: {}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_basic_headers_and_duplicate_parameters() {
    let lab = Lab::start().await;
    let mut conn = lab.gw.tls(false).await;
    let cc = "grant_type=client_credentials";
    let basics = [
        "Basic !!!not-base64!!!".to_owned(),
        format!("Basic {}", STANDARD.encode("svc")),
        format!("Basic {}", STANDARD.encode(format!("svc%3A{SECRET}"))),
        format!("Basic {}", STANDARD.encode(format!("svc%3A:{SECRET}"))),
        format!("Basic {}", STANDARD.encode(format!("svc:{SECRET}%3A"))),
        format!("Basic {}", STANDARD.encode(format!(":{SECRET}"))),
        format!("Basic {}", STANDARD.encode([b's', b'v', b'c', b':', 0xff, 0xfe])),
        format!("Basic {}", STANDARD.encode(format!("svc:{SECRET}")).trim_end_matches('=').to_owned() + "==="),
        format!("Basic {}", STANDARD.encode(format!("svc:{SECRET}:extra"))),
        format!("Basic {}", STANDARD.encode(format!("svc\0:{SECRET}"))),
        "Basic ".into(),
    ];
    for b in &basics {
        let r = post(&mut conn, "/oauth2/token", &[FORM_CT, ("authorization", b)], cc).await;
        let e = error_of(&r);
        assert!(
            (r.status == 401 && e == "invalid_client") || (r.status == 400 && e == "invalid_request"),
            "{b:?}: {} {}",
            r.status,
            r.text()
        );
        // Every 401 names Basic (RFC 9110 15.5.2), a bare "Basic" too (hyper trims the
        // trailing space, so it is not even recognised as a Basic attempt).
        if r.status == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"tokengate\""), "{b:?}");
        }
    }
    let app = basic_header("app", SECRET);
    let dups = [
        format!("grant_type=password&username=alice&username=bob&password={ALICE_PW}"),
        format!("grant_type=password&username=alice&password=x&password={ALICE_PW}"),
        format!("grant_type=password&username=alice&password={ALICE_PW}&scope=read&scope=admin"),
        format!("grant_type=password&grant_type=client_credentials&username=alice&password={ALICE_PW}"),
        format!("grant_type=password&username=alice&password={ALICE_PW}&Username=root&username=alice"),
    ];
    for d in &dups {
        let r = post(&mut conn, "/oauth2/token", &[FORM_CT, ("authorization", &app)], d.clone()).await;
        assert_eq!((r.status.as_u16(), error_of(&r)), (400, "invalid_request".into()), "{d}: {}", r.text());
    }
    let r = post(
        &mut conn,
        "/oauth2/token",
        &[FORM_CT],
        format!("{cc}&client_id=svc&client_id=svc&client_secret={SECRET}"),
    )
    .await;
    assert_eq!(r.status, 400, "duplicate client_id: {}", r.text());
    assert_eq!(lab.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_client_assertion_is_invalid_client() {
    let lab = Lab::start().await;
    let n = now();
    let c =
        json!({"iss": "jwtc", "sub": "jwtc", "aud": TOKEN_URL, "iat": n, "exp": n + 120, "jti": format!("replay-{n}")});
    let a = sign_with(&lab.assertion_key, &json!({"alg": "ES256", "typ": "JWT"}), &c);
    let body = format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}"
    );
    let mut conn = lab.gw.tls(false).await;
    let first = post(&mut conn, "/oauth2/token", &[FORM_CT], body.clone()).await;
    assert_eq!(first.status, 200, "first use: {}", first.text());
    let again = post(&mut conn, "/oauth2/token", &[FORM_CT], body.clone()).await;
    assert_eq!((again.status.as_u16(), error_of(&again)), (400, "invalid_client".into()), "replay: {}", again.text());
    let mut conn2 = lab.gw.tls(true).await;
    let h2_again = post(&mut conn2, "/oauth2/token", &[FORM_CT], body).await;
    assert_eq!(h2_again.status, 400, "replay over h2 on another connection: {}", h2_again.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_refresh_tokens_and_revoked_tokens_are_not_bearer_tokens() {
    let lab = Lab::start().await;
    let mut conn = lab.gw.tls(false).await;
    let app = basic_header("app", SECRET);
    let r = post(
        &mut conn,
        "/oauth2/token",
        &[FORM_CT, ("authorization", &app)],
        format!("grant_type=password&username=alice&password={ALICE_PW}&scope=read%20openid%20admin"),
    )
    .await;
    assert_eq!(r.status, 200, "password grant: {}", r.text());
    let v = r.json();
    let (at, id, rt) =
        (v["access_token"].as_str().unwrap(), v["id_token"].as_str().unwrap(), v["refresh_token"].as_str().unwrap());
    assert_eq!(lab.status_of(&mut conn, at).await, 200, "control: the access token");
    lab.assert_refused(&mut conn, "ID token as bearer", id).await;
    lab.assert_refused(&mut conn, "refresh token as bearer", rt).await;
    let r = conn.send(req("GET", "/admin/x", &[("authorization", &format!("Bearer {id}"))], empty())).await;
    assert_eq!(r.status, 401, "ID token on /admin");
    // Revocation by jti through /oauth2/revoke (client credentials token of svc).
    let svc = basic_header("svc", SECRET);
    let r =
        post(&mut conn, "/oauth2/token", &[FORM_CT, ("authorization", &svc)], "grant_type=client_credentials").await;
    let cc = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(lab.status_of(&mut conn, &cc).await, 200, "before revocation (now cached)");
    let r = post(&mut conn, "/oauth2/revoke", &[FORM_CT, ("authorization", &svc)], format!("token={cc}")).await;
    assert_eq!(r.status, 200, "revoke: {}", r.text());
    lab.assert_refused(&mut conn, "revoked by jti", &cc).await;
    let mut other = lab.gw.tls(true).await;
    let r = other.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {cc}"))], empty())).await;
    assert_eq!(r.status, 401, "revoked token over h2");
    // Another client cannot revoke svc's token (200 per RFC 7009, but nothing is revoked).
    let r =
        post(&mut conn, "/oauth2/token", &[FORM_CT, ("authorization", &svc)], "grant_type=client_credentials").await;
    let cc2 = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = post(&mut conn, "/oauth2/revoke", &[FORM_CT, ("authorization", &app)], format!("token={cc2}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(lab.status_of(&mut conn, &cc2).await, 200, "app revoked svc's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_a_key_removed_from_keys_dir_is_refused_after_reload() {
    let lab = Lab::start().await;
    let (pem, k2) = fresh_key("k2", tokengate::keys::Alg::ES256);
    let g0 = lab.gw.wait_watcher_ready().await;
    std::fs::write(lab.aux.path().join("keys/k2.pem"), pem).unwrap();
    let g1 = lab.gw.wait_generation_above(g0, 10).await["generation"].as_u64().unwrap();
    let tok = token(&k2, &claims("kate", "read"));
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &tok).await, 200, "k2 token once k2 is loaded (also caches it)");
    std::fs::remove_file(lab.aux.path().join("keys/k2.pem")).unwrap();
    let doc = lab.gw.wait_generation_above(g1, 10).await;
    assert!(doc["last_error"].is_null(), "{doc}");
    let before = lab.upstream_total();
    let r = lab.gw.get_with("/api/x", &tok).await;
    assert_eq!(r.status, 401, "token of a removed key (cached before the reload): {}", r.text());
    assert_eq!(lab.upstream_total(), before);
}
