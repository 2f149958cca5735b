//! Each refusal of RFC 9449 4.3, built as a real signed proof.

use super::*;
use crate::auth::keys::{generate_pem, SigningKey};
use crate::config::RsaAlg;
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const URI: &str = "https://api.example:8443/orders/7";
const TOKEN: &str = "eyJ.token.x";
const ALL: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256, Alg::PS256];

fn key(alg: Alg) -> SigningKey {
    let rsa = if alg == Alg::PS256 { RsaAlg::PS256 } else { RsaAlg::RS256 };
    SigningKey::from_pem("k", generate_pem(alg).unwrap().as_bytes(), rsa).unwrap()
}

fn proof_with(k: &SigningKey, header: Value, claims: Value) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = k.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn header(k: &SigningKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": k.alg.as_str(), "jwk": k.public_jwk()})
}

fn claims() -> Value {
    json!({"jti": "p1", "htm": "GET", "htu": URI, "iat": NOW, "ath": token_hash(TOKEN)})
}

fn expect() -> Expect<'static> {
    Expect { method: "GET", uri: URI, access_token: Some(TOKEN), algorithms: &ALL, max_age: 60, leeway: 5 }
}

fn check(p: &str) -> Result<Proven, ProofError> {
    verify_proof(p, &expect(), NOW)
}

#[test]
fn a_good_proof_passes_for_every_algorithm_and_names_its_key() {
    for alg in ALL {
        let k = key(alg);
        let got = check(&proof_with(&k, header(&k), claims())).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got.jkt, thumbprint(k.public_jwk()).unwrap());
        assert_eq!(got.jti, "p1");
    }
    // RFC 9864: "Ed25519" names EdDSA over Ed25519 exactly.
    let k = key(Alg::EdDSA);
    let mut h = header(&k);
    h["alg"] = "Ed25519".into();
    assert!(check(&proof_with(&k, h.clone(), claims())).is_ok());
    let no_eddsa = Expect { algorithms: &[Alg::ES256], ..expect() };
    assert_eq!(verify_proof(&proof_with(&k, h, claims()), &no_eddsa, NOW).unwrap_err(), ProofError::Algorithm);
}

#[test]
fn rfc7638_thumbprint_example() {
    // RFC 7638 section 3.1.
    let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
    assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

#[test]
fn every_claim_is_enforced() {
    let k = key(Alg::ES256);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        check(&proof_with(&k, header(&k), c))
    };
    assert_eq!(with(&|c| c["htm"] = "POST".into()).unwrap_err(), ProofError::WrongMethod);
    assert_eq!(with(&|c| c["htm"] = "get".into()).unwrap_err(), ProofError::WrongMethod);
    assert_eq!(with(&|c| c["htu"] = "https://api.example:8443/orders/8".into()).unwrap_err(), ProofError::WrongUri);
    assert_eq!(with(&|c| c["htu"] = "https://evil.example:8443/orders/7".into()).unwrap_err(), ProofError::WrongUri);
    assert_eq!(with(&|c| c["htu"] = "http://api.example:8443/orders/7".into()).unwrap_err(), ProofError::WrongUri);
    assert_eq!(with(&|c| c["htu"] = "/orders/7".into()).unwrap_err(), ProofError::WrongUri);
    assert!(with(&|c| c["htu"] = "HTTPS://API.example:8443/orders/7?x=1#f".into()).is_ok(), "query, fragment, case");
    assert_eq!(with(&|c| c["iat"] = (NOW - 61).into()).unwrap_err(), ProofError::Stale);
    assert!(with(&|c| c["iat"] = (NOW - 60).into()).is_ok());
    assert_eq!(with(&|c| c["iat"] = (NOW + 6).into()).unwrap_err(), ProofError::Stale);
    assert!(with(&|c| c["iat"] = (NOW + 5).into()).is_ok());
    assert_eq!(with(&|c| c["iat"] = "1800000000".into()).unwrap_err(), ProofError::Malformed);
    assert_eq!(with(&|c| c["ath"] = token_hash("another").into()).unwrap_err(), ProofError::WrongTokenHash);
    assert_eq!(with(&|c| drop(c.as_object_mut().unwrap().remove("ath"))).unwrap_err(), ProofError::WrongTokenHash);
    assert_eq!(with(&|c| drop(c.as_object_mut().unwrap().remove("jti"))).unwrap_err(), ProofError::Malformed);
    assert_eq!(with(&|c| c["jti"] = "".into()).unwrap_err(), ProofError::Malformed);
    // At the token endpoint no token is named: ath is not required.
    let p = proof_with(&k, header(&k), json!({"jti": "p", "htm": "GET", "htu": URI, "iat": NOW}));
    assert!(verify_proof(&p, &Expect { access_token: None, ..expect() }, NOW).is_ok());
}

