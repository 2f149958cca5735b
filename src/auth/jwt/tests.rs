//! Unit tests of the validator: each refusal the gateway promises, built as a real token.

use super::*;
use crate::auth::keys::{generate_pem, VerifyKey};
use crate::config::RsaAlg;
use serde_json::json;

const ISS: &str = "https://tokengate.test";
const NOW: u64 = 1_800_000_000;

fn key(alg: Alg) -> SigningKey {
    SigningKey::from_pem("k1", generate_pem(alg).unwrap().as_bytes(), RsaAlg::RS256).unwrap()
}

fn trust_for(k: &SigningKey) -> Trust {
    let mut keys = KeySet::default();
    keys.insert(k.kid.clone(), VerifyKey::public(k.alg, &pubkey_bytes(k)).unwrap());
    let issuer = Issuer {
        keys: keys.into(),
        algorithms: vec![k.alg],
        audiences: vec!["api".into()],
        require_typ: Some(ACCESS_TOKEN_TYP.into()),
        leeway: 30,
        scope_claim: None,
    };
    Trust { issuers: HashMap::from([(ISS.to_string(), issuer)]), max_token_bytes: 8192 }
}

/// The public key bytes, recovered through the published JWK (so the test goes through JWKS parsing).
fn pubkey_bytes(k: &SigningKey) -> Vec<u8> {
    let jwk = k.public_jwk();
    let d = |f: &str| B64.decode(jwk[f].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "EC" => [vec![4u8], d("x"), d("y")].concat(),
        "OKP" => d("x"),
        _ => panic!("use JWKS for RSA"),
    }
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": NOW + 60, "iat": NOW, "scope": "read write", "client_id": "c1", "jti": "j1"})
}

fn raw(header: serde_json::Value, payload: &str, k: &SigningKey) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload));
    let sig = k.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn hdr(k: &SigningKey) -> serde_json::Value {
    json!({"alg": k.alg.as_str(), "kid": k.kid, "typ": "at+jwt"})
}

#[test]
fn a_good_token_passes_for_every_algorithm() {
    for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA] {
        let k = key(alg);
        let t = sign(&k, "at+jwt", &claims()).unwrap();
        let v = trust_for(&k).validate(&t, None, NOW).unwrap();
        assert_eq!(v.sub.as_deref(), Some("alice"));
        assert_eq!(v.client_id.as_deref(), Some("c1"));
        assert_eq!(v.missing_scope(&["read".into()]), None);
        assert_eq!(v.missing_scope(&["admin".into()]), Some("admin"));
    }
}

