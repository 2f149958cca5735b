//! Client authentication: client_secret_basic (form-encoded inside Basic), client_secret_post,
//! private_key_jwt (PEM key and JWKS), public clients; and every way it fails.

use serde_json::json;

use crate::common::*;
use crate::support::*;

const CC: (&str, &str) = ("grant_type", "client_credentials");
const CC_ONLY: &[&str] = &["client_credentials"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_basic_decodes_form_encoded_id_and_secret() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    // "a:b" must travel as "a%3Ab" (RFC 6749 2.3.1), the secret's specials encoded too.
    let r = ep.token(Auth::Basic(SPECIAL_ID, SPECIAL_SECRET), &[CC]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(claims_of(r.json()["access_token"].as_str().unwrap())["client_id"], SPECIAL_ID);
    // The raw, unencoded form splits at the first ':' and must fail.
    let raw = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{SPECIAL_ID}:{SPECIAL_SECRET}"))
    );
    let r =
        ep.send("POST", "/oauth2/token", &[FORM_CT, ("authorization", &raw)], "grant_type=client_credentials").await;
    assert_oauth_error(&r, 401, "invalid_client");
    // The oauth2 crate encodes Basic credentials itself: its request is accepted too.
    let http = ep.http();
    let tok = ep
        .oauth2_client(SPECIAL_ID, Some(SPECIAL_SECRET))
        .exchange_client_credentials()
        .request_async(&http)
        .await
        .expect("oauth2 crate with special characters");
    assert_eq!(claims_of(oauth2::TokenResponse::access_token(&tok).secret())["sub"], SPECIAL_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_post_works_and_invalid_client_challenges_basic_only_where_basic_or_nothing_was_used() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let r = ep.token(Auth::Post("svc", SECRET), &[CC]).await;
    assert_eq!(r.status, 200, "client_secret_post: {}", r.text());
    let ok_post = ep.oauth2_client("svc", Some(SECRET)).set_auth_type(oauth2::AuthType::RequestBody);
    let http = ep.http();
    ok_post.exchange_client_credentials().request_async(&http).await.expect("oauth2 crate, RequestBody auth");

    let mut bodies = Vec::new();
    // Basic failed: 401 with its challenge. A secret in the body failed: 400 and no challenge
    // (RFC 6749 5.2; a 401 would need a challenge, and no HTTP scheme names a body secret).
    for (auth, status, challenge) in [
        (Auth::Basic("svc", "wrong"), 401, Some("Basic realm=\"tokengate\"")),
        (Auth::Basic("ghost", SECRET), 401, Some("Basic realm=\"tokengate\"")),
        (Auth::Post("svc", "wrong"), 400, None),
        (Auth::Post("ghost", SECRET), 400, None),
    ] {
        let r = ep.token(auth, &[CC]).await;
        assert_oauth_error(&r, status, "invalid_client");
        assert_eq!(r.header("www-authenticate"), challenge);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "unknown client and wrong secret answer alike");
    // No authentication at all.
    let r = ep.token(Auth::None, &[CC]).await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert_eq!(r.www_auth(), "Basic realm=\"tokengate\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_client_names_itself_on_the_password_grant_only() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let pw = [("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW), ("client_id", "pub")];
    let r = ep.token(Auth::None, &pw).await;
    assert_eq!(r.status, 200, "public client: {}", r.text());
    let body = r.json();
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["client_id"], "pub");
    let r = ep.token(Auth::None, &[CC, ("client_id", "pub")]).await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    // A confidential client cannot pass itself off as public by leaving out its secret.
    let r = ep
        .token(
            Auth::None,
            &[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW), ("client_id", "app")],
        )
        .await;
    assert_oauth_error(&r, 401, "invalid_client");
}

struct PkClients {
    _dir: tempfile::TempDir,
    pem_key: AssertionKey,
    jwks_key: AssertionKey,
    tables: String,
}

