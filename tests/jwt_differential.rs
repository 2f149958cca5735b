//! Differential test: tokengate's own JWT validator against `jsonwebtoken` 10 (aws_lc_rs backend).
//!
//! Every case is a compact JWS made with keys of every algorithm tokengate accepts (HS256, HS384,
//! HS512, RS256, PS256, ES256, ES384, EdDSA), valid or mutated (bit flips in each segment, swapped
//! signatures and kids, `alg` changes including `none` and HMAC keyed with a public key, truncated
//! segments, `=` padding, foreign characters, whitespace, duplicate members, `crit`, `typ`
//! variants, time claims, audience and issuer, nested junk, extra dots, size). Each goes through
//! `Trust::validate` and through `jsonwebtoken::decode` behind the key lookup a gateway built on
//! jsonwebtoken would need (`decode_header`, key by `kid`, that key's one algorithm) with the
//! equivalent `Validation` (iss, aud, exp required; nbf checked; same leeway).
//!
//! The rules the test enforces:
//! - Signature verdicts agree on every case that names a known key: tokengate's `VerifyKey` and
//!   `jsonwebtoken::crypto::verify` over the same signing input, signature and algorithm.
//! - Tokengate never accepts what jsonwebtoken rejects for a signature reason (bad signature,
//!   algorithm not allowed for the key, unknown key).
//! - Every other disagreement is explained by a named rule, found by inspecting the token itself
//!   (not tokengate's answer), and tokengate's error must be the one that rule produces. A
//!   disagreement no rule explains fails the test.
//! - The deterministic sweep must see every named rule at least once and every valid token
//!   accepted by both, so the test also fails if tokengate loses one of its extra checks.
//!
//! Run: `cargo test --locked --test jwt_differential -- --nocapture` prints the per-rule counts.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use tokengate::config::RsaAlg;
use tokengate::jwt::{self, Issuer, TokenError, Trust, ACCESS_TOKEN_TYP};
use tokengate::keys::{generate_pem, Alg, KeySet, SigningKey};

const ISS: &str = "https://issuer.test";
const AUD: &str = "api";
const LEEWAY: u64 = 30;
const MAX_BYTES: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Keys: one per algorithm (RSA: one key under two kids, RS256 and PS256; ES256: two keys).
// ---------------------------------------------------------------------------------------------

enum Signer {
    Asym(SigningKey),
    Hmac(Vec<u8>),
}

struct Key {
    kid: &'static str,
    alg: Alg,
    signer: Signer,
    /// Public JWK (asymmetric) or `oct` JWK (HMAC), as both validators load it.
    jwk: Value,
    jwt_key: DecodingKey,
    jwt_alg: Algorithm,
}

struct Fixture {
    keys: Vec<Key>,
    trust: Trust,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

fn jwt_alg(alg: Alg) -> Algorithm {
    match alg {
        Alg::ES256 => Algorithm::ES256,
        Alg::ES384 => Algorithm::ES384,
        Alg::RS256 => Algorithm::RS256,
        Alg::PS256 => Algorithm::PS256,
        Alg::EdDSA => Algorithm::EdDSA,
        Alg::HS256 => Algorithm::HS256,
        Alg::HS384 => Algorithm::HS384,
        Alg::HS512 => Algorithm::HS512,
    }
}

fn asym(kid: &'static str, pem: &str, rsa_alg: RsaAlg) -> Key {
    let key = SigningKey::from_pem(kid, pem.as_bytes(), rsa_alg).unwrap();
    let jwk = key.public_jwk().clone();
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let jwt_key = DecodingKey::from_jwk(&parsed).unwrap();
    Key { kid, alg: key.alg, jwt_alg: jwt_alg(key.alg), signer: Signer::Asym(key), jwk, jwt_key }
}

fn hmac_key(kid: &'static str, alg: Alg, len: usize) -> Key {
    let secret: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(kid.len() as u8)).collect();
    let jwk = json!({"kty": "oct", "kid": kid, "alg": alg.as_str(), "k": b64(&secret)});
    let jwt_key = DecodingKey::from_secret(&secret);
    Key { kid, alg, jwt_alg: jwt_alg(alg), signer: Signer::Hmac(secret), jwk, jwt_key }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Generated once per test run: RSA key generation is slow in debug builds.
        let rsa = generate_pem(Alg::RS256).unwrap();
        let keys = vec![
            hmac_key("hs256", Alg::HS256, 32),
            hmac_key("hs384", Alg::HS384, 48),
            hmac_key("hs512", Alg::HS512, 64),
            asym("rs256", &rsa, RsaAlg::RS256),
            asym("ps256", &rsa, RsaAlg::PS256),
            asym("es256", &generate_pem(Alg::ES256).unwrap(), RsaAlg::RS256),
            asym("es256b", &generate_pem(Alg::ES256).unwrap(), RsaAlg::RS256),
            asym("es384", &generate_pem(Alg::ES384).unwrap(), RsaAlg::RS256),
            asym("eddsa", &generate_pem(Alg::EdDSA).unwrap(), RsaAlg::RS256),
        ];
        let all = [Alg::HS256, Alg::HS384, Alg::HS512, Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];
        for (k, want) in keys.iter().zip([
            Alg::HS256,
            Alg::HS384,
            Alg::HS512,
            Alg::RS256,
            Alg::PS256,
            Alg::ES256,
            Alg::ES256,
            Alg::ES384,
            Alg::EdDSA,
        ]) {
            assert_eq!(k.alg, want, "{}", k.kid);
        }
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string();
        let issuer = Issuer {
            keys: KeySet::from_jwks(jwks.as_bytes(), &all).unwrap().into(),
            algorithms: all.to_vec(),
            audiences: vec![AUD.into()],
            require_typ: Some(ACCESS_TOKEN_TYP.into()),
            leeway: LEEWAY,
            scope_claim: None,
        };
        let trust = Trust { issuers: HashMap::from([(ISS.to_string(), issuer)]), max_token_bytes: MAX_BYTES };
        Fixture { keys, trust }
    })
}

