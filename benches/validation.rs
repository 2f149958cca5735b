//! Token validation and issuance per algorithm.
//!
//! `validate/<ALG>` is the whole `Trust::validate` (size check, base64, strict JSON parsing of
//! header and claims, issuer/alg/typ/time/audience checks, signature); `verify/<ALG>` beside it is
//! the bare aws-lc-rs signature check of the same signing input and signature, so the ratio of
//! the two is tokengate's overhead on top of the cryptography. `sign/<ALG>` is `jwt::sign`.
//!
//! Run: `cargo bench --bench validation` (add `-- jwt/validate` or `-- ES256` to filter).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tokengate::config::RsaAlg;
use tokengate::jwt::{self, Issuer, Trust, ACCESS_TOKEN_TYP};
use tokengate::keys::{pem_encode, Alg, KeySet, SigningKey};
use tokengate::token_cache::TokenCache;

/// How the bare signature check of one algorithm is done.
#[allow(clippy::large_enum_variant)] // a fixture; boxing would add a pointer chase to the timed call
enum Bare {
    Public(ParsedPublicKey),
    Hmac(hmac::Key),
}

impl Bare {
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Bare::Public(k) => k.verify_sig(msg, sig).is_ok(),
            Bare::Hmac(k) => hmac::verify(k, msg, sig).is_ok(),
        }
    }
}

/// One algorithm's fixture: a signed token, its pieces, and the keys.
struct Case {
    alg: Alg,
    iss: String,
    token: String,
    /// JWS signing input (`header.payload`) and decoded signature, for the bare check.
    input: Vec<u8>,
    sig: Vec<u8>,
    bare: Bare,
    /// None for HS256 (tokengate does not sign with HMAC keys).
    signer: Option<SigningKey>,
}

/// Claims issued at `now`: the benchmark's own clock, fixed at its start, so that a token minted
/// minutes into the run is not "issued in the future" to a `validate` called with that clock.
fn claims(iss: &str, now: u64) -> serde_json::Value {
    json!({
        "iss": iss, "sub": "user-12345", "aud": "api", "scope": "read write",
        "client_id": "bench-client", "iat": now, "exp": now + 3600, "jti": jwt::random_id(),
    })
}

fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let dot = token.rfind('.').expect("compact JWS");
    (token.as_bytes()[..dot].to_vec(), B64.decode(&token[dot + 1..]).expect("base64url signature"))
}

/// Generates a key for `alg` with aws-lc-rs (keeping the public half for the bare check) and
/// loads the same private key through tokengate.
fn asymmetric(alg: Alg) -> Case {
    let (der, public, verification): (Vec<u8>, Vec<u8>, &'static dyn signature::VerificationAlgorithm) = match alg {
        Alg::ES256 | Alg::ES384 => {
            let (s, v) = if alg == Alg::ES256 {
                (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &signature::ECDSA_P256_SHA256_FIXED)
            } else {
                (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &signature::ECDSA_P384_SHA384_FIXED)
            };
            let k = EcdsaKeyPair::generate(s).unwrap();
            (k.to_pkcs8v1().unwrap().as_ref().to_vec(), k.public_key().as_ref().to_vec(), v)
        }
        Alg::EdDSA => {
            let k = Ed25519KeyPair::generate().unwrap();
            (k.to_pkcs8v1().unwrap().as_ref().to_vec(), k.public_key().as_ref().to_vec(), &signature::ED25519)
        }
        Alg::RS256 | Alg::PS256 => {
            let k = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let v: &'static dyn signature::VerificationAlgorithm = if alg == Alg::RS256 {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            (k.as_der().unwrap().as_ref().to_vec(), k.public_key().as_ref().to_vec(), v)
        }
        _ => unreachable!("HMAC is built by hmac_case"),
    };
    let rsa_alg = if alg == Alg::PS256 { RsaAlg::PS256 } else { RsaAlg::RS256 };
    let kid = alg.as_str().to_ascii_lowercase();
    let key = SigningKey::from_pem(&kid, pem_encode("PRIVATE KEY", &der).as_bytes(), rsa_alg).unwrap();
    assert_eq!(key.alg, alg);
    let iss = format!("https://issuer.test/{kid}");
    let token = jwt::sign(&key, ACCESS_TOKEN_TYP, &claims(&iss, jwt::now())).unwrap();
    let (input, sig) = split(&token);
    let bare = Bare::Public(ParsedPublicKey::new(verification, &public).unwrap());
    Case { alg, iss, token, input, sig, bare, signer: Some(key) }
}

