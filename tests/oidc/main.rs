//! Smoke tests of the OpenID provider harness (`tests/support/oidc_provider.rs`): a real
//! `oidc-provider` from npm, over HTTPS with its own CA. They check the harness only (discovery,
//! JWT access tokens verified independently with `jsonwebtoken`, key rotation, the JWKS fetch
//! counter, an untrusted CA); tokengate's use of a remote JWKS is tested on top of it.
//!
//! Needs Node.js and `npm ci --prefix tests/support/oidc` (`bash .ci/run` does both).

#[path = "../common/mod.rs"]
mod common;
mod gateway;
#[path = "../support/oidc_provider.rs"]
#[allow(dead_code)]
mod oidc_provider;

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use oidc_provider::{OidcProvider, Options};

/// The kids the provider serves at its `jwks_uri` (one counted fetch).
fn served_kids(jwks: &Value) -> Vec<String> {
    let keys = jwks["keys"].as_array().expect("JWKS has keys");
    keys.iter().map(|k| k["kid"].as_str().expect("kid").to_string()).collect()
}

/// Verifies `token` against `jwks` as a resource server would; Err when its kid is not there
/// or it does not verify. Returns the claims.
fn verify(p: &OidcProvider, jwks: &Value, token: &str, alg: Algorithm) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    assert_eq!(header.alg, alg, "token alg");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"), "token typ");
    let kid = header.kid.ok_or("no kid in the header")?;
    let set: JwkSet = serde_json::from_value(jwks.clone()).map_err(|e| format!("JWKS: {e}"))?;
    let jwk = set.find(&kid).ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK {kid}: {e}"))?;
    let mut v = Validation::new(alg);
    v.set_audience(&[&p.options().audience]);
    v.set_issuer(&[p.issuer()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|d| d.claims).map_err(|e| format!("verify: {e}"))
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("JWT header").kid.expect("kid")
}

#[test]
fn discovery_names_the_issuer_and_its_jwks_uri() {
    let p = OidcProvider::start();
    let d = p.get_json("/.well-known/openid-configuration");
    assert_eq!(d["issuer"], p.issuer());
    assert_eq!(d["jwks_uri"], p.jwks_uri());
    assert_eq!(d["token_endpoint"], format!("{}/token", p.issuer()));
    assert!(d["grant_types_supported"].as_array().unwrap().contains(&"client_credentials".into()), "{d}");
    assert_eq!(p.discovery_url(), format!("{}/.well-known/openid-configuration", p.issuer()));
}

#[test]
fn token_is_a_jwt_access_token_signed_by_a_published_key() {
    let p = OidcProvider::start();
    assert_eq!(p.kids().len(), 1, "one generated key");
    let token = p.token("svc", "svc-secret", "read write");
    assert_eq!(vec![kid_of(&token)], p.kids());
    let jwks = p.get_json("/jwks");
    assert_eq!(served_kids(&jwks), p.kids());
    assert!(jwks["keys"][0].get("d").is_none(), "the JWKS publishes public keys only: {jwks}");
    let claims = verify(&p, &jwks, &token, Algorithm::RS256).unwrap();
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["iss"], p.issuer());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);

    // Only the resource server's scopes are granted; a wrong secret gets no token.
    let claims = verify(&p, &jwks, &p.token("svc", "svc-secret", "read admin"), Algorithm::RS256).unwrap();
    assert_eq!(claims["scope"], "read");
    let bad = p.token_response("svc", "wrong", "read");
    assert_eq!((bad.status, bad.json()["error"].as_str()), (401, Some("invalid_client")), "{}", bad.body);
}