impl Fixture {
    fn key(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

fn hmac_sign(alg: Alg, secret: &[u8], input: &str) -> Vec<u8> {
    let a = match alg {
        Alg::HS384 => hmac::HMAC_SHA384,
        Alg::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    hmac::sign(&hmac::Key::new(a, secret), input.as_bytes()).as_ref().to_vec()
}

/// The key's own signature of `input`, base64url.
fn sign(k: &Key, input: &str) -> String {
    b64(match &k.signer {
        Signer::Asym(s) => s.sign(input.as_bytes()).unwrap(),
        Signer::Hmac(secret) => hmac_sign(k.alg, secret, input),
    })
}

/// `header.payload.signature` over raw JSON texts (which may be anything: duplicates, junk).
fn signed(k: &Key, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = sign(k, &input);
    format!("{input}.{sig}")
}

fn header_of(k: &Key) -> Value {
    json!({"alg": k.alg.as_str(), "kid": k.kid, "typ": ACCESS_TOKEN_TYP})
}

fn claims_at(now: u64) -> Value {
    json!({
        "iss": ISS, "sub": "user-1", "aud": AUD, "scope": "read write", "client_id": "app",
        "iat": now - 5, "exp": now + 600, "jti": "j-1",
    })
}

/// `v` (an object) serialized with `extra` raw members appended before its closing brace.
fn with_raw(v: &Value, extra: &str) -> String {
    let s = v.to_string();
    if s == "{}" {
        format!("{{{extra}}}")
    } else {
        format!("{},{extra}}}", &s[..s.len() - 1])
    }
}

fn set(v: &Value, name: &str, value: Value) -> Value {
    let mut v = v.clone();
    v[name] = value;
    v
}

fn del(v: &Value, name: &str) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove(name);
    v
}

/// Secrets a confused verifier might use as an HMAC key for an asymmetric key's public half.
fn public_material(k: &Key) -> Vec<Vec<u8>> {
    let j = &k.jwk;
    let field = |n: &str| j.get(n).and_then(Value::as_str).map(|s| B64.decode(s).unwrap()).unwrap_or_default();
    let raw: Vec<u8> = match j["kty"].as_str() {
        Some("RSA") => field("n"),
        Some("EC") => [vec![4u8], field("x"), field("y")].concat(),
        _ => field("x"),
    };
    let pem = tokengate::keys::pem_encode("PUBLIC KEY", &raw);
    vec![raw, j.to_string().into_bytes(), pem.into_bytes()]
}

// ---------------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------------

/// Mutation families; the index picks one, `a` and `b` its variant and position.
const KINDS: &[&str] = &[
    "valid",
    "bitflip/header-text",
    "bitflip/payload-text",
    "bitflip/signature-text",
    "bitflip/header-bytes",
    "bitflip/payload-bytes",
    "bitflip/signature-bytes",
    "swap/signature-of-other-token",
    "swap/signed-by-other-key",
    "swap/kid-of-other-key",
    "alg/change",
    "alg/none",
    "alg/confusion-hmac-with-public-key",
    "b64/truncate",
    "b64/padding",
    "b64/foreign-char",
    "whitespace/around-token",
    "whitespace/inside-json",
    "json/duplicate-header-member",
    "json/duplicate-claim-member",
    "header/crit",
    "header/typ",
    "claims/iat",
    "claims/exp",
    "claims/nbf",
    "claims/aud",
    "claims/iss",
    "claims/member-type",
    "claims/missing",
    "json/nested-junk-claim",
    "json/junk-header-member",
    "json/not-an-object",
    "json/strings",
    "dots",
    "kid",
    "size",
    "signature/length",
];

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn segments(t: &str) -> Vec<String> {
    t.split('.').map(str::to_owned).collect()
}

/// Flips one of the 6 bits a base64url character carries (stays in the alphabet).
fn flip_char(seg: &str, a: usize, b: usize) -> String {
    let mut bytes = seg.as_bytes().to_vec();
    if bytes.is_empty() {
        return "A".into();
    }
    let i = a % bytes.len();
    let idx = B64URL.iter().position(|c| *c == bytes[i]).unwrap_or(0);
    bytes[i] = B64URL[idx ^ (1 << (b % 6))];
    String::from_utf8(bytes).unwrap()
}

fn flip_bytes(seg: &str, a: usize) -> String {
    let mut bytes = B64.decode(seg).unwrap();
    let bit = a % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    b64(bytes)
}

/// The case `kind` for key `ki`, variant `a`/`b`: (kind name, token).
fn make_case(fx: &Fixture, ki: usize, kind: usize, a: usize, b: usize, now: u64) -> (&'static str, String) {
    let n = fx.keys.len();
    let k = &fx.keys[ki % n];
    let other = &fx.keys[(ki + 1 + a % (n - 1)) % n];
    let h = header_of(k);
    let c = claims_at(now);
    let hs = h.to_string();
    let cs = c.to_string();
    let valid = signed(k, &hs, &cs);
    let seg = segments(&valid);
    let name = KINDS[kind % KINDS.len()];
    let tok = match name {
        "valid" => valid,
        "bitflip/header-text" => format!("{}.{}.{}", flip_char(&seg[0], a, b), seg[1], seg[2]),
        "bitflip/payload-text" => format!("{}.{}.{}", seg[0], flip_char(&seg[1], a, b), seg[2]),
        "bitflip/signature-text" => format!("{}.{}.{}", seg[0], seg[1], flip_char(&seg[2], a, b)),
        "bitflip/header-bytes" => format!("{}.{}.{}", flip_bytes(&seg[0], a), seg[1], seg[2]),
        "bitflip/payload-bytes" => format!("{}.{}.{}", seg[0], flip_bytes(&seg[1], a), seg[2]),
        "bitflip/signature-bytes" => format!("{}.{}.{}", seg[0], seg[1], flip_bytes(&seg[2], a)),
        "swap/signature-of-other-token" => {
            let theirs = signed(other, &header_of(other).to_string(), &cs);
            let sig = if b % 2 == 0 { segments(&theirs)[2].clone() } else { segments(&signed(k, &hs, &cs))[2].clone() };
            // b odd: our own key's signature of another (fresh) token with a different jti.
            let c2 = set(&c, "jti", json!(format!("j-{a}")));
            let body = if b % 2 == 0 { cs.clone() } else { c2.to_string() };
            format!("{}.{}.{sig}", seg[0], b64(body))
        }
        "swap/signed-by-other-key" => signed(other, &hs, &cs),
        "swap/kid-of-other-key" => {
            let h2 = if b % 2 == 0 { set(&h, "kid", json!(other.kid)) } else { header_of(other) };
            signed(k, &h2.to_string(), &cs)
        }
        "alg/change" => {
            const NAMES: &[&str] = &[
                "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA", "RS384", "RS512", "PS384",
                "PS512", "ES512", "none", "None", "NONE", "hs256", "es256", "", "ED25519", "HS256 ",
            ];
            let alg = NAMES[a % NAMES.len()];
            let h2 = set(&h, "alg", json!(alg)).to_string();
            let input = format!("{}.{}", b64(&h2), seg[1]);
            match b % 4 {
                0 => format!("{input}.{}", seg[2]),
                1 => format!("{input}."),
                2 => format!("{input}.{}", sign(k, &input)),
                // HMAC under the named algorithm with this key's own material.
                _ => {
                    let secret = match &k.signer {
                        Signer::Hmac(s) => s.clone(),
                        Signer::Asym(_) => public_material(k).swap_remove(a % 3),
                    };
                    let hm = Alg::parse(alg).filter(|x| matches!(x, Alg::HS384 | Alg::HS512)).unwrap_or(Alg::HS256);
                    format!("{input}.{}", b64(hmac_sign(hm, &secret, &input)))
                }
            }
        }
        "alg/none" => {
            let alg = ["none", "None", "NONE", "nOnE"][a % 4];
            let h2 = if b % 2 == 0 { set(&h, "alg", json!(alg)) } else { json!({"alg": alg, "typ": "at+jwt"}) };
            let input = format!("{}.{}", b64(h2.to_string()), seg[1]);
            if b % 3 == 0 {
                format!("{input}.{}", seg[2])
            } else {
                format!("{input}.")
            }
        }
        "alg/confusion-hmac-with-public-key" => {
            // Only asymmetric keys have a public half to abuse: pick one.
            let asym_keys: Vec<&Key> = fx.keys.iter().filter(|k| matches!(k.signer, Signer::Asym(_))).collect();
            let victim = asym_keys[ki % asym_keys.len()];
            let hm = [Alg::HS256, Alg::HS384, Alg::HS512][b % 3];
            let h2 = json!({"alg": hm.as_str(), "kid": victim.kid, "typ": ACCESS_TOKEN_TYP}).to_string();
            let input = format!("{}.{}", b64(h2), seg[1]);
            let material = public_material(victim);
            format!("{input}.{}", b64(hmac_sign(hm, &material[a % material.len()], &input)))
        }
        "b64/truncate" => {
            let mut s = seg.clone();
            let i = b % 3;
            let cut = 1 + a % s[i].len().max(1);
            let keep = s[i].len().saturating_sub(cut);
            s[i].truncate(keep);
            s.join(".")
        }
        "b64/padding" => {
            let i = b % 3;
            let pad = "=".repeat(1 + a % 2);
            if i == 2 {
                format!("{}.{}.{}{pad}", seg[0], seg[1], seg[2])
            } else {
                // Re-signed, so that only the padding rule can refuse it.
                let mut s = seg.clone();
                s[i].push_str(&pad);
                let input = format!("{}.{}", s[0], s[1]);
                format!("{input}.{}", sign(k, &input))
            }
        }
        "b64/foreign-char" => {
            const FOREIGN: &[char] = &['+', '/', '!', '*', ' ', '\n', '\t', '%', '~', '=', '\u{e9}', '\0'];
            let ch = FOREIGN[a % FOREIGN.len()];
            let i = b % 3;
            let mut s = seg.clone();
            let at = (a / FOREIGN.len()) % (s[i].len() + 1);
            s[i].insert(at, ch);
            if i == 2 {
                s.join(".")
            } else {
                let input = format!("{}.{}", s[0], s[1]);
                format!("{input}.{}", sign(k, &input))
            }
        }
        "whitespace/around-token" => {
            let forms = [" {}", "{} ", "{}\n", "\t{}", "Bearer {}", "{}\r\n", "{}\u{a0}"];
            forms[a % forms.len()].replace("{}", &valid)
        }
        "whitespace/inside-json" => {
            let hp = serde_json::to_string_pretty(&h).unwrap();
            let cp = serde_json::to_string_pretty(&c).unwrap();
            match a % 4 {
                0 => signed(k, &hp, &cs),
                1 => signed(k, &hs, &cp),
                2 => signed(k, &format!(" \n\t{hs}\r\n "), &format!("  {cs}\n")),
                _ => signed(k, &hp, &cp),
            }
        }
        "json/duplicate-header-member" => {
            let dups = [
                format!("\"alg\":\"{}\"", k.alg.as_str()),
                "\"alg\":\"none\"".to_string(),
                format!("\"alg\":\"{}\"", other.alg.as_str()),
                "\"typ\":\"at+jwt\"".to_string(),
                "\"typ\":\"JWT\"".to_string(),
                format!("\"kid\":\"{}\"", k.kid),
                format!("\"kid\":\"{}\"", other.kid),
                "\"x\":\"1\",\"x\":\"2\"".to_string(),
                "\"\\u0061lg\":\"none\"".to_string(),
                "\"cty\":\"a\",\"cty\":\"b\"".to_string(),
            ];
            signed(k, &with_raw(&h, &dups[a % dups.len()]), &cs)
        }
        "json/duplicate-claim-member" => {
            let dups = [
                format!("\"exp\":{}", now + 600),
                format!("\"exp\":{}", now - 3600),
                format!("\"iss\":\"{ISS}\""),
                "\"iss\":\"https://evil.test\"".to_string(),
                format!("\"aud\":\"{AUD}\""),
                "\"aud\":\"other\"".to_string(),
                "\"sub\":\"admin\"".to_string(),
                format!("\"nbf\":{}", now - 5),
                format!("\"nbf\":{}", now - 10),
                format!("\"iat\":{}", now - 5),
                format!("\"iat\":{}", now + 7200),
                "\"jti\":\"j-2\"".to_string(),
                "\"scope\":\"admin\"".to_string(),
                "\"client_id\":\"other\"".to_string(),
                "\"x\":1,\"x\":2".to_string(),
                format!("\"\\u0065xp\":{}", now + 600),
                "\"\\u0073cope\":\"admin\"".to_string(),
            ];
            let mut extra = dups[a % dups.len()].clone();
            if extra.starts_with("\"nbf\"") {
                // nbf is not in the base claims: put it twice.
                extra = format!("{extra},{extra}");
            }
            signed(k, &hs, &with_raw(&c, &extra))
        }
        "header/crit" => {
            let vals = [json!(["exp"]), json!([]), Value::Null, json!(["b64"]), json!("x"), json!(5), json!({"a": 1})];
            signed(k, &set(&h, "crit", vals[a % vals.len()].clone()).to_string(), &cs)
        }
        "header/typ" => {
            let vals = [
                json!("at+jwt"),
                json!("AT+JWT"),
                json!("application/at+jwt"),
                json!("Application/At+Jwt"),
                json!("JWT"),
                json!("jwt"),
                json!(""),
                json!("at+jwt "),
                json!("application/jwt"),
                json!("at+jwt; charset=utf-8"),
                Value::Null,
                json!(5),
                json!(["at+jwt"]),
            ];
            let h2 = if a % (vals.len() + 1) == vals.len() {
                del(&h, "typ")
            } else {
                set(&h, "typ", vals[a % vals.len()].clone())
            };
            signed(k, &h2.to_string(), &cs)
        }
        "claims/iat" => {
            let vals = [
                json!(now + 3600),
                json!(now + LEEWAY + 120),
                json!(now + 10),
                json!(now - 100),
                json!(0),
                json!((now - 5) as f64 + 0.5),
                json!(format!("{}", now - 5)),
                json!(-5),
                Value::Null,
                json!(u64::MAX),
                json!(true),
            ];
            let c2 = if a % (vals.len() + 1) == vals.len() {
                del(&c, "iat")
            } else {
                set(&c, "iat", vals[a % vals.len()].clone())
            };
            signed(k, &hs, &c2.to_string())
        }
        "claims/exp" => {
            let vals = [
                json!(now - 3600),
                json!(now - LEEWAY - 120),
                json!(now - 10),
                json!(now + 10),
                json!(u64::MAX),
                json!((now + 600) as f64),
                json!((now + 600) as f64 + 0.25),
                json!(format!("{}", now + 600)),
                json!(-1),
                json!(1e30),
                Value::Null,
                json!([now + 600]),
            ];
            let c2 = if a % (vals.len() + 1) == vals.len() {
                del(&c, "exp")
            } else {
                set(&c, "exp", vals[a % vals.len()].clone())
            };
            signed(k, &hs, &c2.to_string())
        }
        "claims/nbf" => {
            let vals = [
                json!(now + 3600),
                json!(now + LEEWAY + 120),
                json!(now + 10),
                json!(now - 100),
                json!((now - 100) as f64 + 0.5),
                json!("0"),
                json!(-1),
                Value::Null,
                json!(u64::MAX),
            ];
            signed(k, &hs, &set(&c, "nbf", vals[a % vals.len()].clone()).to_string())
        }
        "claims/aud" => {
            let vals = [
                json!("other"),
                json!(["other", AUD]),
                json!([AUD]),
                json!(["other"]),
                json!([]),
                Value::Null,
                json!(5),
                json!([AUD, 5]),
                json!("API"),
                json!([AUD, AUD]),
                json!({"aud": AUD}),
            ];
            let c2 = if a % (vals.len() + 1) == vals.len() {
                del(&c, "aud")
            } else {
                set(&c, "aud", vals[a % vals.len()].clone())
            };
            signed(k, &hs, &c2.to_string())
        }
        "claims/iss" => {
            let vals = [
                json!("https://evil.test"),
                json!([ISS]),
                json!([ISS, "https://evil.test"]),
                Value::Null,
                json!(5),
                json!("HTTPS://ISSUER.TEST"),
                json!(format!("{ISS}/")),
                json!(""),
            ];
            let c2 = if a % (vals.len() + 1) == vals.len() {
                del(&c, "iss")
            } else {
                set(&c, "iss", vals[a % vals.len()].clone())
            };
            signed(k, &hs, &c2.to_string())
        }
        "claims/member-type" => {
            let names = ["sub", "scope", "client_id", "jti"];
            let vals = [json!(5), Value::Null, json!(["a"]), json!({"a": 1}), json!(true), json!("")];
            let c2 = set(&c, names[a % names.len()], vals[b % vals.len()].clone());
            signed(k, &hs, &c2.to_string())
        }
        "claims/missing" => {
            let c2 = match a % 5 {
                0 => del(&c, "exp"),
                1 => del(&c, "iss"),
                2 => del(&c, "aud"),
                3 => del(&del(&del(&c, "sub"), "jti"), "scope"),
                _ => json!({}),
            };
            signed(k, &hs, &c2.to_string())
        }
        "json/nested-junk-claim" => {
            let depth = 1 + a % 140;
            let mut junk = String::from("0");
            for d in 0..depth {
                junk =
                    if d % 2 == 0 { format!("[{junk},null,\"x\"]") } else { format!("{{\"k{d}\":{junk},\"e\":{{}}}}") };
            }
            if b % 4 == 0 {
                // As deep as fits under the size limit: a recursive skipper would overflow here.
                let deep = 2000 + a % 600;
                junk = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
            }
            signed(k, &hs, &with_raw(&c, &format!("\"junk\":{junk}")))
        }
        "json/junk-header-member" => {
            let vals = [
                json!({"a": [1, {"b": null}]}),
                json!(5),
                json!(true),
                Value::Null,
                json!("str"),
                json!([1, 2]),
                json!(1.5),
            ];
            let names = ["x-junk", "cty", "nested", "jku"];
            signed(k, &set(&h, names[b % names.len()], vals[a % vals.len()].clone()).to_string(), &cs)
        }
        "json/not-an-object" => {
            let texts: [&[u8]; 13] = [
                b"[]",
                b"null",
                b"1",
                b"\"s\"",
                b"{",
                b"{}}",
                b"{} {}",
                b"{\"exp\":1}x",
                b"",
                "\u{feff}{}".as_bytes(),
                b"{\"a\":\"\xff\"}",
                b"{'alg':'HS256'}",
                b"{\"a\":1,}",
            ];
            let t = texts[a % texts.len()];
            let (hh, cc) = if b % 2 == 0 { (b64(&hs), b64(t)) } else { (b64(t), b64(&cs)) };
            let input = format!("{hh}.{cc}");
            format!("{input}.{}", sign(k, &input))
        }
        "json/strings" => {
            let extras = [
                "\"x\":\"\\ud800\"".to_string(),
                "\"x\":\"\\udc00\\ud800\"".to_string(),
                "\"x\":\"a\u{1}b\"".to_string(),
                "\"x\":\"\\u0000\"".to_string(),
                "\"x\":\"\\q\"".to_string(),
                "\"x\":\"\\ud83d\\ude00\"".to_string(),
            ];
            let c2 = match a % (extras.len() + 2) {
                i if i < extras.len() => with_raw(&c, &extras[i]),
                i if i == extras.len() => cs.replace("\"iss\":\"https", "\"iss\":\"\\u0068ttps"),
                _ => cs.replace(&format!("\"aud\":\"{AUD}\""), "\"aud\":\"\\u0061pi\""),
            };
            signed(k, &hs, &c2)
        }
        "dots" => {
            let (h0, p0, s0) = (&seg[0], &seg[1], &seg[2]);
            let forms = [
                format!("{h0}.{p0}.{s0}.x"),
                format!("{h0}.{p0}.{s0}."),
                format!(".{h0}.{p0}.{s0}"),
                format!("{h0}..{p0}.{s0}"),
                format!("{h0}.{p0}..{s0}"),
                format!("{h0}.{p0}"),
                h0.to_string(),
                String::new(),
                "..".to_string(),
                format!("{h0}.{p0}.{s0}.{s0}"),
                format!("{h0}.{p0}.{p0}.{s0}"),
            ];
            forms[a % forms.len()].clone()
        }
        "kid" => {
            let twin = if k.kid == "es256" { "es256b" } else { other.kid };
            let vals = [json!("nope"), Value::Null, json!(5), json!(""), json!(twin), json!(k.kid.to_uppercase())];
            let h2 = if a % (vals.len() + 1) == vals.len() {
                del(&h, "kid")
            } else {
                set(&h, "kid", vals[a % vals.len()].clone())
            };
            signed(k, &h2.to_string(), &cs)
        }
        "size" => {
            // Base token length plus padding: just under, at, and over the limit.
            let base = valid.len();
            let per_char = 4.0 / 3.0;
            let room = ((MAX_BYTES - base) as f64 / per_char) as usize;
            let pad = match a % 4 {
                0 => room.saturating_sub(40),
                1 => room + 40,
                2 => room * 3,
                _ => 0,
            };
            signed(k, &hs, &with_raw(&c, &format!("\"pad\":\"{}\"", "p".repeat(pad))))
        }
        "signature/length" => {
            let sig = B64.decode(&seg[2]).unwrap();
            let s2 = match a % 5 {
                0 => sig[..sig.len() - 1].to_vec(),
                1 => [sig.clone(), vec![0]].concat(),
                2 => Vec::new(),
                3 => [sig.clone(), sig.clone()].concat(),
                _ => [vec![0], sig.clone()].concat(),
            };
            format!("{}.{}.{}", seg[0], seg[1], b64(s2))
        }
        _ => unreachable!("{name}"),
    };
    (name, tok)
}

// ---------------------------------------------------------------------------------------------
// The two validators.
// ---------------------------------------------------------------------------------------------

/// Why the jsonwebtoken side refused a token.
#[derive(Debug)]
enum JwtRefusal {
    /// The key lookup a gateway must do around `decode`: `kid` names no key (or is missing).
    UnknownKid,
    Kind(ErrorKind),
}

impl JwtRefusal {
    /// Refusals that mean "the signature, its algorithm or its key is wrong".
    fn is_signature(&self) -> bool {
        matches!(
            self,
            JwtRefusal::UnknownKid
                | JwtRefusal::Kind(
                    ErrorKind::InvalidSignature
                        | ErrorKind::InvalidAlgorithm
                        | ErrorKind::InvalidAlgorithmName
                        | ErrorKind::MissingAlgorithm
                        | ErrorKind::InvalidKeyFormat
                        | ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidEddsaKey
                        | ErrorKind::InvalidRsaKey(_)
                )
        )
    }
}

fn jsonwebtoken_decide(fx: &Fixture, token: &str) -> Result<(), JwtRefusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| JwtRefusal::Kind(e.into_kind()))?;
    let key = match header.kid.as_deref() {
        Some(kid) => fx.key(kid),
        None if fx.keys.len() == 1 => fx.keys.first(),
        None => None,
    }
    .ok_or(JwtRefusal::UnknownKid)?;
    let mut v = Validation::new(key.jwt_alg);
    v.leeway = LEEWAY;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key.jwt_key, &v).map(|_| ()).map_err(|e| JwtRefusal::Kind(e.into_kind()))
}

