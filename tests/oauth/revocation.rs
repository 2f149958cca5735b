//! Revocation (RFC 7009), introspection (RFC 7662) and discovery (JWKS, RFC 8414 metadata).

use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_token_is_refused_by_the_proxy() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let at = ep.cc_token("svc").await;
    let other = ep.cc_token("svc").await;
    assert_eq!(ep.api(&at).await.status, 200);
    let r = ep.form("/oauth2/revoke", Auth::Basic("svc", SECRET), &[("token", &at)]).await;
    assert_eq!(r.status, 200, "revoke: {}", r.text());
    let r = ep.api(&at).await;
    assert_eq!(r.status, 401, "revoked: {}", r.text());
    assert!(r.www_auth().contains("invalid_token"), "{}", r.www_auth());
    assert_eq!(ep.api(&other).await.status, 200, "only that jti is denied");

    // With the hint, via client_secret_post.
    let r = ep
        .form("/oauth2/revoke", Auth::Post("svc", SECRET), &[("token", &other), ("token_type_hint", "access_token")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ep.api(&other).await.status, 401);

    // Unknown tokens: 200 all the same. Bad client credentials: invalid_client.
    let r = ep.form("/oauth2/revoke", Auth::Basic("svc", SECRET), &[("token", "no-such-token")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ep.form("/oauth2/revoke", Auth::Basic("svc", "wrong"), &[("token", "no-such-token")]).await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = ep.form("/oauth2/revoke", Auth::Basic("svc", SECRET), &[]).await;
    assert_oauth_error(&r, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_kills_its_family() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let rt1 = ep.password_ok("app", "alice", ALICE_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let r = ep.refresh("app", &rt1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // Another client cannot revoke it (200, but nothing happens).
    let r = ep.form("/oauth2/revoke", Auth::Basic("app2", SECRET), &[("token", &rt2)]).await;
    assert_eq!(r.status, 200);
    let r = ep.refresh("app", &rt2).await;
    assert_eq!(r.status, 200, "another client's revocation changed nothing: {}", r.text());
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // The owner revokes the CURRENT token...
    let r = ep
        .form("/oauth2/revoke", Auth::Basic("app", SECRET), &[("token", &rt3), ("token_type_hint", "refresh_token")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_oauth_error(&ep.refresh("app", &rt3).await, 400, "invalid_grant");
    assert_oauth_error(&ep.refresh("app", &rt2).await, 400, "invalid_grant");
    assert_oauth_error(&ep.refresh("app", &rt1).await, 400, "invalid_grant");

    // ...or an earlier one of another family: the current one dies with it.
    let rt_a = ep.password_ok("app", "bob", BOB_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let r = ep.refresh("app", &rt_a).await;
    let rt_b = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = ep.form("/oauth2/revoke", Auth::Basic("app", SECRET), &[("token", &rt_a)]).await;
    assert_eq!(r.status, 200);
    assert_oauth_error(&ep.refresh("app", &rt_b).await, 400, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_reports_active_tokens_and_nothing_about_dead_ones() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let at = ep.cc_token("svc").await;
    let r = ep.form("/oauth2/introspect", Auth::Basic("app", SECRET), &[("token", &at)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sub"], "svc");
    assert_eq!(v["client_id"], "svc");
    assert_eq!(v["scope"], "read");
    assert_eq!(v["iss"], ISSUER);
    assert_eq!(v["jti"], claims_of(&at)["jti"]);
    assert!(v["exp"].as_u64().is_some_and(|e| e > now()));

    let rt = ep.password_ok("app", "alice", ALICE_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let v = ep.form("/oauth2/introspect", Auth::Basic("app", SECRET), &[("token", &rt)]).await.json();
    assert_eq!(v["active"], true, "a current refresh token: {v}");
    assert_eq!(v["sub"], "alice-sub");

    // Revoked access token, revoked refresh token, garbage: exactly {"active":false}.
    assert_eq!(ep.form("/oauth2/revoke", Auth::Basic("svc", SECRET), &[("token", &at)]).await.status, 200);
    assert_eq!(ep.form("/oauth2/revoke", Auth::Basic("app", SECRET), &[("token", &rt)]).await.status, 200);
    for t in [at.as_str(), rt.as_str(), "garbage", &flip_signature_bit(&ep.cc_token("svc").await)] {
        let r = ep.form("/oauth2/introspect", Auth::Basic("app", SECRET), &[("token", t)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({"active": false}), "{}", r.text());
    }

    // A client without introspect = true, and bad credentials.
    let fresh = ep.cc_token("svc").await;
    let r = ep.form("/oauth2/introspect", Auth::Basic("svc", SECRET), &[("token", &fresh)]).await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    assert!(!r.text().contains("\"active\""), "{}", r.text());
    let r = ep.form("/oauth2/introspect", Auth::Basic("app", "wrong"), &[("token", &fresh)]).await;
    assert_oauth_error(&r, 401, "invalid_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_serves_public_keys_only_and_complete_metadata() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let r = ep.send("GET", "/.well-known/jwks.json", &[], "").await;
    assert_eq!(r.status, 200);
    let jwks = r.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    for k in keys {
        for f in ["kid", "alg", "use", "kty"] {
            assert!(k.get(f).is_some_and(|v| v.is_string()), "{f} in {k}");
        }
        assert_eq!(k["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(k.get(private).is_none(), "private part {private} served: {k}");
        }
    }
    assert!(keys.iter().any(|k| k["kid"] == "k1"));
    // Discovery is public on the plain listener as well.
    let mut plain = Conn::plain(ep.plain).await;
    let r = plain.send(req("GET", "/.well-known/jwks.json", &[], empty())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), jwks);

    let r = ep.send("GET", "/.well-known/oauth-authorization-server", &[], "").await;
    assert_eq!(r.status, 200);
    let m = r.json();
    assert_eq!(m["issuer"], ISSUER);
    assert_eq!(m["token_endpoint"], TOKEN_URL);
    assert_eq!(m["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(m["revocation_endpoint"], format!("{ISSUER}/oauth2/revoke"));
    assert_eq!(m["introspection_endpoint"], format!("{ISSUER}/oauth2/introspect"));
    let list = |k: &str| -> Vec<String> {
        m[k].as_array().unwrap_or_else(|| panic!("{k} in {m}")).iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let mut grants = list("grant_types_supported");
    grants.sort();
    assert_eq!(grants, ["client_credentials", "password", "refresh_token"]);
    let methods = list("token_endpoint_auth_methods_supported");
    for want in ["client_secret_basic", "client_secret_post", "private_key_jwt"] {
        assert!(methods.iter().any(|m| m == want), "{want} in {methods:?}");
    }
    let mut scopes = list("scopes_supported");
    scopes.sort();
    assert_eq!(scopes, ["admin", "openid", "read", "write"]);
}

/// The operator's lever (admin listener): `POST /revoke?client_id=..&sub=..` ends an app's access
/// for one user, or for everyone, without a password change; other users and apps keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revokes_an_apps_access_per_user_or_whole() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let rt = |v: Value| v["refresh_token"].as_str().unwrap().to_owned();
    let alice = rt(ep.password_ok("app", "alice", ALICE_PW, None).await);
    let bob = rt(ep.password_ok("app", "bob", BOB_PW, None).await);
    let admin = gw.admin_token();
    let post = |q: &str| {
        let path = format!("/revoke?{q}");
        let (addr, admin) = (gw.admin, admin.clone());
        async move { admin_post(addr, &path, Some(&admin)).await }
    };

    let r = post("client_id=app&sub=alice-sub").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(serde_json::from_str::<Value>(&r.body_text()).unwrap()["revoked"], 1);
    assert_oauth_error(&ep.refresh("app", &alice).await, 400, "invalid_grant");
    let r = ep.refresh("app", &bob).await;
    assert_eq!(r.status, 200, "bob's grant is untouched: {}", r.text());
    let bob = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // Alice can log in again with the same password.
    let again = rt(ep.password_ok("app", "alice", ALICE_PW, None).await);

    let r = post("client_id=app").await;
    assert_eq!(serde_json::from_str::<Value>(&r.body_text()).unwrap()["revoked"], 2, "{}", r.body_text());
    assert_oauth_error(&ep.refresh("app", &bob).await, 400, "invalid_grant");
    assert_oauth_error(&ep.refresh("app", &again).await, 400, "invalid_grant");

    assert_eq!(post("sub=x").await.status, 400, "client_id is required");
    assert_eq!(gw.admin_get("/revoke?client_id=app").await.0, 405);
}

/// `POST /revoke` acts on every instance sharing the state, so it needs a token of our own
/// issuer with `admin.scope`: every other credential is refused per RFC 6750 and revokes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revoke_refuses_anything_but_an_admin_token_of_our_own_issuer() {
    const FOREIGN: &str = "https://idp.foreign.test";
    let (_, foreign) = fresh_key("f1", tokengate::keys::Alg::ES256);
    let aux = tempfile::tempdir().unwrap();
    let jwks = aux.path().join("foreign.jwks");
    write_json(&jwks, &json!({ "keys": [foreign.public_jwk().clone()] }));
    let issuers = format!(
        "\n[[issuers]]\nissuer = \"{FOREIGN}\"\njwks = \"{}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"ES256\"]\n",
        jwks.display()
    );
    let gw = start(&Opts { tables: tables() + &issuers, ..Opts::default() }).await;
    let ep = Ep::of(&gw);
    let alice = ep.password_ok("app", "alice", ALICE_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let path = "/revoke?client_id=app";
    let admin_claims = |iss: &str, exp: u64| {
        let mut c = claims("operator", ADMIN_SCOPE);
        c["iss"] = json!(iss);
        c["exp"] = json!(exp);
        c
    };

    // No credentials, or another scheme: 401 with a bare challenge (RFC 6750 3.1).
    for (name, r) in [
        ("no token", gw.admin_post(path, None).await),
        (
            "basic",
            raw(
                gw.admin,
                &format!(
                    "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    basic_header("app", SECRET)
                ),
            )
            .await,
        ),
    ] {
        assert_eq!(r.status, 401, "{name}: {}", r.body_text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"tokengate\""), "{name}");
    }

    // A valid token of ours without the admin scope: 403 naming the scope.
    let r = gw.admin_post(path, Some(&gw.mint("operator", "admin read write"))).await;
    assert_eq!(r.status, 403, "{}", r.body_text());
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(www.contains("error=\"insufficient_scope\"") && www.contains("scope=\"tokengate:admin\""), "{www}");

    // Expired, foreign issuer (trusted by the proxy), our issuer signed by a foreign key,
    // and a tampered signature: 401 invalid_token.
    let k1 = gw.key("k1");
    let foreign_token = token(&foreign, &admin_claims(FOREIGN, now() + 600));
    assert_eq!(gw.get_with("/api/x", &foreign_token).await.status, 200, "the foreign issuer is trusted by the proxy");
    let forged_header = header("ES256", "k1");
    for (name, tok) in [
        ("expired", token(&k1, &admin_claims(ISSUER, now() - 3600))),
        ("foreign issuer", foreign_token),
        ("our iss, foreign key", sign_with(&foreign, &forged_header, &admin_claims(ISSUER, now() + 600))),
        ("tampered", flip_signature_bit(&gw.admin_token())),
    ] {
        let r = gw.admin_post(path, Some(&tok)).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body_text());
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.contains("error=\"invalid_token\""), "{name}: {www}");
        assert!(!r.body_text().contains(&tok) && !www.contains(&tok), "{name}: the token is echoed");
    }

    // A token in the query string is refused (it would land in logs), alone or with the header.
    let admin = gw.admin_token();
    let in_query = format!("{path}&access_token={admin}");
    for (name, r) in [
        ("query", gw.admin_post(&in_query, None).await),
        ("query and header", gw.admin_post(&in_query, Some(&admin)).await),
    ] {
        assert_eq!(r.status, 400, "{name}: {}", r.body_text());
        assert!(r.header("www-authenticate").unwrap_or_default().contains("invalid_request"), "{name}");
    }

    // Nothing was revoked by any refused request; the admin token then does it.
    let r = ep.refresh("app", &alice).await;
    assert_eq!(r.status, 200, "a refused admin request revoked something: {}", r.text());
    let r = gw.admin_post(path, Some(&admin)).await;
    assert_eq!((r.status, r.json()["revoked"].as_u64()), (200, Some(1)), "{}", r.body_text());
    // Reading endpoints stay open.
    for p in ["/healthz", "/readyz", "/reload", "/metrics"] {
        assert_eq!(gw.admin_get(p).await.0, 200, "{p}");
    }
}
