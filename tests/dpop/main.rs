//! DPoP (RFC 9449) over the wire, both ends: the token endpoint binding tokens to the client's
//! key and the proxy demanding a proof with every request. The client is independent: panva's
//! `oauth4webapi` for whole flows, `jose` for single proofs, good and malformed
//! (`tests/support/dpop/client.mjs`). Then every attack the issue lists, one by one.
//!
//! Needs Node.js and `npm ci --prefix tests/support/dpop` (`bash .ci/run` does both).

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/dpop_client.rs"]
#[allow(dead_code)]
mod dpop_client;

use base64::Engine;
use serde_json::{json, Value};

use common::*;
use dpop_client::{proofs, run, spec};

/// The gateway's tables and routes: a confidential client, one that must use DPoP, a public
/// client with refresh tokens, alice; `/api` allows bearer tokens, `/strict` requires DPoP.
fn config(dpop: &str) -> Config {
    let s = secret_hash(SECRET);
    let rest = [
        client("svc", &s, &["client_credentials"], &["read"], &["read"]),
        client("strict", &s, &["client_credentials"], &["read"], &["read"]) + "require_dpop = true\n",
        client("app", "public = true", &["password", "refresh_token"], &["read"], &["read"]),
        user("alice", ALICE_PW, &["read"], ""),
        route("/api", "echo", ""),
        route("/strict", "echo", "dpop = \"require\""),
        format!("\n[dpop]\n{dpop}\n"),
    ]
    .concat();
    Config::new().rest(&rest)
}

/// The inputs of a client.mjs flow against `gw`.
fn flow_input(gw: &Gw, client_id: &str, alg: &str, resource: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "token_endpoint": format!("https://127.0.0.1:{}/oauth2/token", gw.https.port()),
        "client_id": client_id,
        "secret": SECRET,
        "alg": alg,
        "resource": format!("https://127.0.0.1:{}{resource}", gw.https.port()),
        "username": "alice",
        "password": ALICE_PW,
    })
}

