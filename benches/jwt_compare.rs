//! tokengate's validator beside `jsonwebtoken` 10 (aws_lc_rs backend), same keys, same tokens.
//!
//! - `compare/tokengate/<ALG>`: `Trust::validate` (no verified-token cache): size check, strict
//!   base64 and JSON, issuer/alg/typ/time/audience checks, signature; returns `Verified`.
//! - `compare/jsonwebtoken/<ALG>`: `jsonwebtoken::decode` with the key already chosen and the
//!   equivalent `Validation` (iss, aud, exp required; nbf checked; leeway 30), claims into a
//!   struct with the fields tokengate's `Verified` holds.
//! - `compare/jsonwebtoken_kid/<ALG>`: what a gateway on jsonwebtoken has to do per request:
//!   `decode_header`, the key by `kid` from a map, then `decode`.
//!
//! Keys come from one JWK per algorithm, loaded by each library its own way (tokengate parses it
//! once into aws-lc-rs objects; jsonwebtoken keeps the bytes and parses them per verification).
//!
//! Run: `cargo bench --bench jwt_compare` (add `-- RS256` or `-- compare/tokengate` to filter).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tokengate::config::RsaAlg;
use tokengate::jwt::{self, Issuer, Trust, ACCESS_TOKEN_TYP};
use tokengate::keys::{generate_pem, Alg, KeySet, SigningKey};

const AUD: &str = "api";
const LEEWAY: u64 = 30;

/// What tokengate's `Verified` carries, as jsonwebtoken would deserialize it.
#[allow(dead_code)] // read only through black_box
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    jti: Option<String>,
    exp: u64,
}

struct Case {
    alg: Alg,
    kid: String,
    token: String,
    jwt_key: DecodingKey,
    validation: Validation,
}

fn claims(iss: &str, now: u64) -> serde_json::Value {
    json!({
        "iss": iss, "sub": "user-12345", "aud": AUD, "scope": "read write",
        "client_id": "bench-client", "iat": now, "exp": now + 3600, "jti": jwt::random_id(),
    })
}

fn validation(alg: Algorithm, iss: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY;
    v.validate_nbf = true;
    v.set_issuer(&[iss]);
    v.set_audience(&[AUD]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}

fn issuer(keys: KeySet, alg: Alg) -> Issuer {
    Issuer {
        keys: keys.into(),
        algorithms: vec![alg],
        audiences: vec![AUD.into()],
        require_typ: Some(ACCESS_TOKEN_TYP.into()),
        leeway: LEEWAY,
        scope_claim: None,
    }
}

/// The cases and one `Trust` holding an issuer per algorithm.
fn fixtures() -> (Vec<Case>, Trust) {
    let now = jwt::now();
    let mut cases = Vec::new();
    let mut issuers = HashMap::new();
    for (alg, jalg) in [(Alg::RS256, Algorithm::RS256), (Alg::ES256, Algorithm::ES256), (Alg::EdDSA, Algorithm::EdDSA)]
    {
        let kid = alg.as_str().to_ascii_lowercase();
        let key = SigningKey::from_pem(&kid, generate_pem(alg).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
        let iss = format!("https://issuer.test/{kid}");
        let token = jwt::sign(&key, ACCESS_TOKEN_TYP, &claims(&iss, now)).unwrap();
        let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
        issuers.insert(iss.clone(), issuer(KeySet::from_jwks(jwks.as_bytes(), &[alg]).unwrap(), alg));
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let jwt_key = DecodingKey::from_jwk(&jwk).unwrap();
        cases.push(Case { alg, kid, token, jwt_key, validation: validation(jalg, &iss) });
    }
    // HS256: an `oct` JWK, the token signed by hand (tokengate does not sign with HMAC keys).
    let secret = [0x5au8; 32];
    let kid = "hs256".to_string();
    let iss = "https://issuer.test/hs256".to_string();
    let jwks = json!({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": B64.encode(secret)}]}).to_string();
    issuers.insert(iss.clone(), issuer(KeySet::from_jwks(jwks.as_bytes(), &[Alg::HS256]).unwrap(), Alg::HS256));
    let header = json!({"alg": "HS256", "kid": kid, "typ": ACCESS_TOKEN_TYP});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims(&iss, now).to_string()));
    let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
    let token = format!("{input}.{}", B64.encode(sig.as_ref()));
    let jwt_key = DecodingKey::from_secret(&secret);
    cases.insert(0, Case { alg: Alg::HS256, kid, token, jwt_key, validation: validation(Algorithm::HS256, &iss) });

    let trust = Trust { issuers, max_token_bytes: 8192 };
    for c in &cases {
        trust.validate(&c.token, None, now).unwrap_or_else(|e| panic!("tokengate {:?}: {e}", c.alg));
        jsonwebtoken::decode::<Claims>(&c.token, &c.jwt_key, &c.validation)
            .unwrap_or_else(|e| panic!("jsonwebtoken {:?}: {e}", c.alg));
    }
    (cases, trust)
}

fn compare(c: &mut Criterion) {
    let (cases, trust) = fixtures();
    let keys: HashMap<&str, &Case> = cases.iter().map(|c| (c.kid.as_str(), c)).collect();
    let now = jwt::now();
    let mut g = c.benchmark_group("compare");
    for case in &cases {
        let name = case.alg.as_str();
        g.bench_function(format!("tokengate/{name}"), |b| {
            b.iter(|| trust.validate(black_box(&case.token), None, now).unwrap())
        });
        g.bench_function(format!("jsonwebtoken/{name}"), |b| {
            b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&case.token), &case.jwt_key, &case.validation).unwrap())
        });
        g.bench_function(format!("jsonwebtoken_kid/{name}"), |b| {
            b.iter(|| {
                let token = black_box(&case.token);
                let header = jsonwebtoken::decode_header(token).unwrap();
                let key = keys[header.kid.as_deref().unwrap()];
                jsonwebtoken::decode::<Claims>(token, &key.jwt_key, &key.validation).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = compare
}
criterion_main!(benches);