/// Signature verdicts of both libraries for the key and algorithm the header names, when it names
/// a known key of that algorithm and the token has three segments.
fn signature_verdicts(fx: &Fixture, token: &str) -> Option<(bool, bool)> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else { return None };
    let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    let alg = Alg::parse(header.get("alg")?.as_str()?)?;
    let kid = header.get("kid")?.as_str()?;
    let key = fx.key(kid).filter(|k| k.alg == alg)?;
    let input = format!("{h}.{p}");
    let tokengate::jwt::IssuerKeys::Static(set) = &fx.trust.issuers[ISS].keys else { unreachable!("a file issuer") };
    let tg_key = set.find(Some(kid), alg).expect("fixture key is in the trust store");
    let tg = B64.decode(s).is_ok_and(|sig| tg_key.verify(input.as_bytes(), &sig));
    let jw = matches!(jsonwebtoken::crypto::verify(s, input.as_bytes(), &key.jwt_key, key.jwt_alg), Ok(true));
    Some((tg, jw))
}

// ---------------------------------------------------------------------------------------------
// Named reasons for a disagreement, found by inspecting the token (not the validators' answers).
// ---------------------------------------------------------------------------------------------

/// Top-level members of a JSON object in order, repeats kept (serde_json's `Value` keeps the last).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<Value>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn members(seg: &str) -> Option<Vec<(String, Value)>> {
    serde_json::from_slice::<Members>(&B64.decode(seg).ok()?).ok().map(|m| m.0)
}