/// An external issuer using HS256 with an `oct` JWK; the token is signed here by hand.
fn hmac_case() -> (Case, KeySet) {
    let secret = [0x5au8; 32];
    let jwks = json!({"keys": [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": B64.encode(secret)}]}).to_string();
    let keys = KeySet::from_jwks(jwks.as_bytes(), &[Alg::HS256]).unwrap();
    let iss = "https://issuer.test/hs256".to_string();
    let header = json!({"alg": "HS256", "kid": "hs", "typ": ACCESS_TOKEN_TYP});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims(&iss, jwt::now()).to_string()));
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
    let sig = hmac::sign(&key, input.as_bytes()).as_ref().to_vec();
    let token = format!("{input}.{}", B64.encode(&sig));
    let case =
        Case { alg: Alg::HS256, iss, token, input: input.into_bytes(), sig, bare: Bare::Hmac(key), signer: None };
    (case, keys)
}

fn issuer(keys: KeySet, alg: Alg) -> Issuer {
    Issuer {
        keys: keys.into(),
        algorithms: vec![alg],
        audiences: vec!["api".into()],
        require_typ: Some(ACCESS_TOKEN_TYP.into()),
        leeway: 30,
        scope_claim: None,
    }
}

/// Every case, and one `Trust` holding all six issuers (as a gateway with several would).
fn fixtures() -> (Vec<Case>, Trust) {
    let mut cases: Vec<Case> =
        [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA].into_iter().map(asymmetric).collect();
    let mut issuers = HashMap::new();
    for c in &cases {
        let key = c.signer.as_ref().unwrap();
        let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
        issuers.insert(c.iss.clone(), issuer(KeySet::from_jwks(jwks.as_bytes(), &[c.alg]).unwrap(), c.alg));
    }
    let (hs, hs_keys) = hmac_case();
    issuers.insert(hs.iss.clone(), issuer(hs_keys, Alg::HS256));
    cases.push(hs);
    let trust = Trust { issuers, max_token_bytes: 8192 };
    for c in &cases {
        trust.validate(&c.token, None, jwt::now()).unwrap_or_else(|e| panic!("{:?}: {e}", c.alg));
        assert!(c.bare.verify(&c.input, &c.sig), "{:?}", c.alg);
    }
    (cases, trust)
}

fn validation(c: &mut Criterion) {
    let (cases, trust) = fixtures();
    let now = jwt::now();
    let mut g = c.benchmark_group("jwt");
    for case in &cases {
        let name = case.alg.as_str();
        g.bench_function(format!("validate/{name}"), |b| {
            b.iter(|| trust.validate(black_box(&case.token), None, now).unwrap())
        });
        g.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| assert!(case.bare.verify(black_box(&case.input), black_box(&case.sig))))
        });
        // The gateway's path: the verified-token cache in front of `validate`. A hit skips parsing
        // and the signature; a miss (cache of one entry, two tokens alternating) pays both plus
        // the insert.
        let cache = TokenCache::new(10_000);
        cache.validate(&trust, &case.token, None, now).unwrap();
        g.bench_function(format!("cache_hit/{name}"), |b| {
            b.iter(|| cache.validate(&trust, black_box(&case.token), None, now).unwrap())
        });
        if let Some(key) = &case.signer {
            let other = jwt::sign(key, ACCESS_TOKEN_TYP, &claims(&case.iss, now)).unwrap();
            let tiny = TokenCache::new(1);
            let pair = [case.token.as_str(), other.as_str()];
            let mut i = 0usize;
            g.bench_function(format!("cache_miss/{name}"), |b| {
                b.iter(|| {
                    i += 1;
                    tiny.validate(&trust, black_box(pair[i % 2]), None, now).unwrap()
                })
            });
        }
    }
    for case in &cases {
        let Some(key) = &case.signer else { continue };
        let cl = claims(&case.iss, now);
        g.bench_function(format!("sign/{}", case.alg.as_str()), |b| {
            b.iter(|| jwt::sign(key, ACCESS_TOKEN_TYP, black_box(&cl)).unwrap())
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
    targets = validation
}
criterion_main!(benches);
