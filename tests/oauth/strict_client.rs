//! Client authentication through a strict certified client, panva's oauth4webapi: each method's
//! success, and each failure reported as the application needs it. A failure that used Basic, or
//! no client authentication, answers 401 with a Basic challenge, which oauth4webapi reports as
//! `WWWAuthenticateChallengeError`; one that used a secret in the body or an assertion answers
//! 400, which it reports as `ResponseBodyError` with `invalid_client` (RFC 6749 5.2).

use serde_json::{json, Value};

use crate::common::*;
use crate::dpop_client::{client_credentials, Refusal};
use crate::support::*;

/// A client-credentials grant's input for client.mjs against `gw`.
fn input(gw: &Gw, client_id: &str, method: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "token_endpoint": format!("https://127.0.0.1:{}/oauth2/token", gw.https.port()),
        "client_id": client_id,
        "method": method,
        "scope": "read",
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_authentication_method_succeeds_and_fails_as_a_strict_client_expects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = assertion_key("pk1");
    let stranger = assertion_key("pk1");
    let pem = dir.path().join("pk.pub.pem");
    write_file(&pem, &key.spki_pem);
    let pk =
        client("pk", &format!("public_key = \"{}\"", pem.display()), &["client_credentials"], &["read"], &["read"]);
    let gw = start(&Opts { tables: tables() + &pk, ..Opts::default() }).await;
    let ca = gw.dir.path().join("certs/gateway.crt");
    // Blocking: each call runs node; off the gateway's runtime threads.
    let grant = move |input: Value| {
        let ca = ca.clone();
        async move { tokio::task::spawn_blocking(move || client_credentials(&input, &ca)).await.expect("node") }
    };
    let secret = |id: &str, method: &str, s: &str| with(input(&gw, id, method), json!({ "secret": s }));
    let signed = |k: &AssertionKey, extra: Value| {
        with(input(&gw, "pk", "private_key_jwt"), with(json!({ "private_key_pem": k.private_pem }), extra))
    };

    // Each method's success, read by oauth4webapi as a token response.
    for (what, i) in [
        ("client_secret_basic", secret("svc", "basic", SECRET)),
        ("client_secret_post", secret("svc", "post", SECRET)),
        ("private_key_jwt", signed(&key, json!({}))),
    ] {
        let token = grant(i).await.unwrap_or_else(|r| panic!("{what}: {r:?}"));
        assert_eq!(claims_of(&token)["client_id"], if what == "private_key_jwt" { "pk" } else { "svc" }, "{what}");
    }

    // Failures in the body or by assertion: the OAuth error code reaches the application.
    let replayed = signed(&key, json!({ "jti": "strict-client-replay" }));
    assert!(grant(replayed.clone()).await.is_ok(), "the assertion's first use");
    for (what, i) in [
        ("client_secret_post, wrong secret", secret("svc", "post", "wrong")),
        ("client_secret_post, unknown client", secret("ghost", "post", SECRET)),
        ("private_key_jwt, replayed", replayed),
        ("private_key_jwt, addressed elsewhere", signed(&key, json!({ "aud": "https://elsewhere.example" }))),
        ("private_key_jwt, another key", signed(&stranger, json!({}))),
    ] {
        assert_eq!(grant(i).await.map(drop), Err(Refusal::invalid_client()), "{what}");
    }

    // Basic, or no client authentication at all: the Basic challenge stays.
    for (what, i) in [
        ("client_secret_basic, wrong secret", secret("svc", "basic", "wrong")),
        ("client_secret_basic, unknown client", secret("ghost", "basic", SECRET)),
        ("none, a confidential client", input(&gw, "svc", "none")),
        ("none, an unknown client", input(&gw, "ghost", "none")),
    ] {
        assert_eq!(grant(i).await.map(drop), Err(Refusal::basic_challenge()), "{what}");
    }
}