fn first<'a>(m: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn has_duplicate(m: &[(String, Value)]) -> bool {
    m.iter().enumerate().any(|(i, (k, _))| m[..i].iter().any(|(k2, _)| k2 == k))
}

/// `typ` as tokengate's issuer requires it: `at+jwt`, case-insensitive, optional `application/`.
fn typ_is_access_token(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    t.strip_prefix("application/").unwrap_or(&t) == ACCESS_TOKEN_TYP
}

const R_SIZE: &str = "size limit (max_token_bytes)";
const R_DUP: &str = "duplicate JSON member";
const R_CRIT: &str = "crit header present";
const R_TYP: &str = "typ is not at+jwt";
const R_TYPE: &str = "member of the wrong JSON type (incl. null)";
const R_NUMDATE: &str = "NumericDate not a non-negative integer";
const R_ISS_ARRAY: &str = "iss not a string";
const R_IAT_FUTURE: &str = "iat in the future";
/// The other direction: tokengate accepts, jsonwebtoken refuses.
const R_JWT_HEADER_EXTRAS: &str = "[jsonwebtoken stricter] non-string extra header member";
const R_JWT_SURROGATE: &str = "[jsonwebtoken stricter] lone UTF-16 surrogate escape in an ignored member";
const R_JWT_DEPTH: &str = "[jsonwebtoken stricter] nesting over serde_json's limit (128) in an ignored member";