#[test]
fn rotation_publishes_the_new_key_before_dropping_the_old_one() {
    let mut p = OidcProvider::start();
    let old = p.kids()[0].clone();
    let old_token = p.token("svc", "svc-secret", "read");

    let new = p.rotate_add();
    assert_ne!(new, old);
    assert_eq!(p.kids(), [new.as_str(), old.as_str()], "the new key signs, the old one stays");
    let jwks = p.get_json("/jwks");
    assert_eq!(served_kids(&jwks), [new.as_str(), old.as_str()]);
    let new_token = p.token("svc", "svc-secret", "read");
    assert_eq!(kid_of(&new_token), new);
    verify(&p, &jwks, &new_token, Algorithm::RS256).unwrap();
    verify(&p, &jwks, &old_token, Algorithm::RS256).expect("tokens of the old key still verify");

    p.rotate_drop_old();
    assert_eq!(p.kids(), [new.as_str()]);
    let jwks = p.get_json("/jwks");
    assert_eq!(served_kids(&jwks), [new.as_str()]);
    let err = verify(&p, &jwks, &old_token, Algorithm::RS256).unwrap_err();
    assert!(err.contains("is not in the JWKS"), "{err}");

    // A restart keeps the port, so the issuer, and the keys.
    let issuer = p.issuer();
    p.restart();
    assert_eq!(p.issuer(), issuer);
    assert_eq!(served_kids(&p.get_json("/jwks")), [new.as_str()]);
    let token = p.token("svc", "svc-secret", "read");
    assert_eq!(kid_of(&token), new);
    verify(&p, &p.get_json("/jwks"), &token, Algorithm::RS256).unwrap();
}

#[test]
fn jwks_hits_count_fetches_across_restarts() {
    let mut p = OidcProvider::start();
    assert_eq!(p.jwks_hits(), 0);
    p.get("/jwks");
    p.get("/jwks");
    p.get_json("/.well-known/openid-configuration");
    p.token("svc", "svc-secret", "read");
    p.kids();
    assert_eq!(p.jwks_hits(), 2, "only GETs of the JWKS count");

    // oidc-provider sends no Cache-Control on its JWKS unless asked to.
    assert_eq!(p.get("/jwks").header("cache-control"), None);
    p.set_jwks_max_age(Some(60));
    assert_eq!(p.get("/jwks").header("cache-control"), Some("max-age=60"));
    assert_eq!(p.jwks_hits(), 4);

    p.stop();
    assert!(p.request("GET", "/jwks", &[], "").is_err(), "a stopped provider answers nothing");
    assert_eq!(p.jwks_hits(), 4, "readable while stopped");
    p.restart();
    assert_eq!(p.get("/jwks").header("cache-control"), Some("max-age=60"), "kept across a restart");
    assert_eq!(p.jwks_hits(), 5, "the count goes on after a restart");
}

#[test]
fn a_client_trusting_an_unrelated_ca_refuses_the_provider() {
    let p = OidcProvider::start();
    let trusted = Arc::new(oidc_provider::client_config(&p.ca_pem_path()));
    let r = oidc_provider::https_request(p.port, trusted, "GET", "/jwks", &[], "").expect("trusted CA");
    assert_eq!(r.status, 200);

    let other = Arc::new(oidc_provider::client_config(&p.unrelated_ca_pem_path()));
    let err = oidc_provider::https_request(p.port, other, "GET", "/jwks", &[], "").unwrap_err();
    assert!(err.contains("invalid peer certificate") && err.contains("UnknownIssuer"), "{err}");
    assert_eq!(p.jwks_hits(), 1, "the refused handshake fetched nothing");
}

#[test]
fn es256_option_signs_with_an_ec_key() {
    let opts = Options { alg: "ES256", clients: vec![("other".into(), "other-secret".into())], ..Options::default() };
    let p = OidcProvider::start_with(opts);
    let token = p.token("other", "other-secret", "write");
    let jwks = p.get_json("/jwks");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    let claims = verify(&p, &jwks, &token, Algorithm::ES256).unwrap();
    assert_eq!((claims["client_id"].as_str(), claims["scope"].as_str()), (Some("other"), Some("write")));
    let new = p.rotate_add();
    assert_eq!(kid_of(&p.token("other", "other-secret", "write")), new);
}
