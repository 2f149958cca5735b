//! Client authentication by certificate at the token endpoint (RFC 8705 section 2), the tokens
//! it issues, the equal refusals, lockout, discovery and the config errors.

use super::*;
use dpop_client::{client_credentials, Refusal};
use serde_json::json;

#[tokio::test]
async fn tls_client_auth_by_subject_dn_and_by_san_issues_tokens_bound_to_the_certificate() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    for h2 in [false, true] {
        let mut conn = mtls(&gw, Some(&pki.pki_app), h2).await;
        let r = token_request(&mut conn, &[("client_id", "pki-app")], &[]).await;
        assert_eq!(r.status, 200, "h2={h2}: {}", r.text());
        let body = r.json();
        assert_eq!(body["token_type"], "Bearer", "RFC 8705 tokens stay Bearer");
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(cnf_of(token), serde_json::json!({ "x5t#S256": pki.pki_app.thumbprint() }));
        assert_eq!(claims_of(token)["client_id"], "pki-app");
    }
    let token = token_for(&gw, &pki.san_app, "san-app").await;
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.san_app.thumbprint());
}

#[tokio::test]
async fn tls_client_auth_refuses_wrong_subject_a_self_signed_lookalike_and_no_certificate_alike() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    // The self-signed lookalike gets through the handshake (a self_signed_tls_client_auth client
    // is configured): what refuses it below is the token endpoint's own chain check.
    assert!(!refused(&gw, Some(&pki.self_signed_pki)).await, "the handshake lets a self-signed certificate through");
    let cases: [(&str, Option<&Cred>, &str); 4] = [
        ("wrong subject", Some(&pki.wrong_subject), "pki-app"),
        ("self-signed certificate with the right subject", Some(&pki.self_signed_pki), "pki-app"),
        ("the right certificate for another client (no such SAN)", Some(&pki.pki_app), "san-app"),
        ("a registered self-signed certificate for a tls_client_auth client", Some(&pki.self_app), "pki-app"),
    ];
    let mut answers = Vec::new();
    for (what, cred, id) in cases {
        let r = token_request(&mut mtls(&gw, cred, false).await, &[("client_id", id)], &[]).await;
        answers.push(assert_invalid_client(&r, what));
    }
    assert_eq!(answers[0].0, 400, "a certificate was shown: no Basic challenge");
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "every certificate failure answers alike: {answers:#?}");
    // Without a certificate the request used no client authentication at all: 401 and Basic,
    // as for an unknown client naming itself, so the answer does not tell certificate clients
    // apart. A secret is no way in for a certificate client, even with its certificate.
    let none = token_request(&mut mtls(&gw, None, false).await, &[("client_id", "pki-app")], &[]).await;
    let ghost = token_request(&mut mtls(&gw, None, false).await, &[("client_id", "ghost")], &[]).await;
    let secret = token_request(
        &mut mtls(&gw, Some(&pki.pki_app), false).await,
        &[],
        &[("authorization", &basic_header("pki-app", SECRET))],
    )
    .await;
    let basic = [
        assert_invalid_client(&none, "no certificate"),
        assert_invalid_client(&ghost, "an unknown client without a certificate"),
        assert_invalid_client(&secret, "a secret for a certificate client"),
    ];
    assert_eq!(basic[0].0, 401, "no client authentication at all: a Basic challenge");
    assert!(basic.windows(2).all(|w| w[0] == w[1]), "answers alike: {basic:#?}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    assert!(refused(&gw, Some(&pki.foreign)).await, "a certificate of another CA is refused");
    assert!(!refused(&gw, Some(&pki.pki_app)).await, "the CA's own certificate is accepted");
    assert!(!refused(&gw, None).await, "optional: no certificate is fine");
}

#[tokio::test]
async fn without_a_self_signed_client_the_handshake_refuses_self_signed_certificates() {
    let pki = Pki::generate();
    let clients = "\n[[clients]]\nid = \"pki-app\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n\
                   tls_client_auth_subject_dn = \"CN=pki-app,O=Acme\"\ngrants = [\"client_credentials\"]\n";
    let cfg = Config::new()
        .tls(&format!("client_ca = \"{}\"\nclient_auth = \"optional\"\n", pki.ca_path.display()))
        .rest(clients)
        .rest(&route("/pub", "echo", "public = true"));
    let gw = Gw::start_config(&cfg).await;
    assert!(refused(&gw, Some(&pki.self_signed_pki)).await);
    assert!(!refused(&gw, Some(&pki.pki_app)).await);
}

#[tokio::test]
async fn self_signed_tls_client_auth_accepts_the_registered_certificate_only() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let token = token_for(&gw, &pki.self_app, "self-app").await;
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.self_app.thumbprint());
    for (what, cred) in [
        ("an unregistered self-signed certificate", Some(&pki.unregistered)),
        ("a CA-issued certificate not registered", Some(&pki.pki_app)),
        ("no certificate", None),
    ] {
        let r = token_request(&mut mtls(&gw, cred, false).await, &[("client_id", "self-app")], &[]).await;
        assert_invalid_client(&r, what);
    }
}