#[test]
fn the_header_and_key_are_enforced() {
    let k = key(Alg::ES256);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut h = header(&k);
        f(&mut h);
        check(&proof_with(&k, h, claims()))
    };
    assert_eq!(with(&|h| h["typ"] = "JWT".into()).unwrap_err(), ProofError::WrongType);
    assert_eq!(with(&|h| drop(h.as_object_mut().unwrap().remove("typ"))).unwrap_err(), ProofError::WrongType);
    assert_eq!(with(&|h| h["alg"] = "RS256".into()).unwrap_err(), ProofError::BadKey, "EC key, RSA alg");
    assert_eq!(with(&|h| h["alg"] = "none".into()).unwrap_err(), ProofError::Algorithm);
    assert_eq!(with(&|h| h["alg"] = "HS256".into()).unwrap_err(), ProofError::Algorithm);
    assert_eq!(with(&|h| h["crit"] = json!(["x"])).unwrap_err(), ProofError::Malformed);
    assert_eq!(with(&|h| h["jwk"]["d"] = "AAAA".into()).unwrap_err(), ProofError::BadKey, "private member");
    assert_eq!(with(&|h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap_err(), ProofError::BadKey);
    assert_eq!(with(&|h| h["jwk"] = "key".into()).unwrap_err(), ProofError::BadKey);
    // Another key's jwk: the signature does not verify.
    let other = key(Alg::ES256);
    assert_eq!(with(&|h| h["jwk"] = other.public_jwk().clone()).unwrap_err(), ProofError::BadSignature);
    // An algorithm outside the allow-list.
    let p = proof_with(&k, header(&k), claims());
    let only_rsa = Expect { algorithms: &[Alg::RS256], ..expect() };
    assert_eq!(verify_proof(&p, &only_rsa, NOW).unwrap_err(), ProofError::Algorithm);
    // HS256 over a symmetric jwk, even when the caller lists it, never passes.
    let hs = Expect { algorithms: &[Alg::HS256], ..expect() };
    // (Refused for its algorithm before the jwk is even read.)
    let forged = format!(
        "{}.{}.{}",
        B64.encode(
            json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": B64.encode([1u8; 32])}}).to_string()
        ),
        B64.encode(claims().to_string()),
        B64.encode([0u8; 32])
    );
    assert_eq!(verify_proof(&forged, &hs, NOW).unwrap_err(), ProofError::Algorithm);
}

#[test]
fn a_cached_header_is_still_checked_against_each_call() {
    let k = key(Alg::ES256);
    let p = proof_with(&k, header(&k), claims());
    assert!(check(&p).is_ok(), "the header is now cached");
    let only_rsa = Expect { algorithms: &[Alg::RS256], ..expect() };
    assert_eq!(verify_proof(&p, &only_rsa, NOW).unwrap_err(), ProofError::Algorithm, "allow-list per call");
    // Same header, another key's signature: the cached key still verifies the signature.
    let other = key(Alg::ES256);
    let input = format!("{}.{}", B64.encode(header(&k).to_string()), B64.encode(claims().to_string()));
    let forged = format!("{input}.{}", B64.encode(other.sign(input.as_bytes()).unwrap()));
    assert_eq!(check(&forged).unwrap_err(), ProofError::BadSignature);
    // Many keys on one thread: the cache turns over, every answer stays right.
    for _ in 0..20 {
        let k = key(Alg::ES256);
        let got = check(&proof_with(&k, header(&k), claims())).unwrap();
        assert_eq!(got.jkt, thumbprint(k.public_jwk()).unwrap());
    }
    assert!(check(&p).is_ok());
}

#[test]
fn malformed_proofs_are_refused_before_any_crypto() {
    let k = key(Alg::ES256);
    let good = proof_with(&k, header(&k), claims());
    assert!(check(&good).is_ok());
    for bad in ["", "a.b", "a.b.c.d", "...", &format!("{good}x"), &good.replace('.', ". ")] {
        assert!(check(bad).is_err(), "{bad}");
    }
    let mut sig_flipped = good.clone();
    let last = sig_flipped.pop().unwrap();
    sig_flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert!(check(&sig_flipped).is_err());
    assert_eq!(check(&"a".repeat(MAX_PROOF_BYTES + 1)).unwrap_err(), ProofError::Malformed);
    // Duplicate members of the header are refused, not resolved.
    let dup = format!(
        "{}.{}",
        B64.encode(format!(r#"{{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":{}}}"#, k.public_jwk())),
        B64.encode(claims().to_string())
    );
    let sig = k.sign(dup.as_bytes()).unwrap();
    assert_eq!(check(&format!("{dup}.{}", B64.encode(sig))).unwrap_err(), ProofError::Malformed);
}

#[test]
fn uri_comparison_follows_rfc3986_normalization_only() {
    assert!(same_uri("https://a.example/p", "https://A.EXAMPLE:443/p"));
    assert!(same_uri("http://a.example:80/", "http://a.example"));
    assert!(!same_uri("https://a.example:444/p", "https://a.example/p"));
    assert!(!same_uri("https://a.example/p/", "https://a.example/p"));
    assert!(!same_uri("https://a.example/P", "https://a.example/p"));
    assert!(!same_uri("https://user@a.example/p", "https://a.example/p"));
    assert!(!same_uri("ftp://a.example/p", "ftp://a.example/p"));
    assert!(!same_uri("not a uri", "not a uri"));
}
