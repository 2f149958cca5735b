//! The grants through an independent client (the `oauth2` crate), and the tokens they issue
//! checked with an independent verifier (`jsonwebtoken` against the served JWKS).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use oauth2::basic::BasicErrorResponseType as E;
use oauth2::{ResourceOwnerPassword, ResourceOwnerUsername, Scope, TokenResponse};

use crate::common::*;
use crate::support::*;

fn scopes_of(t: &TokenResp) -> Vec<String> {
    let mut s: Vec<String> = t.scopes().expect("scope in the answer").iter().map(|s| s.to_string()).collect();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_token_is_an_rfc9068_jwt_that_verifies_and_opens_the_proxy() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let client = ep.oauth2_client("svc", Some(SECRET));
    let tok = client
        .exchange_client_credentials()
        .add_scope(Scope::new("write".into()))
        .request_async(&http)
        .await
        .expect("client_credentials via the oauth2 crate");
    assert!(tok.refresh_token().is_none(), "no refresh token for client_credentials (RFC 6749 4.4.3)");
    assert!(tok.extra_fields().id_token.is_none());
    assert_eq!(tok.token_type(), &oauth2::basic::BasicTokenType::Bearer);
    assert_eq!(scopes_of(&tok), ["write"]);
    let at = tok.access_token().secret().clone();

    let jwks = ep.jwks().await;
    let (header, claims) = verify_with_jwks(&jwks, &at, AUD);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some("k1"));
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["scope"], "write");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(iat.abs_diff(now()) <= 5, "iat is now");
    assert!(exp > iat && exp - iat <= 900, "exp within access_ttl_secs");
    let jti = claims["jti"].as_str().expect("jti");
    assert!(jti.len() >= 22, "jti of >= 128 bits: {jti}");
    assert!(URL_SAFE_NO_PAD.decode(jti).expect("base64url jti").len() >= 16, "jti of >= 128 bits");

    let r = ep.api(&at).await;
    assert_eq!(r.status, 200, "the proxy accepts our own token: {}", r.text());

    // A second token has another jti.
    let at2 = ep.cc_token("svc").await;
    assert_ne!(claims_of(&at2)["jti"], claims["jti"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_answers_are_not_cacheable() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let r = ep.token(Auth::Basic("svc", SECRET), &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().is_some_and(|e| e > 0 && e <= 900));
    assert!(body.get("refresh_token").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_scope_subset_default_and_invalid_scope() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let client = ep.oauth2_client("svc", Some(SECRET));

    let tok = client
        .exchange_client_credentials()
        .add_scope(Scope::new("read".into()))
        .add_scope(Scope::new("write".into()))
        .request_async(&http)
        .await
        .expect("the full set");
    assert_eq!(scopes_of(&tok), ["read", "write"]);

    let tok = client.exchange_client_credentials().request_async(&http).await.expect("no scope");
    assert_eq!(scopes_of(&tok), ["read"], "absent scope -> default_scopes");
    assert_eq!(claims_of(tok.access_token().secret())["scope"], "read");

    for bad in [vec!["read", "admin"], vec!["nope"]] {
        let mut req = client.exchange_client_credentials();
        for s in &bad {
            req = req.add_scope(Scope::new(s.to_string()));
        }
        let err = req.request_async(&http).await.expect_err("scope beyond the client's");
        assert_eq!(server_error(&err), E::InvalidScope, "{bad:?}");
    }
    // Over the wire: exact status and error code.
    let r =
        ep.token(Auth::Basic("svc", SECRET), &[("grant_type", "client_credentials"), ("scope", "read admin")]).await;
    assert_oauth_error(&r, 400, "invalid_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_issues_access_and_refresh_with_user_sub_and_scope() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let client = ep.oauth2_client("app", Some(SECRET));
    let jwks = ep.jwks().await;

    let tok = client
        .exchange_password(&ResourceOwnerUsername::new("alice".into()), &ResourceOwnerPassword::new(ALICE_PW.into()))
        .add_scope(Scope::new("read".into()))
        .add_scope(Scope::new("write".into()))
        .request_async(&http)
        .await
        .expect("password grant via the oauth2 crate");
    let rt = tok.refresh_token().expect("a refresh token").secret();
    assert!(rt.len() >= 43, "256-bit refresh token: {rt}");
    assert!(tok.extra_fields().id_token.is_none(), "no id_token without openid");
    let (_, claims) = verify_with_jwks(&jwks, tok.access_token().secret(), AUD);
    assert_eq!(claims["sub"], "alice-sub", "the user's configured sub");
    assert_eq!(claims["client_id"], "app");
    assert_eq!(claims["scope"], "read write");
    assert_eq!(ep.api(tok.access_token().secret()).await.status, 200);

    // bob has no `sub`: his username is the subject; absent scope -> client default within user's.
    let tok = client
        .exchange_password(&ResourceOwnerUsername::new("bob".into()), &ResourceOwnerPassword::new(BOB_PW.into()))
        .request_async(&http)
        .await
        .expect("bob");
    let c = claims_of(tok.access_token().secret());
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["scope"], "read");

    // Scope must be within client ∩ user: bob lacks write, alice lacks admin, svc-only scopes fail.
    for (user, pw, scope) in [("bob", BOB_PW, "write"), ("alice", ALICE_PW, "admin"), ("alice", ALICE_PW, "read x")] {
        let (u, p) = (ResourceOwnerUsername::new(user.into()), ResourceOwnerPassword::new(pw.into()));
        let mut req = client.exchange_password(&u, &p);
        for s in scope.split(' ') {
            req = req.add_scope(Scope::new(s.into()));
        }
        let err = req.request_async(&http).await.expect_err("scope outside client ∩ user");
        assert_eq!(server_error(&err), E::InvalidScope, "{user} {scope}");
    }
    let tok = client
        .exchange_password(&ResourceOwnerUsername::new("bob".into()), &ResourceOwnerPassword::new(BOB_PW.into()))
        .add_scope(Scope::new("admin".into()))
        .request_async(&http)
        .await
        .expect("bob may get admin through app");
    assert_eq!(claims_of(tok.access_token().secret())["scope"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_adds_an_id_token_that_the_proxy_refuses_as_access_token() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let tok = ep
        .oauth2_client("app", Some(SECRET))
        .exchange_password(&ResourceOwnerUsername::new("alice".into()), &ResourceOwnerPassword::new(ALICE_PW.into()))
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("read".into()))
        .request_async(&http)
        .await
        .expect("password grant with openid");
    let id_token = tok.extra_fields().id_token.clone().expect("id_token with openid");
    let jwks = ep.jwks().await;
    let (header, claims) = verify_with_jwks(&jwks, &id_token, "app");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(claims["aud"], "app", "ID token audience is the client");
    assert_eq!(claims["sub"], "alice-sub");
    assert_eq!(claims["iss"], ISSUER);

    let r = ep.api(&id_token).await;
    assert_eq!(r.status, 401, "an ID token is not an access token: {}", r.text());
    assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());
    assert_eq!(ep.api(tok.access_token().secret()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_refresh_grant_gets_no_refresh_token() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let tok = ep
        .oauth2_client("norefresh", Some(SECRET))
        .exchange_password(&ResourceOwnerUsername::new("alice".into()), &ResourceOwnerPassword::new(ALICE_PW.into()))
        .request_async(&http)
        .await
        .expect("password grant");
    assert!(tok.refresh_token().is_none(), "client lacks the refresh_token grant");
    assert_eq!(ep.api(tok.access_token().secret()).await.status, 200);
}
