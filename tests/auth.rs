//! Token validation over the wire: every accepted and refused case with its exact status,
//! `WWW-Authenticate` and JSON body, and what the upstream does (or does not) receive.

mod common;

use common::*;
use serde_json::json;
use tokengate::config::RsaAlg;
use tokengate::keys::{Alg, OwnKeys};

const REALM: &str = "Bearer realm=\"tokengate\"";

fn routes(up: &Upstream) -> String {
    let u = up.url();
    format!(
        r#"
[[routes]]
prefix = "/api"
upstream = "{u}"
scopes = ["read"]
claims_to_headers = {{ "X-Tenant" = "tenant", "X-Groups" = "groups" }}

[[routes]]
prefix = "/admin"
upstream = "{u}"
scopes = ["admin", "write"]

[[routes]]
prefix = "/public"
upstream = "{u}"
public = true

[[routes]]
prefix = "/echo"
upstream = "echo"
"#
    )
}

async fn setup() -> (Gw, Upstream) {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    (gw, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_passes_with_identity_headers_from_the_token_only() {
    let (gw, up) = setup().await;
    let tok = gw.mint("alice", "read write");
    let r = gw
        .get(
            "/api/items?x=1",
            &[
                ("authorization", &format!("Bearer {tok}")),
                ("x-auth-subject", "root"),
                ("x-auth-client-id", "evil"),
                ("x-auth-scope", "admin"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream-ok");
    assert_eq!(r.header("x-upstream"), Some("yes"));
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/api/items?x=1");
    assert_eq!(seen.headers.get_all("x-auth-subject").iter().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(seen.headers.get_all("x-auth-client-id").iter().collect::<Vec<_>>(), ["client-7"]);
    assert_eq!(seen.headers.get_all("x-auth-scope").iter().collect::<Vec<_>>(), ["read write"]);
    // The token had no tenant/groups claims: the route's extra headers are simply absent.
    assert!(seen.header("x-tenant").is_none());
    // Bearer scheme is case-insensitive.
    let r = gw.get("/api/x", &[("authorization", &format!("bearer {tok}"))]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_in_odd_case_are_replaced_and_claims_forwarded() {
    let (gw, up) = setup().await;
    let k1 = gw.key("k1");
    let mut c = claims("bob", "read");
    c["tenant"] = json!("acme");
    c["groups"] = json!(["ops", "dev", 7]);
    let tok = token(&k1, &c);
    // Raw HTTP/1.1 on the plain listener so the header names really go out in odd case.
    let reqs = format!(
        "GET /api/t HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\nX-Auth-Subject: root\r\nx-auth-SCOPE: admin\r\n\
         X-AUTH-CLIENT-ID: evil\r\nx-TENANT: other\r\nX-Groups: root\r\nConnection: close\r\n\r\n"
    );
    let r = raw(gw.plain, &reqs).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let seen = up.last();
    let all = |n: &str| seen.headers.get_all(n).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(all("x-auth-subject"), ["bob"]);
    assert_eq!(all("x-auth-scope"), ["read"]);
    assert_eq!(all("x-auth-client-id"), ["forge-client"]);
    assert_eq!(all("x-tenant"), ["acme"]);
    assert_eq!(all("x-groups"), ["ops dev 7"]);

    // Without the claim, a spoofed X-Tenant is removed, not passed through.
    let tok = token(&k1, &claims("carol", "read"));
    let r = gw.get("/api/t", &[("authorization", &format!("Bearer {tok}")), ("X-Tenant", "spoofed")]).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-auth-subject"), Some("carol"));
    assert!(seen.header("x-tenant").is_none(), "spoofed X-Tenant reached the upstream: {:?}", seen.headers);

    // A token without sub/client_id: the spoofed identity headers are removed, not kept.
    let mut anon = claims("x", "read");
    let o = anon.as_object_mut().unwrap();
    o.remove("sub");
    o.remove("client_id");
    let tok = token(&k1, &anon);
    let r = gw
        .get(
            "/api/t",
            &[("authorization", &format!("Bearer {tok}")), ("x-auth-subject", "root"), ("x-auth-client-id", "evil")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert!(seen.header("x-auth-subject").is_none(), "{:?}", seen.headers);
    assert!(seen.header("x-auth-client-id").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.header("x-auth-scope"), Some("read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_token_variants_are_accepted() {
    let (gw, up) = setup().await;
    let k1 = gw.key("k1");
    let mut many = claims("dana", "read");
    many["aud"] = json!(["other", "api"]);
    let app_typ =
        sign_with(&k1, &json!({"alg": "ES256", "kid": "k1", "typ": "application/at+jwt"}), &claims("eve", "read"));
    let upper_typ = sign_with(&k1, &json!({"alg": "ES256", "kid": "k1", "typ": "AT+JWT"}), &claims("fay", "read"));
    for (name, tok, sub) in
        [("aud array", token(&k1, &many), "dana"), ("application/at+jwt", app_typ, "eve"), ("AT+JWT", upper_typ, "fay")]
    {
        let r = gw.get_with("/api/v", &tok).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(up.last().header("x-auth-subject"), Some(sub), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_other_scheme_is_401_without_error_code() {
    let (gw, up) = setup().await;
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")]] {
        let r = gw.get("/api/x", &headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert_eq!(r.www_auth(), REALM, "{headers:?}");
        assert!(!r.www_auth().contains("error="));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.json()["error"].is_string());
        assert!(!r.mentions("YWxpY2U6cGFzc3dvcmQ"));
    }
    assert_eq!(up.count(), 0, "a rejected request reached the upstream");
}

/// Every one of these is a real, well-formed attempt that must be refused with `invalid_token`.
fn attacks(gw: &Gw) -> Vec<(&'static str, String)> {
    let k1 = gw.key("k1");
    let good = gw.mint("mallory", "read");
    let n = now();
    let mut v: Vec<(&'static str, String)> = vec![
        ("not a JWT", "not-a-jwt".into()),
        ("too large", format!("{good}{}", "A".repeat(9000))),
        ("two segments", "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0".into()),
        ("four segments", format!("{good}.AAAA")),
        ("padded base64", {
            let (h, rest) = good.split_once('.').unwrap();
            format!("{h}=.{rest}")
        }),
        ("flipped signature bit", flip_signature_bit(&good)),
        ("signature of another token", {
            let other = gw.mint("alice", "read admin");
            let (input, _) = good.rsplit_once('.').unwrap();
            let (_, sig) = other.rsplit_once('.').unwrap();
            format!("{input}.{sig}")
        }),
    ];
    let mut expired = claims("m", "read");
    expired["iat"] = json!(n - 7200);
    expired["exp"] = json!(n - 3600);
    v.push(("expired", token(&k1, &expired)));
    let mut nbf = claims("m", "read");
    nbf["nbf"] = json!(n + 3600);
    v.push(("nbf in the future", token(&k1, &nbf)));
    let mut iss = claims("m", "read");
    iss["iss"] = json!("https://evil.example");
    v.push(("wrong iss", token(&k1, &iss)));
    let mut aud = claims("m", "read");
    aud["aud"] = json!("other-api");
    v.push(("wrong aud", token(&k1, &aud)));
    let mut no_aud = claims("m", "read");
    no_aud.as_object_mut().unwrap().remove("aud");
    v.push(("no aud", token(&k1, &no_aud)));
    v.push(("typ JWT", sign_with(&k1, &json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}), &claims("m", "read"))));
    v.push(("no typ", sign_with(&k1, &json!({"alg": "ES256", "kid": "k1"}), &claims("m", "read"))));
    let es384 = fresh_key("k1", Alg::ES384).1;
    assert_eq!(es384.alg, Alg::ES384);
    v.push(("ES384 with kid k1", token(&es384, &claims("m", "read"))));
    let rsa = fresh_key("k1", Alg::RS256).1;
    v.push(("RS256 with kid k1", token(&rsa, &claims("m", "read"))));
    let ed = fresh_key("k1", Alg::EdDSA).1;
    v.push(("EdDSA with kid k1", token(&ed, &claims("m", "read"))));
    v.push(("HS256 with a random secret", hs256(&header("HS256", "k1"), &claims("m", "read"), &[7u8; 32])));
    // Algorithm confusion: HMAC keyed with the issuer's public key in every usual encoding.
    let own = OwnKeys::load(&gw.path("keys"), Some("k1"), RsaAlg::RS256).unwrap();
    let jwks = own.jwks();
    let jwk = &jwks["keys"][0];
    let point = jwk_point(jwk);
    let spki = p256_spki_der(&point);
    tokengate::keys::VerifyKey::public(Alg::ES256, &point).expect("derived point is a valid key");
    let pem = tokengate::keys::pem_encode("PUBLIC KEY", &spki);
    let secrets: Vec<(&'static str, Vec<u8>)> = vec![
        ("HS256 keyed with public key PEM", pem.clone().into_bytes()),
        ("HS256 keyed with public key PEM without newline", pem.trim_end().as_bytes().to_vec()),
        ("HS256 keyed with SPKI DER", spki.clone()),
        ("HS256 keyed with the EC point", point.clone()),
        ("HS256 keyed with the JWK", jwk.to_string().into_bytes()),
        ("HS256 keyed with the JWKS", jwks.to_string().into_bytes()),
    ];
    for (name, secret) in secrets {
        v.push((name, hs256(&header("HS256", "k1"), &claims("m", "read admin"), &secret)));
        let mut no_kid = header("HS256", "k1");
        no_kid.as_object_mut().unwrap().remove("kid");
        v.push((name, hs256(&no_kid, &claims("m", "read admin"), &secret)));
    }
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": "k1"});
        let input = format!("{}.{}", b64json(&h), b64json(&claims("m", "read admin")));
        v.push(("alg none, empty signature", format!("{input}.")));
        v.push(("alg none, with signature", format!("{input}.{}", b64(&k1.sign(input.as_bytes()).unwrap()))));
    }
    v.push(("no alg", sign_with(&k1, &json!({"kid": "k1", "typ": "at+jwt"}), &claims("m", "read"))));
    v.push((
        "crit header",
        sign_with(&k1, &json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt", "crit": ["exp"]}), &claims("m", "read")),
    ));
    v.push(("unknown kid", sign_with(&k1, &header("ES256", "k9"), &claims("m", "read"))));
    let other_key = fresh_key("k1", Alg::ES256).1;
    v.push(("same kid, different ES256 key", token(&other_key, &claims("m", "read"))));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_401_invalid_token_and_never_echoed() {
    let (gw, up) = setup().await;
    let mut conn = gw.tls(false).await;
    for (name, tok) in attacks(&gw) {
        let r = conn.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        let www = r.www_auth();
        assert!(www.starts_with(&format!("{REALM}, error=\"invalid_token\"")), "{name}: {www}");
        assert!(www.contains("error_description=\""), "{name}: {www}");
        let body = r.json();
        assert_eq!(body["error"], "invalid_token", "{name}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{name}: {body}");
        assert!(!r.mentions(&tok), "{name}: the response echoes the token");
        // Not even the signature or payload segment is echoed.
        for seg in tok.split('.').filter(|s| s.len() > 16) {
            assert!(!r.mentions(seg), "{name}: the response echoes a token segment");
        }
    }
    assert_eq!(
        up.count(),
        0,
        "a refused token reached the upstream: {:?}",
        up.seen().iter().map(|s| &s.headers).collect::<Vec<_>>()
    );
    // The same connection still serves a valid token.
    let ok = gw.mint("alice", "read");
    let r = conn.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {ok}"))], empty())).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_credentials_are_400_invalid_request() {
    let (gw, up) = setup().await;
    let tok = gw.mint("alice", "read");
    let bearer = format!("Bearer {tok}");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("two Authorization headers", "/api/x".into(), vec![("authorization", &bearer), ("authorization", &bearer)]),
        ("bearer + basic", "/api/x".into(), vec![("authorization", &bearer), ("authorization", "Basic eDp5")]),
        ("header + query token", format!("/api/x?access_token={tok}"), vec![("authorization", &bearer)]),
        ("header + query token, odd case", format!("/api/x?a=1&Access_Token={tok}"), vec![("authorization", &bearer)]),
    ];
    for (name, path, headers) in cases {
        let r = gw.get(&path, &headers).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.www_auth().starts_with(&format!("{REALM}, error=\"invalid_request\"")), "{name}: {}", r.www_auth());
        assert_eq!(r.json()["error"], "invalid_request", "{name}");
        assert!(!r.mentions(&tok), "{name}: the response echoes the token");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_insufficient_scope_naming_the_scopes() {
    let (gw, up) = setup().await;
    for scope in ["read", "admin", "write", "adminwrite", "admin,write", ""] {
        let tok = gw.mint("alice", scope);
        let r = gw.get_with("/admin/users", &tok).await;
        assert_eq!(r.status, 403, "scope {scope:?}: {}", r.text());
        let www = r.www_auth();
        assert!(www.starts_with(&format!("{REALM}, error=\"insufficient_scope\"")), "{www}");
        assert!(www.contains("scope=\"admin write\""), "{www}");
        assert_eq!(r.json()["error"], "insufficient_scope");
        assert!(!r.mentions(&tok));
    }
    assert_eq!(up.count(), 0);
    let tok = gw.mint("root", "write read admin");
    let r = gw.get_with("/admin/users", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().header("x-auth-scope"), Some("write read admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_needs_no_token() {
    let (gw, up) = setup().await;
    let r = gw.get("/public/doc", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream-ok");
    assert_eq!(up.last().uri, "/public/doc");
    // Nothing makes a public request look authenticated upstream.
    let r = gw.get("/public/doc", &[("x-auth-subject", "root")]).await;
    assert_eq!(r.status, 200);
    assert!(up.last().header("x-auth-subject").is_none());
    // The token check is per route: the sibling /publicx is not public (no route → 404 here).
    assert_eq!(gw.get("/publicx", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_echo_upstream_reports_the_forwarded_request() {
    let (gw, _up) = setup().await;
    let tok = gw.mint("erin", "read");
    let mut conn = gw.tls(false).await;
    let r = conn
        .send(req(
            "POST",
            "/echo/hello?x=1",
            &[("authorization", &format!("Bearer {tok}")), ("x-auth-subject", "root")],
            full(vec![b'a'; 1234]),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo/hello");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["body_bytes"], 1234);
    assert_eq!(v["headers"]["x-auth-subject"], "erin");
    assert_eq!(v["headers"]["x-auth-client-id"], "client-7");
    assert_eq!(v["headers"]["authorization"], "<redacted>");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert!(!r.mentions(&tok));
    // And the echo route is protected like any other.
    assert_eq!(gw.get("/echo/hello", &[]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_rejection_reasons() {
    let (gw, _up) = setup().await;
    let k1 = gw.key("k1");
    let mut c = claims("m", "read");
    c["exp"] = json!(now() - 3600);
    c["iat"] = json!(now() - 7200);
    let r = gw.get_with("/api/x", &token(&k1, &c)).await;
    assert_eq!(r.status, 401);
    assert_eq!(gw.get_with("/api/x", &gw.mint("a", "read")).await.status, 200);
    let m = gw.metrics().await;
    assert!(m.lines().any(|l| l == r#"tokengate_token_rejections_total{reason="expired"} 1"#), "{m}");
    assert!(m.lines().any(|l| l.starts_with("tokengate_requests_total{") && l.contains(r#"status="401""#)), "{m}");
    assert!(m.lines().any(|l| l == r#"tokengate_requests_total{route="/api",status="200"} 1"#), "{m}");
}
