//! Certificate-bound access tokens at the proxy (RFC 8705 section 3): accepted only on a
//! connection presenting the same certificate, h1 and h2; `tls_client_certificate_bound_access_tokens`
//! at the token endpoint; `tls.client_auth = "required"`.

use super::*;

#[tokio::test]
async fn a_bound_token_passes_only_with_the_same_certificate_on_the_connection() {
    let pki = Pki::generate();
    let upstream = Upstream::start(Mode::Ok).await;
    let gw = Gw::start_config(&pki.config("", &upstream.url())).await;
    let token = token_for(&gw, &pki.pki_app, "pki-app").await;

    for h2 in [false, true] {
        let mut conn = mtls(&gw, Some(&pki.pki_app), h2).await;
        let r = call(&mut conn, "/api/data", &token).await;
        assert_eq!(r.status, 200, "same certificate, h2={h2}: {}", r.text());
        assert_eq!(r.text(), "upstream-ok");
        // Every request of the connection has the certificate, not only the first.
        assert_eq!(call(&mut conn, "/api/again", &token).await.status, 200, "second request, h2={h2}");
    }
    let forwarded = upstream.count();

    for h2 in [false, true] {
        let r = call(&mut mtls(&gw, None, h2).await, "/api/data", &token).await;
        assert_binding_refused(&r, &format!("no certificate, h2={h2}"));
        // The token stolen along with another valid certificate: still refused.
        let r = call(&mut mtls(&gw, Some(&pki.san_app), h2).await, "/api/data", &token).await;
        assert_binding_refused(&r, &format!("another certificate, h2={h2}"));
    }
    let r = call(&mut gw.plain_conn().await, "/api/data", &token).await;
    assert_binding_refused(&r, "plain listener");
    assert_eq!(upstream.count(), forwarded, "no refused request reached the upstream");

    // An unbound token of the same gateway still passes without any certificate.
    let r =
        token_request(&mut gw.tls(false).await, &[], &[("authorization", &basic_header("secret-app", SECRET))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = r.json()["access_token"].as_str().unwrap().to_owned();
    assert!(cnf_of(&bearer).is_null(), "secret-app's tokens are not bound");
    assert_eq!(call(&mut gw.plain_conn().await, "/api/data", &bearer).await.status, 200);
}

#[tokio::test]
async fn a_binding_client_needs_a_certificate_and_an_unbound_client_gets_bearer_tokens_even_with_one() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let basic = basic_header("bound-secret-app", SECRET);
    let r = token_request(&mut mtls(&gw, None, false).await, &[], &[("authorization", &basic)]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(r.json()["error_description"].as_str().unwrap().contains("client certificate"), "{}", r.text());

    // Any certificate the handshake accepts is what the token is bound to.
    let r = token_request(&mut mtls(&gw, Some(&pki.san_app), false).await, &[], &[("authorization", &basic)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.san_app.thumbprint());
    assert_eq!(call(&mut mtls(&gw, Some(&pki.san_app), false).await, "/api/x", &token).await.status, 200);
    assert_binding_refused(&call(&mut mtls(&gw, Some(&pki.pki_app), false).await, "/api/x", &token).await, "swapped");

    let secret = basic_header("secret-app", SECRET);
    let r = token_request(&mut mtls(&gw, Some(&pki.san_app), false).await, &[], &[("authorization", &secret)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(cnf_of(r.json()["access_token"].as_str().unwrap()).is_null());
}

#[tokio::test]
async fn required_client_auth_refuses_a_handshake_without_a_certificate() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config_mode("required", "", "echo")).await;
    assert!(refused(&gw, None).await, "no certificate: no connection");
    assert!(refused(&gw, Some(&pki.foreign)).await, "another CA's certificate: no connection");
    let token = token_for(&gw, &pki.pki_app, "pki-app").await;
    assert_eq!(call(&mut mtls(&gw, Some(&pki.pki_app), true).await, "/api/x", &token).await.status, 200);
}

#[tokio::test]
async fn a_refresh_binds_the_new_access_token_to_the_certificate_presented_at_refresh_time() {
    let pki = Pki::generate();
    let users = format!(
        "\n[[users]]\nusername = \"alice\"\npassword_hash = \"{}\"\nscopes = [\"read\"]\n\n[[clients]]\nid = \"bound-app\"\n\
         secret_hash = \"{}\"\ntls_client_certificate_bound_access_tokens = true\ngrants = [\"password\", \"refresh_token\"]\n\
         scopes = [\"read\"]\ndefault_scopes = [\"read\"]\n",
        hash_of(ALICE_PW),
        hash_of(SECRET)
    );
    let gw = Gw::start_config(&pki.config("", "echo").rest(&users)).await;
    let basic = basic_header("bound-app", SECRET);
    let post = |grant: Vec<(&'static str, String)>| {
        let mut form = grant;
        form.push(("scope", "read".into()));
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        encode_form(&pairs)
    };
    let password =
        post(vec![("grant_type", "password".into()), ("username", "alice".into()), ("password", ALICE_PW.into())]);
    let mut a = mtls(&gw, Some(&pki.pki_app), false).await;
    let r = a.send(req("POST", "/oauth2/token", &[FORM_CT, ("authorization", &basic)], full(password))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    assert_eq!(cnf_of(first["access_token"].as_str().unwrap())["x5t#S256"], pki.pki_app.thumbprint());

    let refresh = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", first["refresh_token"].as_str().unwrap().to_owned()),
    ]);
    let mut b = mtls(&gw, Some(&pki.san_app), false).await;
    let r = b.send(req("POST", "/oauth2/token", &[FORM_CT, ("authorization", &basic)], full(refresh))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(cnf_of(&second)["x5t#S256"], pki.san_app.thumbprint(), "re-bound to the refresh request's certificate");
    assert_eq!(call(&mut b, "/api/x", &second).await.status, 200);
    assert_binding_refused(&call(&mut a, "/api/x", &second).await, "the first certificate");
}