#[tokio::test]
async fn certificate_failures_count_toward_the_client_lockout() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo").rest(&lockout(2, 60, 0))).await;
    for _ in 0..2 {
        let r = token_request(&mut mtls(&gw, Some(&pki.wrong_subject), false).await, &[("client_id", "pki-app")], &[])
            .await;
        assert_invalid_client(&r, "wrong subject");
    }
    let r = token_request(&mut mtls(&gw, Some(&pki.pki_app), false).await, &[("client_id", "pki-app")], &[]).await;
    assert_invalid_client(&r, "the right certificate while locked out");
    // Another client is not affected.
    token_for(&gw, &pki.san_app, "san-app").await;
}

#[tokio::test]
async fn discovery_announces_certificate_binding_and_the_methods_in_use() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let meta = gw.get("/.well-known/oauth-authorization-server", &[]).await.json();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    let methods = meta["token_endpoint_auth_methods_supported"].as_array().unwrap();
    for m in ["tls_client_auth", "self_signed_tls_client_auth", "client_secret_basic"] {
        assert!(methods.iter().any(|x| x == m), "{m} in {methods:?}");
    }
    let plain = Gw::start("", ECHO_ROUTES).await;
    let meta = plain.get("/.well-known/oauth-authorization-server", &[]).await.json();
    assert!(meta.get("tls_client_certificate_bound_access_tokens").is_none(), "{meta}");
    let methods = meta["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(!methods.iter().any(|x| x.as_str().is_some_and(|m| m.contains("tls"))), "{methods:?}");
}

/// The one-sentence startup errors of the new keys.
#[test]
fn misconfigurations_are_refused_naming_the_key() {
    let pki = Pki::generate();
    let ca = pki.ca_path.display();
    let pki_client = "[[clients]]\nid = \"p\"\ntoken_endpoint_auth_method = \"tls_client_auth\"\n";
    let cases = [
        ("[tls]\nclient_auth = \"required\"\n".to_string(), "tls.client_auth = \"required\" needs tls.client_ca"),
        ("[tls]\nclient_cert_header = \"x-client-cert\"\n".into(), "tls.client_cert_header needs tls.client_cert_header_peers"),
        (
            "[tls]\nclient_cert_header = \"x-client-cert\"\nclient_cert_header_peers = [\"10.0.0.0/33\"]\n".into(),
            "is not an address block",
        ),
        (format!("{pki_client}tls_client_auth_san_dns = \"a\"\n"), "needs tls.client_auth = \"optional\" or \"required\""),
        (
            format!("[tls]\nclient_ca = \"{ca}\"\nclient_auth = \"optional\"\n{pki_client}"),
            "tls_client_auth needs exactly one of",
        ),
        (
            format!("[tls]\nclient_ca = \"{ca}\"\nclient_auth = \"optional\"\n{pki_client}tls_client_auth_san_dns = \"a\"\nsecret_hash = \"x\"\n"),
            "takes no secret_hash",
        ),
        (
            format!("[tls]\nclient_ca = \"{ca}\"\nclient_auth = \"optional\"\n[[clients]]\nid = \"s\"\ntoken_endpoint_auth_method = \"self_signed_tls_client_auth\"\n"),
            "self_signed_tls_client_auth needs tls_client_certificates",
        ),
    ];
    for (text, want) in cases {
        let path = pki.dir.path().join("bad.toml");
        write_file(&path, &text);
        let e = tokengate::config::Config::load(&path).expect_err(&text).to_string();
        assert!(e.contains(want), "{text}\n=> {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_client_reads_certificate_failures_as_invalid_client() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let ca = gw.dir.path().join("certs/gateway.crt");
    let grant = |id: &str, cred: Option<&Cred>| {
        let mut input = json!({
            "issuer": ISSUER,
            "token_endpoint": format!("https://127.0.0.1:{}/oauth2/token", gw.https.port()),
            "client_id": id,
            "method": "tls",
        });
        if let Some(c) = cred {
            input["cert_pem"] = c.cert_pem.clone().into();
            input["key_pem"] = c.key_pem.clone().into();
        }
        let ca = ca.clone();
        async move { tokio::task::spawn_blocking(move || client_credentials(&input, &ca)).await.expect("node") }
    };
    // tls_client_auth and self_signed_tls_client_auth through oauth4webapi: bound tokens.
    let token = grant("pki-app", Some(&pki.pki_app)).await.expect("tls_client_auth");
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.pki_app.thumbprint());
    let token = grant("self-app", Some(&pki.self_app)).await.expect("self_signed_tls_client_auth");
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.self_app.thumbprint());
    // A certificate that fails: the OAuth error reaches the application, no challenge in between.
    for (what, id, cred) in
        [("wrong subject", "pki-app", &pki.wrong_subject), ("unregistered self-signed", "self-app", &pki.unregistered)]
    {
        assert_eq!(grant(id, Some(cred)).await.map(drop), Err(Refusal::invalid_client()), "{what}");
    }
    // No certificate at all is no client authentication: the Basic challenge.
    assert_eq!(grant("pki-app", None).await.map(drop), Err(Refusal::basic_challenge()), "no certificate");
}