/// The claims of a JWT, unverified (the gateway's own tests verify; here only `cnf` matters).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A client-credentials request with `proof` (when given) over a fresh HTTPS/1.1 connection.
async fn token_request(gw: &Gw, client_id: &str, proofs: &[&str]) -> Resp {
    let basic = basic_header(client_id, SECRET);
    let mut headers = vec![("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    headers.extend(proofs.iter().map(|p| ("dpop", *p)));
    let body = full(encode_form(&[("grant_type", "client_credentials")]));
    gw.tls(false).await.send(req("POST", "/oauth2/token", &headers, body)).await
}

/// A GET of `path` with `Authorization: <scheme> <token>` and `proofs` as DPoP headers.
async fn call(gw: &Gw, path: &str, scheme: &str, token: &str, proofs: &[&str]) -> Resp {
    let auth = format!("{scheme} {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(proofs.iter().map(|p| ("dpop", *p)));
    gw.tls(false).await.send(req("GET", path, &headers, empty())).await
}

const TOKEN_HTU: &str = "https://localhost/oauth2/token";

/// A DPoP-bound token of `svc` and the key it is bound to, through a jose proof.
async fn bound_token(gw: &Gw, alg: &str) -> (String, dpop_client::Proofs) {
    let key = proofs(alg, None, &[spec("POST", TOKEN_HTU, None)]);
    let r = token_request(gw, "svc", &[&key.proofs[0]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_type"], "DPoP");
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["cnf"]["jkt"], key.jkt.as_str(), "bound to the proof's key");
    (token, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_gets_and_uses_dpop_bound_tokens() {
    let gw = Gw::start_config(&config("")).await;
    let ca = gw.path("certs/gateway.crt");
    for alg in ["ES256", "RS256", "PS256", "EdDSA"] {
        let out = run("flow", &flow_input(&gw, "svc", alg, "/api/orders"), Some(&ca));
        assert!(out.get("failed").is_none(), "{alg}: {out}");
        // oauth4webapi lower-cases token_type; the gateway says "DPoP" (checked below).
        assert_eq!(out["token_type"], "dpop", "{alg}: {out}");
        let token = out["access_token"].as_str().unwrap();
        assert_eq!(claims(token)["cnf"]["jkt"], out["jkt"], "{alg}: cnf.jkt is the client's key thumbprint");
        assert_eq!(out["resource"]["status"], 200, "{alg}: {out}");
        assert_eq!(out["resource"]["retried"], false);
        // RFC 9449 7.2: the same token as a bearer token is refused.
        let r = call(&gw, "/api/orders", "Bearer", token, &[]).await;
        assert_eq!(r.status, 401, "{alg}");
        assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());
    }
    // The route that requires DPoP takes the same flow.
    let out = run("flow", &flow_input(&gw, "strict", "ES256", "/strict/x"), Some(&ca));
    assert_eq!(out["resource"]["status"], 200, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_clients_refresh_token_is_bound_to_its_key() {
    let gw = Gw::start_config(&config("")).await;
    let out = run("public", &flow_input(&gw, "app", "ES256", "/api/me"), Some(&gw.path("certs/gateway.crt")));
    assert!(out.get("failed").is_none(), "{out}");
    assert_eq!(out["token_type"], "dpop", "{out}");
    assert_eq!(out["refreshed_type"], "dpop");
    assert_eq!(out["stolen_status"], 400, "a refresh with another key's proof: {out}");
    assert_eq!(out["stolen_error"], "invalid_dpop_proof");
    assert_eq!(claims(out["access_token"].as_str().unwrap())["cnf"]["jkt"], out["jkt"]);
    assert_eq!(out["resource"]["status"], 200, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_nonces_are_demanded_and_honoured() {
    let gw = Gw::start_config(&config("require_nonce = true")).await;
    let out = run("flow", &flow_input(&gw, "svc", "ES256", "/api/n"), Some(&gw.path("certs/gateway.crt")));
    assert!(out.get("failed").is_none(), "{out}");
    assert_eq!(out["token_retried"], true, "the first token request gets use_dpop_nonce: {out}");
    assert_eq!(out["resource"]["status"], 200, "{out}");
    // A proof without a nonce at the proxy: 401 use_dpop_nonce with a fresh DPoP-Nonce.
    let key = proofs("ES256", None, &[spec("POST", TOKEN_HTU, None)]);
    let r = token_request(&gw, "svc", &[&key.proofs[0]]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "use_dpop_nonce");
    let nonce = r.header("dpop-nonce").expect("DPoP-Nonce").to_owned();
    let mut with_nonce = spec("POST", TOKEN_HTU, None);
    with_nonce["nonce"] = nonce.clone().into();
    let p = proofs("ES256", Some(&key.private_jwk), &[with_nonce]);
    let r = token_request(&gw, "svc", &[&p.proofs[0]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let p = proofs("ES256", Some(&key.private_jwk), &[spec("GET", "https://localhost/api/n", Some(&token))]);
    let r = call(&gw, "/api/n", "DPoP", &token, &[&p.proofs[0]]).await;
    assert_eq!(r.status, 401);
    assert!(r.www_auth().starts_with("DPoP error=\"use_dpop_nonce\""), "{}", r.www_auth());
    assert!(r.header("dpop-nonce").is_some());
    // A forged nonce is no nonce.
    let mut forged = spec("GET", "https://localhost/api/n", Some(&token));
    forged["nonce"] = format!("{nonce}x").into();
    let p = proofs("ES256", Some(&key.private_jwk), &[forged]);
    assert_eq!(call(&gw, "/api/n", "DPoP", &token, &[&p.proofs[0]]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_on_a_bound_token_is_refused() {
    let gw = Gw::start_config(&config("")).await;
    let (token, key) = bound_token(&gw, "ES256").await;
    let (other_token, _) = bound_token(&gw, "ES256").await;
    let htu = "https://localhost/api/orders";
    let good = |extra: Value| {
        let mut s = spec("GET", htu, Some(&token));
        if let Value::Object(m) = extra {
            s.as_object_mut().unwrap().extend(m);
        }
        s
    };
    let specs = vec![
        good(json!({})),                                              // 0: good, then replayed
        spec("POST", htu, Some(&token)),                              // 1: wrong htm
        spec("GET", "https://localhost/api/other", Some(&token)),     // 2: wrong htu path
        spec("GET", "https://evil.example/api/orders", Some(&token)), // 3: wrong htu host
        spec("GET", htu, Some(&other_token)),                         // 4: ath of another token
        good(json!({"other_jwk": true, "signed_by_other": true})),    // 5: a valid proof by another key
        good(json!({"signed_by_other": true})),                       // 6: our jwk, another key's signature
        good(json!({"private_in_header": true})),                     // 7: private jwk
        good(json!({"unsigned": true})),                              // 8: alg none
        good(json!({"hs256": true})),                                 // 9: HS256 with an oct jwk
        good(json!({"iat_offset": -120})),                            // 10: stale
        good(json!({"iat_offset": 60})),                              // 11: from the future
        good(json!({"typ": "JWT"})),                                  // 12: wrong typ
        spec("GET", htu, None),                                       // 13: no ath at all
        good(json!({})),                                              // 14: for two DPoP headers
        good(json!({})),                                              // 15: ditto
    ];
    let p = proofs("ES256", Some(&key.private_jwk), &specs).proofs;
    let ok = call(&gw, "/api/orders", "DPoP", &token, &[&p[0]]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("replayed proof", vec![&p[0]], "already used"),
        ("wrong htm", vec![&p[1]], "htm"),
        ("wrong htu path", vec![&p[2]], "htu"),
        ("wrong htu host", vec![&p[3]], "htu"),
        ("ath of another token", vec![&p[4]], "ath"),
        ("proof by another key", vec![&p[5]], "not the key the token is bound to"),
        ("signature by another key", vec![&p[6]], "signature"),
        ("private jwk in the proof", vec![&p[7]], "jwk"),
        // jose's unsecured JWT has neither typ nor jwk: refused before its alg is even read.
        ("alg none", vec![&p[8]], "well-formed"),
        ("HS256 proof", vec![&p[9]], "algorithm"),
        ("stale iat", vec![&p[10]], "too old"),
        ("future iat", vec![&p[11]], "too old or issued in the future"),
        ("typ JWT", vec![&p[12]], "typ"),
        ("no ath", vec![&p[13]], "ath"),
        ("two DPoP headers", vec![&p[14], &p[15]], "more than one"),
        ("missing proof", vec![], "missing"),
    ];
    for (name, headers, says) in cases {
        let r = call(&gw, "/api/orders", "DPoP", &token, &headers).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        let www = r.www_auth();
        assert!(www.starts_with("DPoP error=\"invalid_dpop_proof\""), "{name}: {www}");
        assert!(www.contains("algs=\"ES256 ES384 EdDSA RS256 PS256\""), "{name}: {www}");
        assert!(r.json()["error_description"].as_str().unwrap().contains(says), "{name}: {}", r.text());
        assert!(!r.mentions(&token), "{name}: the token is never echoed");
    }
    // A bound token sent as a bearer token, with or without a proof.
    for proofs in [vec![], vec![p[14].as_str()]] {
        let r = call(&gw, "/api/orders", "Bearer", &token, &proofs).await;
        assert_eq!(r.status, 401);
        assert!(r.www_auth().starts_with("Bearer realm=\"tokengate\", error=\"invalid_token\""), "{}", r.www_auth());
    }
    // Proofs of the right kind still pass afterwards, over HTTP/2 too.
    let fresh = proofs("ES256", Some(&key.private_jwk), &[good(json!({}))]).proofs;
    let auth = format!("DPoP {token}");
    let r = gw
        .tls(true)
        .await
        .send(req("GET", "/api/orders", &[("authorization", &auth), ("dpop", &fresh[0])], empty()))
        .await;
    assert_eq!(r.status, 200, "h2: {}", r.text());
    let m = gw.metrics().await;
    assert!(sample(&m, "tokengate_token_rejections_total{reason=\"dpop_replay\"}") >= 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_dpop_routes() {
    let gw = Gw::start_config(&config("")).await;
    let bearer = {
        let r = token_request(&gw, "svc", &[]).await;
        assert_eq!(r.json()["token_type"], "Bearer");
        r.json()["access_token"].as_str().unwrap().to_owned()
    };
    assert!(claims(&bearer).get("cnf").is_none());
    // dpop = "allow": a bearer token passes; dpop = "require": it does not, with a DPoP challenge.
    assert_eq!(call(&gw, "/api/x", "Bearer", &bearer, &[]).await.status, 200);
    let r = call(&gw, "/strict/x", "Bearer", &bearer, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.www_auth().starts_with("DPoP error=\"invalid_token\""), "{}", r.www_auth());
    let r = gw.get("/strict/x", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.www_auth(), "DPoP algs=\"ES256 ES384 EdDSA RS256 PS256\"");
    // An unbound token under the DPoP scheme, even with a valid proof, proves nothing.
    let p = proofs("ES256", None, &[spec("GET", "https://localhost/api/x", Some(&bearer))]).proofs;
    let r = call(&gw, "/api/x", "DPoP", &bearer, &[&p[0]]).await;
    assert_eq!(r.status, 401);
    assert!(r.www_auth().starts_with("DPoP error=\"invalid_token\""), "{}", r.www_auth());
    // A client with require_dpop gets nothing without a proof.
    let r = token_request(&gw, "strict", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_dpop_proof");
    // Token endpoint proofs: wrong htu, replay, two headers.
    let key =
        proofs("ES256", None, &[spec("POST", "https://localhost/oauth2/other", None), spec("POST", TOKEN_HTU, None)]);
    let r = token_request(&gw, "svc", &[&key.proofs[0]]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("invalid_dpop_proof")));
    assert_eq!(token_request(&gw, "svc", &[&key.proofs[1]]).await.status, 200);
    let r = token_request(&gw, "svc", &[&key.proofs[1]]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("invalid_dpop_proof")), "replayed");
    let r = token_request(&gw, "svc", &[&key.proofs[1], &key.proofs[1]]).await;
    assert_eq!(r.status, 400);
    // Discovery names the algorithms.
    let d = gw.get("/.well-known/oauth-authorization-server", &[]).await.json();
    assert_eq!(d["dpop_signing_alg_values_supported"], json!(["ES256", "ES384", "EdDSA", "RS256", "PS256"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_from_tokengate_dpop_proof_work_as_the_docs_show() {
    let gw = Gw::start_config(&config("")).await;
    let key = gw.path("dpop.pem");
    tokengate::commands::keygen("ES256", &key).unwrap();
    let proof = |method, url, token: Option<&str>, count| {
        let req = tokengate::commands::ProofRequest { key: &key, method, url, token, nonce: None };
        tokengate::commands::dpop_proofs(&req, count).unwrap()
    };
    let (p, jkt) = proof("POST", TOKEN_HTU, None, 1);
    let r = token_request(&gw, "svc", &[&p[0]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["cnf"]["jkt"], jkt.as_str());
    // --count: distinct proofs, each good once; the query is not part of htu.
    let (p, _) = proof("GET", "https://localhost/api/list?page=2", Some(&token), 3);
    assert_eq!(p.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    for proof in &p {
        assert_eq!(call(&gw, "/api/list?page=2", "DPoP", &token, &[proof]).await.status, 200);
    }
    assert_eq!(call(&gw, "/api/list?page=2", "DPoP", &token, &[&p[0]]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_htu_is_the_uri_the_client_addressed() {
    for trusted in [true, false] {
        let gw = Gw::start_config(&config("").server(&format!("trust_forwarded = {trusted}"))).await;
        let (token, key) = bound_token(&gw, "ES256").await;
        // The client spoke https to api.example; a TLS-terminating proxy forwards plain HTTP.
        let p = proofs("ES256", Some(&key.private_jwk), &[spec("GET", "https://api.example/api/x", Some(&token))]);
        let auth = format!("DPoP {token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("dpop", p.proofs[0].as_str()),
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example"),
        ];
        let r = gw.plain_conn().await.send(req("GET", "/api/x", &headers, empty())).await;
        if trusted {
            assert_eq!(r.status, 200, "trusted: {}", r.text());
        } else {
            // Untrusted forwarding headers are ignored: the URI is http://10.0.0.5:8080/api/x.
            assert_eq!(r.status, 401, "untrusted: {}", r.text());
            assert!(r.text().contains("htu"), "{}", r.text());
        }
    }
}

/// A token-endpoint request of the public client `app` with `params` and one DPoP proof.
async fn public_grant(gw: &Gw, params: &[(&str, &str)], proof: &str) -> Resp {
    let mut p = params.to_vec();
    p.push(("client_id", "app"));
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("dpop", proof)];
    gw.tls(false).await.send(req("POST", "/oauth2/token", &headers, full(encode_form(&p)))).await
}

/// A refresh of `rt` by the public client with `proof`.
async fn public_refresh(gw: &Gw, rt: &str, proof: &str) -> Resp {
    public_grant(gw, &[("grant_type", "refresh_token"), ("refresh_token", rt)], proof).await
}

/// A password grant of alice through the public client with `proof`: its refresh token.
async fn public_login(gw: &Gw, proof: &str) -> String {
    let r = public_grant(gw, &[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW)], proof).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["refresh_token"].as_str().unwrap().to_owned()
}

fn rt(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reuse_grace_of_a_bound_family_is_for_its_own_key_only() {
    let gw = Gw::start_config(&config("").reuse_grace_secs(30)).await;
    let a = proofs("ES256", None, &vec![spec("POST", TOKEN_HTU, None); 8]);
    let b = proofs("ES256", None, &[spec("POST", TOKEN_HTU, None)]);
    assert_ne!(a.jkt, b.jkt);

    // The same key retries a lost answer: a fresh pair, bound to that key, the lost one dead.
    let rt1 = public_login(&gw, &a.proofs[0]).await;
    let lost = rt(&public_refresh(&gw, &rt1, &a.proofs[1]).await);
    let r = public_refresh(&gw, &rt1, &a.proofs[2]).await;
    let rt2 = rt(&r);
    assert_eq!(r.json()["token_type"], "DPoP");
    assert_eq!(claims(r.json()["access_token"].as_str().unwrap())["cnf"]["jkt"], a.jkt.as_str());
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 1);
    // rt2 is the live one (it rotates); the lost token is reuse (and revokes, checked last).
    let rt3 = rt(&public_refresh(&gw, &rt2, &a.proofs[3]).await);
    assert_eq!(public_refresh(&gw, &lost, &a.proofs[4]).await.status, 400);
    assert_eq!(public_refresh(&gw, &rt3, &a.proofs[5]).await.status, 400, "the family is revoked");

    // Another key retrying within the window: reuse, the family revoked.
    let rt1 = public_login(&gw, &a.proofs[6]).await;
    let kept = rt(&public_refresh(&gw, &rt1, &a.proofs[7]).await);
    let r = public_refresh(&gw, &rt1, &b.proofs[0]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].clone()), (400, json!("invalid_grant")), "{}", r.text());
    let more = proofs("ES256", Some(&a.private_jwk), &[spec("POST", TOKEN_HTU, None)]);
    let r = public_refresh(&gw, &kept, &more.proofs[0]).await;
    assert_eq!(r.status, 400, "another key's retry revoked the family: {}", r.text());
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 1);
}