/// Every rule tokengate applies that jsonwebtoken 10 does not, with the error tokengate gives.
fn tokengate_only_rules(token: &str, now: u64) -> Vec<(&'static str, TokenError)> {
    let mut out = Vec::new();
    if token.len() > MAX_BYTES {
        out.push((R_SIZE, TokenError::TooLarge));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, _] = parts[..] else { return out };
    if let Some(hm) = members(h) {
        if has_duplicate(&hm) {
            out.push((R_DUP, TokenError::BadHeader));
        }
        if ["typ", "kid"].iter().any(|n| first(&hm, n).is_some_and(|v| !v.is_string())) {
            out.push((R_TYPE, TokenError::BadHeader));
        }
        if first(&hm, "crit").is_some() {
            out.push((R_CRIT, TokenError::Crit));
        }
        if !first(&hm, "typ").and_then(Value::as_str).is_some_and(typ_is_access_token) {
            out.push((R_TYP, TokenError::WrongType));
        }
    }
    if let Some(cm) = members(p) {
        if has_duplicate(&cm) {
            out.push((R_DUP, TokenError::BadClaims));
        }
        let wrong_type =
            ["sub", "scope", "client_id", "jti"].iter().any(|n| first(&cm, n).is_some_and(|v| !v.is_string()))
                || first(&cm, "iat").is_some_and(|v| !v.is_number())
                || first(&cm, "nbf").is_some_and(Value::is_null);
        if wrong_type {
            out.push((R_TYPE, TokenError::BadClaims));
        }
        if ["exp", "nbf", "iat"].iter().any(|n| first(&cm, n).is_some_and(|v| v.is_number() && !v.is_u64())) {
            out.push((R_NUMDATE, TokenError::BadClaims));
        }
        if first(&cm, "iss").is_some_and(Value::is_array) {
            out.push((R_ISS_ARRAY, TokenError::BadClaims));
        }
        if first(&cm, "iat").and_then(Value::as_u64).is_some_and(|iat| iat > now + LEEWAY) {
            out.push((R_IAT_FUTURE, TokenError::IssuedInFuture));
        }
    }
    out
}