#[test]
fn rsa_tokens_validate_through_jwks() {
    let k = key(Alg::RS256);
    let jwks = json!({"keys": [k.public_jwk()]}).to_string();
    let mut trust = trust_for(&key(Alg::ES256));
    let iss = trust.issuers.get_mut(ISS).unwrap();
    iss.keys = KeySet::from_jwks(jwks.as_bytes(), &[Alg::RS256]).unwrap().into();
    iss.algorithms = vec![Alg::RS256];
    let t = sign(&k, "at+jwt", &claims()).unwrap();
    assert!(trust.validate(&t, None, NOW).is_ok());
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let with = |f: &str, v: serde_json::Value| {
        let mut c = claims();
        c[f] = v;
        trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW)
    };
    assert_eq!(with("exp", json!(NOW - 31)).unwrap_err(), TokenError::Expired);
    assert!(with("exp", json!(NOW - 29)).is_ok(), "within leeway");
    assert_eq!(with("nbf", json!(NOW + 31)).unwrap_err(), TokenError::NotYetValid);
    assert!(with("nbf", json!(NOW + 29)).is_ok());
    assert_eq!(with("iat", json!(NOW + 3600)).unwrap_err(), TokenError::IssuedInFuture);
    for bad in [json!("1900000000"), json!(null), json!(-5), json!(1.9e9), json!([NOW])] {
        assert_eq!(with("exp", bad.clone()).unwrap_err(), TokenError::BadClaims, "exp {bad}");
        assert_eq!(with("nbf", bad.clone()).unwrap_err(), TokenError::BadClaims, "nbf {bad}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW).unwrap_err(), TokenError::BadClaims);
}

#[test]
fn issuer_and_audience_must_match_exactly() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let with = |f: &str, v: serde_json::Value| {
        let mut c = claims();
        c[f] = v;
        trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW)
    };
    for iss in [json!("https://tokengate.tes"), json!("https://tokengate.test/"), json!("HTTPS://tokengate.test")] {
        assert_eq!(with("iss", iss).unwrap_err(), TokenError::UntrustedIssuer);
    }
    assert_eq!(with("iss", json!([ISS])).unwrap_err(), TokenError::BadClaims);
    assert_eq!(with("aud", json!("other")).unwrap_err(), TokenError::WrongAudience);
    assert_eq!(with("aud", json!([])).unwrap_err(), TokenError::WrongAudience);
    assert_eq!(with("aud", json!(7)).unwrap_err(), TokenError::BadClaims);
    assert!(with("aud", json!(["x", "api"])).is_ok());
    assert_eq!(with("sub", json!(42)).unwrap_err(), TokenError::BadClaims);
    assert_eq!(with("scope", json!(["read"])).unwrap_err(), TokenError::BadClaims);
    // route audience overrides the issuer default
    let t = sign(&k, "at+jwt", &claims()).unwrap();
    assert_eq!(trust.validate(&t, Some("billing"), NOW).unwrap_err(), TokenError::WrongAudience);
}

#[test]
fn header_rules_typ_crit_alg_kid() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let body = claims().to_string();
    let check = |h: serde_json::Value| trust.validate(&raw(h, &body, &k), None, NOW);
    assert!(check(hdr(&k)).is_ok());
    assert!(check(json!({"alg": "ES256", "kid": "k1", "typ": "application/AT+JWT"})).is_ok());
    assert_eq!(check(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})).unwrap_err(), TokenError::WrongType);
    assert_eq!(check(json!({"alg": "ES256", "kid": "k1"})).unwrap_err(), TokenError::WrongType);
    assert_eq!(
        check(json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt", "crit": ["exp"]})).unwrap_err(),
        TokenError::Crit
    );
    assert_eq!(check(json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt", "crit": []})).unwrap_err(), TokenError::Crit);
    assert_eq!(check(json!({"alg": "ES256", "kid": "nope", "typ": "at+jwt"})).unwrap_err(), TokenError::UnknownKey);
    for alg in ["none", "None", "NONE", "es256", "HS256", "ES384", ""] {
        assert_eq!(
            check(json!({"alg": alg, "kid": "k1", "typ": "at+jwt"})).unwrap_err(),
            TokenError::AlgorithmNotAllowed,
            "{alg}"
        );
    }
    assert_eq!(check(json!({"alg": 1, "kid": "k1", "typ": "at+jwt"})).unwrap_err(), TokenError::BadHeader);
    assert_eq!(check(json!({"kid": "k1", "typ": "at+jwt"})).unwrap_err(), TokenError::BadHeader);
}

#[test]
fn alg_none_and_unsigned_tokens_are_refused() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let body = B64.encode(claims().to_string());
    for alg in ["none", "nOnE"] {
        let h = B64.encode(json!({"alg": alg, "typ": "at+jwt"}).to_string());
        assert!(trust.validate(&format!("{h}.{body}."), None, NOW).is_err());
        assert!(trust.validate(&format!("{h}.{body}"), None, NOW).is_err());
    }
    let good = sign(&k, "at+jwt", &claims()).unwrap();
    let unsigned = &good[..good.rfind('.').unwrap() + 1];
    assert_eq!(trust.validate(unsigned, None, NOW).unwrap_err(), TokenError::BadSignature);
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    // RS256 issuer; attacker signs HS256 with the public key text as the HMAC secret.
    let k = key(Alg::RS256);
    let jwks = json!({"keys": [k.public_jwk()]}).to_string();
    let mut trust = trust_for(&key(Alg::ES256));
    let iss = trust.issuers.get_mut(ISS).unwrap();
    iss.keys = KeySet::from_jwks(jwks.as_bytes(), &[Alg::RS256]).unwrap().into();
    iss.algorithms = vec![Alg::RS256];
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "kid": "k1", "typ": "at+jwt"}).to_string()),
        B64.encode(claims().to_string())
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwks.as_bytes()),
        input.as_bytes(),
    );
    let t = format!("{input}.{}", B64.encode(mac.as_ref()));
    assert_eq!(trust.validate(&t, None, NOW).unwrap_err(), TokenError::AlgorithmNotAllowed);
    // Even if the issuer allowed HS256, an RSA key can never verify an HMAC.
    trust.issuers.get_mut(ISS).unwrap().algorithms.push(Alg::HS256);
    assert_eq!(trust.validate(&t, None, NOW).unwrap_err(), TokenError::UnknownKey);
}