fn pk_clients() -> PkClients {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem_key = assertion_key("pem");
    let jwks_key = assertion_key("jk1");
    let pem_path = dir.path().join("client.pub.pem");
    let jwks_path = dir.path().join("client.jwks.json");
    write_file(&pem_path, &pem_key.spki_pem);
    let mut jwk = jwks_key.jwk.clone();
    jwk["kid"] = "jk1".into();
    write_json(&jwks_path, &json!({ "keys": [jwk] }));
    let tables = [
        tables(),
        client("pk-pem", &format!("public_key = \"{}\"", pem_path.display()), CC_ONLY, &["read"], &["read"]),
        client("pk-jwks", &format!("jwks = \"{}\"", jwks_path.display()), CC_ONLY, &["read"], &["read"]),
    ]
    .concat();
    PkClients { _dir: dir, pem_key, jwks_key, tables }
}

fn with_assertion<'a>(a: &'a str, client_id: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        CC,
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", a),
    ];
    if let Some(c) = client_id {
        p.push(("client_id", c));
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_with_pem_and_jwks_keys_and_every_refusal() {
    let pk = pk_clients();
    let gw = start(&Opts { tables: pk.tables.clone(), ..Opts::default() }).await;
    let ep = Ep::of(&gw);

    // PEM-keyed client, aud = token endpoint URL.
    let a = assertion(&pk.pem_key, None, "pk-pem", TOKEN_URL, 120, "jti-pem-1");
    let r = ep.token(Auth::None, &with_assertion(&a, Some("pk-pem"))).await;
    assert_eq!(r.status, 200, "private_key_jwt (PEM): {}", r.text());
    assert_eq!(claims_of(r.json()["access_token"].as_str().unwrap())["sub"], "pk-pem");
    // Replay of the same assertion (same jti).
    let r = ep.token(Auth::None, &with_assertion(&a, Some("pk-pem"))).await;
    assert_oauth_error(&r, 400, "invalid_client");
    assert_eq!(r.header("www-authenticate"), None, "a replayed assertion: no challenge for a scheme it never used");

    // JWKS-keyed client, with kid, no client_id parameter (iss names the client), aud = issuer.
    let a = assertion(&pk.jwks_key, Some("jk1"), "pk-jwks", ISSUER, 120, "jti-jwks-1");
    let r = ep.token(Auth::None, &with_assertion(&a, None)).await;
    assert_eq!(r.status, 200, "private_key_jwt (JWKS): {}", r.text());
    let r = ep.token(Auth::None, &with_assertion(&a, None)).await;
    assert_oauth_error(&r, 400, "invalid_client");

    let bad = [
        ("wrong aud", assertion(&pk.jwks_key, Some("jk1"), "pk-jwks", "https://elsewhere/oauth2/token", 120, "j2")),
        ("expired", assertion(&pk.jwks_key, Some("jk1"), "pk-jwks", TOKEN_URL, -120, "j3")),
        ("exp > 10 min ahead", assertion(&pk.jwks_key, Some("jk1"), "pk-jwks", TOKEN_URL, 3600, "j4")),
        ("another client's key", assertion(&pk.pem_key, Some("jk1"), "pk-jwks", TOKEN_URL, 120, "j5")),
        ("a secret client", assertion(&pk.pem_key, None, "svc", TOKEN_URL, 120, "j6")),
    ];
    for (what, a) in &bad {
        let r = ep.token(Auth::None, &with_assertion(a, None)).await;
        assert_oauth_error(&r, 400, "invalid_client");
        assert_eq!(r.header("www-authenticate"), None, "{what}");
    }
    // client_id that disagrees with the assertion's iss.
    let a = assertion(&pk.pem_key, None, "pk-pem", TOKEN_URL, 120, "jti-pem-2");
    let r = ep.token(Auth::None, &with_assertion(&a, Some("pk-jwks"))).await;
    assert_oauth_error(&r, 400, "invalid_client");
}