/// Deepest `[`/`{` nesting of a JSON text (brackets inside strings do not count).
fn max_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for ch in text.chars() {
        match (in_str, esc, ch) {
            (true, true, _) => esc = false,
            (true, false, '\\') => esc = true,
            (true, false, '"') => in_str = false,
            (true, false, _) => {}
            (false, _, '"') => in_str = true,
            (false, _, '[' | '{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Does a JSON text hold a `\uXXXX` escape of a UTF-16 surrogate that is not half of a pair?
fn has_lone_surrogate(text: &str) -> bool {
    let b = text.as_bytes();
    let unit = |i: usize| -> Option<u16> {
        (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
            .then(|| std::str::from_utf8(b.get(i + 2..i + 6)?).ok().and_then(|h| u16::from_str_radix(h, 16).ok()))
            .flatten()
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            i += 2; // an escaped backslash, not the start of an escape
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) => match unit(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return true,
            },
            Some(0xDC00..=0xDFFF) => return true,
            Some(_) => i += 6,
            None => i += 1,
        }
    }
    false
}

fn decoded_text(seg: &str) -> Option<String> {
    String::from_utf8(B64.decode(seg).ok()?).ok()
}

/// Deepest nesting serde_json's default recursion limit (128) lets a `Value` (jsonwebtoken's
/// claims) have: the 128th nested container is refused.
const SERDE_JSON_DEPTH: usize = 127;

/// Rules jsonwebtoken applies that tokengate does not (never about signatures).
fn jsonwebtoken_only_rules(token: &str) -> Vec<&'static str> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, _] = parts[..] else { return Vec::new() };
    let mut out = Vec::new();
    // jsonwebtoken's `Header` collects unknown members into `extras: HashMap<String, String>`
    // and types the registered ones (cty, jku: strings).
    if members(h).is_some_and(|hm| {
        hm.iter().any(|(k, v)| !["alg", "typ", "kid", "crit"].contains(&k.as_str()) && !v.is_string())
    }) {
        out.push(R_JWT_HEADER_EXTRAS);
    }
    for text in [decoded_text(h), decoded_text(p)].into_iter().flatten() {
        // Both are refused by serde_json when building a `Value`, skipped by `IgnoredAny`.
        if has_lone_surrogate(&text) {
            out.push(R_JWT_SURROGATE);
        }
        if max_depth(&text) > SERDE_JSON_DEPTH {
            out.push(R_JWT_DEPTH);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Comparison and statistics.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    cases: usize,
    both_accept: usize,
    both_reject: usize,
    signature_checks: usize,
    /// Named reason -> cases where it explained a disagreement.
    reasons: BTreeMap<&'static str, usize>,
    /// Mutation family -> cases.
    kinds: BTreeMap<&'static str, usize>,
    /// Valid tokens accepted by both, per key.
    valid_accepted: BTreeMap<&'static str, usize>,
}

impl Stats {
    fn print(&self, title: &str) {
        eprintln!("== {title}: {} cases ({} mutation families) ==", self.cases, self.kinds.len());
        eprintln!("   both accept: {}, both reject: {}", self.both_accept, self.both_reject);
        eprintln!(
            "   signature verdicts compared (tokengate VerifyKey vs jsonwebtoken::crypto::verify): {}",
            self.signature_checks
        );
        let disagreements: usize = self.reasons.values().sum();
        eprintln!("   disagreements, every one named: {disagreements}");
        for (r, n) in &self.reasons {
            eprintln!("     {n:6}  {r}");
        }
    }
}

fn check(
    fx: &Fixture,
    kind: &'static str,
    key: &'static str,
    token: &str,
    now: u64,
    st: &mut Stats,
) -> Result<(), String> {
    st.cases += 1;
    *st.kinds.entry(kind).or_default() += 1;
    let ctx = || format!("[{kind}, key {key}] token {token:?}");
    if let Some((tg, jw)) = signature_verdicts(fx, token) {
        st.signature_checks += 1;
        if tg != jw {
            return Err(format!("signature verdicts differ: tokengate {tg}, jsonwebtoken {jw}: {}", ctx()));
        }
    }
    let tg = fx.trust.validate(token, None, now);
    let jw = jsonwebtoken_decide(fx, token);
    match (&tg, &jw) {
        (Ok(_), Ok(())) => {
            st.both_accept += 1;
            if kind == "valid" {
                *st.valid_accepted.entry(key).or_default() += 1;
            }
        }
        (Err(_), Err(_)) => st.both_reject += 1,
        (Err(e), Ok(())) => {
            let rules = tokengate_only_rules(token, now);
            let Some((reason, _)) = rules.iter().find(|(_, want)| want == e) else {
                return Err(format!(
                    "tokengate refuses ({e:?}) what jsonwebtoken accepts, and no named rule explains it \
                     (rules that apply: {rules:?}): {}",
                    ctx()
                ));
            };
            *st.reasons.entry(reason).or_default() += 1;
        }
        (Ok(_), Err(r)) => {
            if r.is_signature() {
                return Err(format!(
                    "tokengate ACCEPTS what jsonwebtoken refuses for a signature reason ({r:?}): {}",
                    ctx()
                ));
            }
            let rules = jsonwebtoken_only_rules(token);
            let (Some(reason), JwtRefusal::Kind(ErrorKind::Json(_))) = (rules.first(), r) else {
                return Err(format!(
                    "tokengate accepts what jsonwebtoken refuses ({r:?}), and no named rule explains it: {}",
                    ctx()
                ));
            };
            *st.reasons.entry(reason).or_default() += 1;
        }
    }
    Ok(())
}

/// Every family for every key, with a spread of variants: deterministic, so its counts are too.
#[test]
fn differential_sweep_of_every_mutation_family_and_key() {
    let fx = fixture();
    let mut st = Stats::default();
    const VARIANTS: usize = 24;
    for ki in 0..fx.keys.len() {
        for kind in 0..KINDS.len() {
            for v in 0..VARIANTS {
                let now = jwt::now();
                // a walks the variant lists; b the segment/mode; spread so that pairs differ.
                let (a, b) = (v * 7 + ki, v + v / 6 + ki);
                let (name, token) = make_case(fx, ki, kind, a, b, now);
                check(fx, name, fx.keys[ki].kid, &token, now, &mut st).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    st.print("deterministic sweep");
    for k in &fx.keys {
        assert_eq!(
            st.valid_accepted.get(k.kid).copied(),
            Some(VARIANTS),
            "every valid {} token must be accepted by both",
            k.kid
        );
    }
    // Each extra rule of tokengate must have shown up: if one stops being enforced, both
    // validators accept its cases and its count here drops to zero.
    for reason in [
        R_SIZE,
        R_DUP,
        R_CRIT,
        R_TYP,
        R_TYPE,
        R_NUMDATE,
        R_ISS_ARRAY,
        R_IAT_FUTURE,
        R_JWT_HEADER_EXTRAS,
        R_JWT_SURROGATE,
        R_JWT_DEPTH,
    ] {
        assert!(st.reasons.get(reason).is_some_and(|n| *n > 0), "no disagreement of kind {reason:?} was seen");
    }
    assert!(st.both_reject > st.cases / 3, "most mutations must be refused by both");
}

/// Random keys, families and variants (including the deep-nesting and position parameters the
/// sweep does not reach).
#[test]
fn differential_proptest() {
    let fx = fixture();
    let st = RefCell::new(Stats::default());
    let mut runner = TestRunner::new(Config { cases: 1500, failure_persistence: None, ..Config::default() });
    let strategy = (0..fx.keys.len(), 0..KINDS.len(), any::<usize>(), any::<usize>());
    let result = runner.run(&strategy, |(ki, kind, a, b)| {
        let now = jwt::now();
        let (name, token) = make_case(fx, ki, kind, a, b, now);
        check(fx, name, fx.keys[ki].kid, &token, now, &mut st.borrow_mut()).map_err(TestCaseError::fail)
    });
    let st = st.into_inner();
    st.print("proptest");
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(st.both_accept > 0 && st.both_reject > 0);
}