#[test]
fn tampering_and_encoding_tricks_are_refused() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let good = sign(&k, "at+jwt", &claims()).unwrap();
    let (input, sig) = good.rsplit_once('.').unwrap();
    // flipped signature bit
    let mut s = B64.decode(sig).unwrap();
    s[5] ^= 1;
    assert_eq!(
        trust.validate(&format!("{input}.{}", B64.encode(&s)), None, NOW).unwrap_err(),
        TokenError::BadSignature
    );
    // tampered claims, original signature
    let mut c = claims();
    c["scope"] = json!("admin");
    let h = input.split('.').next().unwrap();
    let forged = format!("{h}.{}.{sig}", B64.encode(c.to_string()));
    assert_eq!(trust.validate(&forged, None, NOW).unwrap_err(), TokenError::BadSignature);
    // padding, standard alphabet, whitespace, extra segments
    assert!(trust.validate(&format!("{good}="), None, NOW).is_err());
    assert!(trust.validate(&format!("{good}.x"), None, NOW).is_err());
    assert!(trust.validate(&format!(" {good}"), None, NOW).is_err());
    assert!(
        trust.validate(&good.replace('-', "+").replace('_', "/"), None, NOW).is_err() || !good.contains(['-', '_'])
    );
    assert_eq!(trust.validate("a.b.c.d.e", None, NOW).unwrap_err(), TokenError::Malformed);
    assert_eq!(trust.validate(&"a".repeat(9000), None, NOW).unwrap_err(), TokenError::TooLarge);
    // r = s = 0 ECDSA signature
    assert_eq!(
        trust.validate(&format!("{input}.{}", B64.encode([0u8; 64])), None, NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn duplicate_json_keys_are_refused() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let dup_payload = format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"sub":"alice","sub":"root"}}"#, NOW + 60);
    assert_eq!(trust.validate(&raw(hdr(&k), &dup_payload, &k), None, NOW).unwrap_err(), TokenError::BadClaims);
    let body = claims().to_string();
    let input =
        format!("{}.{}", B64.encode(r#"{"alg":"ES256","alg":"none","kid":"k1","typ":"at+jwt"}"#), B64.encode(&body));
    let t = format!("{input}.{}", B64.encode(k.sign(input.as_bytes()).unwrap()));
    assert_eq!(trust.validate(&t, None, NOW).unwrap_err(), TokenError::BadHeader);
}

#[test]
fn array_claims_render_as_space_separated_header_text() {
    let v = json!({"groups": ["a", "b"], "tenant": "t1", "n": 3, "obj": {"x": 1}});
    assert_eq!(claim_as_header_text(&v, "groups").as_deref(), Some("a b"));
    assert_eq!(claim_as_header_text(&v, "tenant").as_deref(), Some("t1"));
    assert_eq!(claim_as_header_text(&v, "n").as_deref(), Some("3"));
    assert_eq!(claim_as_header_text(&v, "obj"), None);
    assert_eq!(claim_as_header_text(&v, "missing"), None);
}

/// Signs an arbitrary header and payload (raw bytes, not re-serialized) with `k`.
fn raw_bytes(header: &[u8], payload: &[u8], k: &SigningKey) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let sig = k.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

/// A payload that passes, with `extra` members appended.
fn body_with(extra: &str) -> String {
    format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"sub":"alice"{extra}}}"#, NOW + 60)
}

