//! Token forging: real signatures over whatever header and claims a test wants, fresh keys, and
//! reading a token's parts back. (Tokens of the gateway's own key: `Gw::mint`.)

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tokengate::config::RsaAlg;
use tokengate::keys::{generate_pem, Alg, SigningKey};

use super::{AUD, ISSUER};

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn b64json(v: &Value) -> String {
    B64.encode(v.to_string())
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The header tokengate itself would write for `kid`/`alg`.
pub fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": "at+jwt"})
}

/// Claims of a token that is valid for the test issuer and audience.
pub fn claims(sub: &str, scope: &str) -> Value {
    let n = now();
    json!({"iss": ISSUER, "aud": AUD, "sub": sub, "client_id": "forge-client", "scope": scope,
           "iat": n - 10, "exp": n + 600, "jti": format!("jti-{sub}-{n}")})
}

/// `header.claims` signed by `key` (the header is taken as given, so it can lie).
pub fn sign_with(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// `header.payload` from raw JSON texts, signed by `key` over exactly those bytes.
pub fn sign_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// A token with the normal header for `key`.
pub fn token(key: &SigningKey, claims: &Value) -> String {
    sign_with(key, &header(key.alg.as_str(), &key.kid), claims)
}

/// `header.claims` with an HMAC-SHA256 signature under `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64json(header), b64json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Flips one bit in the middle of the signature (re-encoded canonically).
pub fn flip_signature_bit(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    let mut raw = B64.decode(sig).expect("b64 signature");
    let i = raw.len() / 2;
    raw[i] ^= 0x01;
    format!("{input}.{}", b64(&raw))
}

/// SubjectPublicKeyInfo DER of a P-256 public key given as an uncompressed point.
pub fn p256_spki_der(point: &[u8]) -> Vec<u8> {
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    der
}

/// The uncompressed EC point of a P-256 JWK.
pub fn jwk_point(jwk: &Value) -> Vec<u8> {
    let mut p = vec![4u8];
    p.extend(B64.decode(jwk["x"].as_str().expect("x")).expect("b64 x"));
    p.extend(B64.decode(jwk["y"].as_str().expect("y")).expect("b64 y"));
    p
}

/// A freshly generated key (`alg`) as (private PEM, `SigningKey` named `kid`).
pub fn fresh_key(kid: &str, alg: Alg) -> (String, SigningKey) {
    let pem = generate_pem(alg).expect("generate key");
    let rsa = if alg == Alg::PS256 { RsaAlg::PS256 } else { RsaAlg::RS256 };
    let key = SigningKey::from_pem(kid, pem.as_bytes(), rsa).expect("generated key parses");
    (pem, key)
}

/// Decodes part `i` (0: header, 1: claims) of a JWT without checking anything.
fn part_of(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("JWT part");
    serde_json::from_slice(&B64.decode(part).expect("b64")).expect("JWT part is JSON")
}

/// The header of a JWT, unverified.
pub fn header_of(token: &str) -> Value {
    part_of(token, 0)
}

/// The claims of a JWT, unverified (for tests on the claims only).
pub fn claims_of(token: &str) -> Value {
    part_of(token, 1)
}