const GOOD_HEADER: &[u8] = br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#;

#[test]
fn escaped_spellings_of_a_member_name_are_duplicates() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let claims = |extra: &str| trust.validate(&raw_bytes(GOOD_HEADER, body_with(extra).as_bytes(), &k), None, NOW);
    assert!(claims("").is_ok(), "control");
    for extra in [
        format!(r#","\u0065xp":{}"#, NOW + 99_999),
        r#","\u0073ub":"root""#.to_string(),
        r#","s\u0075b":"root""#.to_string(),
        r#","\u0069\u0073\u0073":"https://evil""#.to_string(),
        r#","tenant":"a","ten\u0061nt":"b""#.to_string(),
        r#","ten\u0061nt":"a","tenant":"b""#.to_string(),
        r#","x":1,"x":1"#.to_string(),
    ] {
        assert_eq!(claims(&extra).unwrap_err(), TokenError::BadClaims, "{extra}");
    }
    // Escaped but distinct names are fine, and escaped values are unescaped.
    let v = trust
        .validate(
            &raw_bytes(GOOD_HEADER, br#"{"iss":"https://tokengate.test","aud":"\u0061pi","exp":1800000060,"sub":"\u0061lice","sc\u006fpe":"read\nx"}"#, &k),
            None,
            NOW,
        )
        .unwrap();
    assert_eq!(v.sub.as_deref(), Some("alice"));
    assert_eq!(v.scope.as_deref(), Some("read\nx"));
    let header = |h: &[u8]| trust.validate(&raw_bytes(h, body_with("").as_bytes(), &k), None, NOW);
    for h in [
        &br#"{"alg":"ES256","\u0061lg":"none","kid":"k1","typ":"at+jwt"}"#[..],
        br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","k\u0069d":"k2"}"#,
        br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","jku":"a","j\u006bu":"b"}"#,
        br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","x":{},"x":{}}"#,
    ] {
        assert_eq!(header(h).unwrap_err(), TokenError::BadHeader, "{}", String::from_utf8_lossy(h));
    }
    assert_eq!(
        header(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","\u0063rit":["exp"]}"#).unwrap_err(),
        TokenError::Crit
    );
    assert!(header(br#"{"\u0061lg":"ES256","kid":"k\u0031","typ":"at+jwt"}"#).is_ok(), "escaped names are names");
}

#[test]
fn duplicates_are_found_among_many_unmodelled_members() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let many: String = (0..100).map(|i| format!(r#","c{i}":{i}"#)).collect();
    let check = |extra: &str| trust.validate(&raw_bytes(GOOD_HEADER, body_with(extra).as_bytes(), &k), None, NOW);
    assert!(check(&many).is_ok(), "100 distinct members");
    // A repeat of an early name (kept in the scan list) found after the switch to a set, of a
    // late one, and of an escaped spelling.
    for dup in [r#","c3":0"#, r#","c99":0"#, r#","c\u0035\u0030":0"#, r#","sub":"root""#] {
        assert_eq!(check(&format!("{many}{dup}")).unwrap_err(), TokenError::BadClaims, "{dup}");
    }
}

#[test]
fn structure_and_types_stay_strict() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let payload = |p: &[u8]| trust.validate(&raw_bytes(GOOD_HEADER, p, &k), None, NOW);
    let good = body_with("");
    assert!(payload(format!(" \n{good}\t ").as_bytes()).is_ok(), "JSON whitespace around the object");
    for bad in [
        format!("{good} x"),
        format!("{good}{good}"),
        format!("[{good}]"),
        r#""iss""#.to_string(),
        "null".to_string(),
        String::new(),
        good[..good.len() - 1].to_string(),
        body_with(r#","aud2":["a",1,]"#),
        body_with(r#","nested":{"a":1"#),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"sub":null}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":["api",1],"exp":{}}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":{{"api":1}},"exp":{}}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":{}.0}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":"{}"}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"iat":null}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"jti":7}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"client_id":["c"]}}"#, NOW + 60),
        format!(r#"{{"aud":"api","exp":{}}}"#, NOW + 60),
    ] {
        assert_eq!(payload(bad.as_bytes()).unwrap_err(), TokenError::BadClaims, "{bad}");
    }
    // Invalid UTF-8, even inside a member the validator skips.
    let mut bytes = body_with(r#","note":"xx""#).into_bytes();
    let at = bytes.len() - 3;
    bytes[at] = 0xff;
    assert_eq!(payload(&bytes).unwrap_err(), TokenError::BadClaims);
    // `aud: null` is no audience: refused where one is needed, as before.
    let null_aud = format!(r#"{{"iss":"{ISS}","aud":null,"exp":{}}}"#, NOW + 60);
    assert_eq!(payload(null_aud.as_bytes()).unwrap_err(), TokenError::WrongAudience);
    let header = |h: &[u8]| trust.validate(&raw_bytes(h, good.as_bytes(), &k), None, NOW);
    for (h, want) in [
        (&br#"{"alg":"ES256","kid":"k1","typ":null}"#[..], TokenError::BadHeader),
        (br#"{"alg":"ES256","kid":null,"typ":"at+jwt"}"#, TokenError::BadHeader),
        (br#"{"alg":null,"kid":"k1","typ":"at+jwt"}"#, TokenError::BadHeader),
        (br#"["ES256"]"#, TokenError::BadHeader),
        (br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"} {}"#, TokenError::BadHeader),
        (br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","crit":null}"#, TokenError::Crit),
    ] {
        assert_eq!(header(h).unwrap_err(), want, "{}", String::from_utf8_lossy(h));
    }
}

#[test]
fn segments_must_be_exactly_three_canonical_base64url() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let good = raw_bytes(GOOD_HEADER, body_with("").as_bytes(), &k);
    assert!(trust.validate(&good, None, NOW).is_ok());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for bad in [
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}..{s}"),
        format!("{h}..{p}.{s}"),
        format!(".{h}.{p}.{s}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{p}.{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{s}="),
        format!("{h}.{p} .{s}"),
        format!("{h}.{p}.{s}\n"),
    ] {
        assert!(trust.validate(&bad, None, NOW).is_err(), "{bad}");
    }
    // Non-canonical trailing bits: the last character of a segment changed to one that decodes
    // to the same bytes with non-zero unused bits.
    for (seg, at) in [(0, h.len() - 1), (1, h.len() + 1 + p.len() - 1), (2, good.len() - 1)] {
        let len = [h.len(), p.len(), s.len()][seg];
        if len % 4 == 0 {
            continue;
        }
        let mut t = good.clone().into_bytes();
        // Flip the lowest bit of the last character's 6-bit value: same bytes, unused bits set.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.iter().position(|c| *c == t[at]).unwrap();
        t[at] = alphabet[idx ^ 1];
        let t = String::from_utf8(t).unwrap();
        assert_eq!(trust.validate(&t, None, NOW).unwrap_err(), TokenError::Malformed, "segment {seg}");
    }
    assert_eq!(trust.validate(&format!("{h}.{p}.{s}.x"), None, NOW).unwrap_err(), TokenError::Malformed);
}

#[test]
fn the_header_cache_never_answers_for_a_different_header() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let body = body_with("");
    let with_header = |h: &[u8]| trust.validate(&raw_bytes(h, body.as_bytes(), &k), None, NOW);
    let others: [(&[u8], Option<TokenError>); 8] = [
        (br#"{"alg":"ES256","kid":"nope","typ":"at+jwt"}"#, Some(TokenError::UnknownKey)),
        (br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#, Some(TokenError::WrongType)),
        (br#"{"alg":"ES256","kid":"k1"}"#, Some(TokenError::WrongType)),
        (br#"{"alg":"ES384","kid":"k1","typ":"at+jwt"}"#, Some(TokenError::AlgorithmNotAllowed)),
        (br#"{"alg":"none","kid":"k1","typ":"at+jwt"}"#, Some(TokenError::AlgorithmNotAllowed)),
        (br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","crit":["x"]}"#, Some(TokenError::Crit)),
        (br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","kid":"k1"}"#, Some(TokenError::BadHeader)),
        (br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"} "#, None),
    ];
    // Round after round, so that each other header is both cached (or refused before caching)
    // and then looked up again right after the good one was cached, and more headers go round
    // than the cache has slots.
    for round in 0..3 {
        assert!(with_header(GOOD_HEADER).is_ok(), "round {round}");
        for (h, want) in &others {
            // None: only whitespace differs, a good header of its own.
            assert_eq!(with_header(h).err(), *want, "round {round}: {}", String::from_utf8_lossy(h));
            assert!(with_header(GOOD_HEADER).is_ok(), "round {round}, after {}", String::from_utf8_lossy(h));
        }
    }
    // The good header's segment with one more character, or one fewer: different text.
    let good = raw_bytes(GOOD_HEADER, body.as_bytes(), &k);
    let (h, rest) = good.split_once('.').unwrap();
    assert!(trust.validate(&good, None, NOW).is_ok());
    assert!(trust.validate(&format!("{h}A.{rest}"), None, NOW).is_err());
    assert!(trust.validate(&format!("{}.{rest}", &h[..h.len() - 1]), None, NOW).is_err());
    assert!(trust.validate(&format!("{h}=.{rest}"), None, NOW).is_err());
}

#[test]
fn the_header_cache_is_per_key_and_per_thread() {
    // Two keys, two kids, one issuer: alternate tokens must each find their own key.
    let (a, b) = (
        key(Alg::ES256),
        SigningKey::from_pem("k2", generate_pem(Alg::ES256).unwrap().as_bytes(), RsaAlg::RS256).unwrap(),
    );
    let mut trust = trust_for(&a);
    let iss = trust.issuers.get_mut(ISS).unwrap();
    let IssuerKeys::Static(set) = &mut iss.keys else { unreachable!("trust_for makes a static set") };
    set.insert("k2".into(), VerifyKey::public(Alg::ES256, &pubkey_bytes(&b)).unwrap());
    let ta = sign(&a, "at+jwt", &claims()).unwrap();
    let tb = sign(&b, "at+jwt", &claims()).unwrap();
    // b's header naming a's kid: the signature must be checked with a's key and fail.
    let (hb, _) = tb.split_once('.').unwrap();
    let (ha, _) = ta.split_once('.').unwrap();
    let crossed = format!("{ha}.{}", tb.split_once('.').unwrap().1);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert!(trust.validate(&ta, None, NOW).is_ok());
                    assert!(trust.validate(&tb, None, NOW).is_ok());
                    assert_eq!(trust.validate(&crossed, None, NOW).unwrap_err(), TokenError::BadSignature);
                }
            });
        }
    });
    assert_ne!(ha, hb);
}

#[test]
fn issuers_are_matched_exactly_whether_scanned_or_hashed() {
    let k = key(Alg::ES256);
    for count in [3, 12] {
        let mut trust = trust_for(&k);
        let template = trust.issuers.remove(ISS).unwrap();
        for i in 0..count {
            let mut keys = KeySet::default();
            keys.insert(k.kid.clone(), VerifyKey::public(k.alg, &pubkey_bytes(&k)).unwrap());
            let issuer = Issuer {
                keys: keys.into(),
                algorithms: template.algorithms.clone(),
                audiences: template.audiences.clone(),
                require_typ: template.require_typ.clone(),
                leeway: template.leeway,
                scope_claim: None,
            };
            trust.issuers.insert(format!("{ISS}/{i}"), issuer);
        }
        let with_iss = |iss: &str| {
            let mut c = claims();
            c["iss"] = iss.into();
            trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW)
        };
        assert!(with_iss(&format!("{ISS}/{}", count - 1)).is_ok(), "{count}");
        for bad in [ISS.to_string(), format!("{ISS}/{count}"), format!("{ISS}/1 "), format!("{ISS}/01")] {
            assert_eq!(with_iss(&bad).unwrap_err(), TokenError::UntrustedIssuer, "{count}: {bad}");
        }
    }
}

#[test]
fn scope_claim_reads_scp_as_a_string_or_an_array() {
    let k = key(Alg::ES256);
    let mut trust = trust_for(&k);
    trust.issuers.get_mut(ISS).unwrap().scope_claim = Some("scp".into());
    let scope_of = |extra: serde_json::Value| {
        let mut c = claims();
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW).unwrap().scope
    };
    assert_eq!(scope_of(json!({"scp": ["read", "orders.write"]})).as_deref(), Some("read orders.write"));
    assert_eq!(scope_of(json!({"scp": "read orders.write"})).as_deref(), Some("read orders.write"));
    assert_eq!(scope_of(json!({"scp": []})).as_deref(), Some(""));
    // The `scope` claim (here "read write") counts for nothing when the issuer names another.
    assert_eq!(scope_of(json!({})), None);
    // Not a string or an array of single scopes: nothing is granted, rather than a guess.
    for bad in [json!({"scp": 7}), json!({"scp": ["read", 1]}), json!({"scp": ["read write"]}), json!({"scp": [""]})] {
        assert_eq!(scope_of(bad.clone()), None, "{bad}");
    }
    let v = trust.validate(&sign(&k, "at+jwt", &claims()).unwrap(), None, NOW).unwrap();
    assert_eq!(v.missing_scope(&["read".into()]), Some("read"), "no scp: no scope");
}

#[test]
fn cnf_is_read_strictly() {
    let k = key(Alg::ES256);
    let trust = trust_for(&k);
    let with = |cnf: serde_json::Value| {
        let mut c = claims();
        c["cnf"] = cnf;
        trust.validate(&sign(&k, "at+jwt", &c).unwrap(), None, NOW)
    };
    let v = with(json!({"jkt": "abc"})).unwrap();
    assert_eq!(v.cnf.as_deref().and_then(|c| c.jkt.as_deref()), Some("abc"));
    let v = with(json!({"x5t#S256": "def", "other": 1})).unwrap();
    assert_eq!(v.cnf.as_deref().and_then(|c| c.x5t_s256.as_deref()), Some("def"));
    assert!(trust.validate(&sign(&k, "at+jwt", &claims()).unwrap(), None, NOW).unwrap().cnf.is_none());
    // A confirmation method nothing here can check must not leave a bearer token behind.
    assert_eq!(with(json!({"jwk": {"kty": "EC"}})).unwrap_err(), TokenError::BadClaims);
    assert_eq!(with(json!({})).unwrap_err(), TokenError::BadClaims);
    assert!(with(json!({"jkt": 5})).is_err());
    assert!(with(json!("jkt")).is_err());
    let dup = format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"cnf":{{"jkt":"a"}},"cnf":{{"jkt":"b"}}}}"#, NOW + 60);
    assert!(trust.validate(&raw(hdr(&k), &dup, &k), None, NOW).is_err());
    let dup_inner = format!(r#"{{"iss":"{ISS}","aud":"api","exp":{},"cnf":{{"jkt":"a","jkt":"b"}}}}"#, NOW + 60);
    assert!(trust.validate(&raw(hdr(&k), &dup_inner, &k), None, NOW).is_err());
}
