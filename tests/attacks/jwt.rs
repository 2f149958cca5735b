//! Forged and malformed JWTs beyond `tests/auth.rs`: each refused with 401 `invalid_token` and
//! nothing reaching an upstream. Every test also shows a well-formed control token passing, so a
//! refusal is never an accident of the setup.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use serde_json::{json, Value};
use tokengate::config::RsaAlg;
use tokengate::keys::Alg;

use crate::common::*;
use crate::support::*;

pub(crate) async fn refuse_all(lab: &Lab, cases: Vec<(String, String)>) {
    let mut conn = lab.gw.tls(false).await;
    for (name, tok) in cases {
        lab.assert_refused(&mut conn, &name, &tok).await;
    }
    assert_eq!(lab.upstream_total(), 0);
}

pub(crate) fn named(v: Vec<(&str, String)>) -> Vec<(String, String)> {
    v.into_iter().map(|(n, t)| (n.to_owned(), t)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_and_nameless_algorithms_beyond_auth_rs() {
    let lab = Lab::start().await;
    let c = claims("m", "read admin");
    let mut v = Vec::new();
    for alg in [json!("none "), json!("NoNe"), json!(""), json!(null), json!(["ES256"]), json!("es256"), json!(1)] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": "k1"});
        let input = format!("{}.{}", b64json(&h), b64json(&c));
        v.push((format!("alg {alg}, empty signature"), format!("{input}.")));
        v.push((
            format!("alg {alg}, real ES256 signature"),
            format!("{input}.{}", b64(&lab.k1.sign(input.as_bytes()).unwrap())),
        ));
        v.push((format!("alg {alg}, no third segment"), input));
    }
    refuse_all(&lab, v).await;
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &token(&lab.k1, &c)).await, 200, "control token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_to_hs256_confusion_with_an_rsa_issuers_public_key() {
    let lab = Lab::start().await;
    let rsa = rsa_key(RsaAlg::RS256);
    let jwk = rsa.public_jwk().clone();
    let (pkcs1, spki) = rsa_public_ders(&jwk);
    let spki_pem = tokengate::keys::pem_encode("PUBLIC KEY", &spki);
    let pkcs1_pem = tokengate::keys::pem_encode("RSA PUBLIC KEY", &pkcs1);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", spki_pem.clone().into_bytes()),
        ("SPKI PEM without final newline", spki_pem.trim_end().as_bytes().to_vec()),
        ("PKCS#1 PEM", pkcs1_pem.into_bytes()),
        ("SPKI DER", spki.clone()),
        ("PKCS#1 DER", pkcs1),
        ("JWK", jwk.to_string().into_bytes()),
        ("JWKS", json!({"keys": [jwk]}).to_string().into_bytes()),
        ("modulus bytes", B64.decode(jwk["n"].as_str().unwrap()).unwrap()),
    ];
    let mut v = Vec::new();
    // RSA_ISS allows RS256 only; MIX_ISS also allows HS256 but its only key is RSA.
    for iss in [RSA_ISS, MIX_ISS] {
        for (what, secret) in &secrets {
            let c = ext_claims(iss, "read admin");
            for h in [
                json!({"alg": "HS256", "kid": "rsa1"}),
                json!({"alg": "HS256"}),
                json!({"alg": "HS256", "kid": "rsa1", "typ": "at+jwt"}),
            ] {
                v.push((format!("{iss}: HS256 keyed with the {what}, header {h}"), hs256(&h, &c, secret)));
            }
        }
    }
    refuse_all(&lab, v).await;
    let mut conn = lab.gw.tls(false).await;
    for iss in [RSA_ISS, MIX_ISS] {
        let good = sign_with(&rsa, &json!({"alg": "RS256", "kid": "rsa1"}), &ext_claims(iss, "read"));
        assert_eq!(lab.status_of(&mut conn, &good).await, 200, "control: a real RS256 token of {iss}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_short_hmac_keys_are_refused_at_load_and_never_verify() {
    let dir = tempfile::tempdir().unwrap();
    for (name, k) in [("empty k", ""), ("31-byte k", &B64.encode([7u8; 31])[..])] {
        write_json(&dir.path().join("bad.jwks"), &json!({"keys": [{"kty": "oct", "kid": "h0", "k": k}]}));
        let cfg = dir.path().join("gateway.toml");
        let text = config_text("", "")
            + "\n[[issuers]]\nissuer = \"https://empty-hmac.test\"\njwks = \"bad.jwks\"\nalgorithms = [\"HS256\"]\n";
        std::fs::write(&cfg, text).unwrap();
        let res = tokengate::commands::check(&cfg);
        assert!(res.is_err(), "{name}: a config with an unusable HMAC key passed the check: {res:?}");
    }
    let lab = Lab::start().await;
    let c = ext_claims(HS_ISS, "read");
    let h = json!({"alg": "HS256", "kid": "h1"});
    refuse_all(
        &lab,
        named(vec![
            ("HMAC with an empty key", hs256(&h, &c, b"")),
            ("HMAC with an empty key, no kid", hs256(&json!({"alg": "HS256"}), &c, b"")),
            ("HMAC with a 32-byte zero key", hs256(&h, &c, &[0u8; 32])),
            ("HS256 with an empty signature", format!("{}.{}.", b64json(&h), b64json(&c))),
        ]),
    )
    .await;
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &hs256(&h, &c, HS_SECRET)).await, 200, "control: the real HMAC key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_zero_and_degenerate_signatures() {
    let lab = Lab::start().await;
    let input = format!("{}.{}", b64json(&header("ES256", "k1")), b64json(&claims("m", "read admin")));
    let real = lab.k1.sign(input.as_bytes()).unwrap();
    let mut r_only = real.clone();
    r_only[32..].fill(0);
    let sigs: Vec<(&str, Vec<u8>)> = vec![
        ("r = s = 0, raw 64 bytes", vec![0u8; 64]),
        ("r = s = 0, DER", vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]),
        ("real signature in DER form", {
            let int = |b: &[u8]| {
                let mut v = b.to_vec();
                if v[0] & 0x80 != 0 {
                    v.insert(0, 0);
                }
                der(0x02, &v)
            };
            der(0x30, &[int(&real[..32]), int(&real[32..])].concat())
        }),
        ("real r, s = 0", r_only),
        ("all 0xff", vec![0xff; 64]),
        ("63 bytes", real[..63].to_vec()),
        ("65 bytes", [real.clone(), vec![0]].concat()),
        ("empty", vec![]),
    ];
    refuse_all(&lab, sigs.into_iter().map(|(n, s)| (n.to_owned(), format!("{input}.{}", b64(&s)))).collect()).await;
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &format!("{input}.{}", b64(&real))).await, 200, "control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_remote_key_headers_are_ignored_and_never_fetched() {
    let lab = Lab::start().await;
    let wire = Tripwire::start().await;
    let (_, evil) = fresh_key("evil", Alg::ES256);
    let evil_jwk = evil.public_jwk().clone();
    let url = format!("http://{}/jwks.json", wire.addr);
    let c = claims("mallory", "read admin");
    let mut v = Vec::new();
    for kid in ["k1", "evil"] {
        let hs = [
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "jwk": evil_jwk}),
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "jku": url}),
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "x5u": url}),
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "x5c": [STANDARD_NO_PAD.encode(b"not really a cert")]}),
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt", "jku": url, "jwk": evil_jwk, "x5u": url}),
        ];
        for h in hs {
            v.push((format!("signed by the attacker, header {h}"), sign_with(&evil, &h, &c)));
        }
    }
    let mut ext = ext_claims(RSA_ISS, "read");
    ext["iss"] = json!(RSA_ISS);
    v.push(("external issuer, jku".into(), sign_with(&evil, &json!({"alg": "ES256", "jku": url}), &ext)));
    refuse_all(&lab, v).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wire.hits(), 0, "the gateway connected to a URL named in a token header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_kid_values() {
    let lab = Lab::start().await;
    let marker = lab.aux.path().join("pwned");
    let shell = format!("$(touch {})", marker.display());
    let kids = [
        "../../etc/passwd".to_owned(),
        "../keys/k1".into(),
        "k1.pem".into(),
        "/dev/null".into(),
        "' OR 1=1 --".into(),
        "k1' OR '1'='1".into(),
        shell.clone(),
        format!("`touch {}`", marker.display()),
        "K1".into(),
        "k1\u{0000}".into(),
        "".into(),
    ];
    let c = claims("m", "read admin");
    let v = kids.iter().map(|k| (format!("kid {k:?}"), sign_with(&lab.k1, &header("ES256", k), &c))).collect();
    refuse_all(&lab, v).await;
    // A 10 KB kid makes the request head larger than server.max_header_bytes (8192): 431 here,
    // and 401 when the head fits (a 4 KB kid).
    for (len, want) in [(10 * 1024, 431u16), (4 * 1024, 401)] {
        let tok = sign_with(&lab.k1, &header("ES256", &"k".repeat(len)), &c);
        let r = lab.gw.get_with("/api/x", &tok).await;
        assert_eq!(r.status, want, "kid of {len} bytes");
    }
    assert_eq!(lab.upstream_total(), 0);
    // The numeric kid is a type error, not "no kid".
    refuse_all(
        &lab,
        named(vec![("kid 1", sign_with(&lab.k1, &json!({"alg": "ES256", "kid": 1, "typ": "at+jwt"}), &c))]),
    )
    .await;
    assert!(!marker.exists(), "a kid was run as a shell command");
}

fn with(base: &Value, key: &str, val: Option<Value>) -> Value {
    let mut c = base.clone();
    match val {
        Some(v) => c[key] = v,
        None => {
            c.as_object_mut().unwrap().remove(key);
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_issuer_and_audience_claims_of_the_wrong_type_or_value() {
    let lab = Lab::start().await;
    let n = now();
    let base = claims("m", "read admin");
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("exp", Some(json!((n + 600).to_string()))),
        ("exp", Some(json!(null))),
        ("exp", Some(json!(-1))),
        ("exp", Some(json!(-(n as i64)))),
        ("exp", Some(json!((n + 600) as f64 + 0.5))),
        ("exp", Some(json!(1e20))),
        ("exp", Some(json!(true))),
        ("exp", None),
        ("nbf", Some(json!(n + 3600))),
        ("nbf", Some(json!(n.to_string()))),
        ("nbf", Some(json!(null))),
        ("nbf", Some(json!(1.5))),
        ("nbf", Some(json!(-5))),
        ("iat", Some(json!(n + 10 * 365 * 86400))),
        ("iat", Some(json!(u64::MAX))),
        ("iat", Some(json!("0"))),
        ("iss", Some(json!("https://tokengate.tes"))),
        ("iss", Some(json!("https://tokengate.test/"))),
        ("iss", Some(json!("https://tokengate.test.evil.example"))),
        ("iss", Some(json!("https://TOKENGATE.test"))),
        ("iss", Some(json!(" https://tokengate.test"))),
        ("iss", Some(json!([ISSUER]))),
        ("iss", Some(json!(1))),
        ("iss", Some(json!(null))),
        ("iss", None),
        ("aud", Some(json!("API"))),
        ("aud", Some(json!("api "))),
        ("aud", Some(json!([]))),
        ("aud", Some(json!(7))),
        ("aud", Some(json!([7]))),
        ("aud", Some(json!([["api"]]))),
        ("aud", Some(json!({"api": true}))),
        ("aud", Some(json!(null))),
        ("sub", Some(json!(42))),
        ("scope", Some(json!(["read", "admin"]))),
        ("jti", Some(json!(9))),
        ("client_id", Some(json!({"id": "x"}))),
    ];
    let v =
        cases.into_iter().map(|(k, val)| (format!("{k} = {val:?}"), token(&lab.k1, &with(&base, k, val)))).collect();
    refuse_all(&lab, v).await;
}

/// Re-encodes one segment with `f` applied to its text.
fn resegment(tok: &str, i: usize, f: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
    parts[i] = f(&parts[i]);
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_and_structure_variants() {
    let lab = Lab::start().await;
    let c = claims("m", "read admin");
    // A token whose signature differs between the URL-safe and the standard alphabet.
    let good = (0..200)
        .map(|i| token(&lab.k1, &with(&c, "jti", Some(json!(format!("j{i}"))))))
        .find(|t| t.rsplit('.').next().unwrap().contains(['-', '_']))
        .expect("a signature with - or _");
    let std_alpha = |s: &str| STANDARD_NO_PAD.encode(B64.decode(s).unwrap());
    let pad = |s: &str| format!("{s}{}", "=".repeat(((4 - s.len() % 4) % 4).max(1)));
    let non_canonical = |s: &str| {
        // 64 signature bytes = 86 chars with 4 unused trailing bits: set one of them.
        let mut b = s.as_bytes().to_vec();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = alphabet.iter().position(|c| *c == *b.last().unwrap()).unwrap();
        *b.last_mut().unwrap() = alphabet[last | 1];
        String::from_utf8(b).unwrap()
    };
    let inner = token(&lab.k1, &c);
    let jwe_h = json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "k1"});
    let v = named(vec![
        ("padded payload", resegment(&good, 1, pad)),
        ("padded signature", resegment(&good, 2, pad)),
        ("standard alphabet signature", resegment(&good, 2, std_alpha)),
        ("tab inside the payload", resegment(&good, 1, |s| format!("{}\t{}", &s[..10], &s[10..]))),
        ("non-canonical trailing bits", resegment(&good, 2, non_canonical)),
        ("five segments", format!("{good}.AAAA.BBBB")),
        (
            "JWE compact form",
            format!("{}.{}.{}.{}.{}", b64json(&jwe_h), b64(&[1; 256]), b64(&[2; 12]), b64(b"ct"), b64(&[3; 16])),
        ),
        ("JWE header with a JWS signature", format!("{}.{}.x", b64json(&jwe_h), b64json(&c))),
        (
            "nested JWT (cty JWT)",
            sign_raw(&lab.k1, br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","cty":"JWT"}"#, inner.as_bytes()),
        ),
        ("empty segments", "..".into()),
        ("leading dot", format!(".{good}")),
        ("trailing dot", format!("{good}.")),
    ]);
    refuse_all(&lab, v).await;
    // A space inside the token is a malformed Authorization header: 400, never 200.
    let sp = resegment(&good, 1, |s| format!("{} {}", &s[..10], &s[10..]));
    let r = lab.gw.get_with("/api/x", &sp).await;
    assert!(matches!(r.status.as_u16(), 400 | 401), "space inside: {} {}", r.status, r.text());
    assert_eq!(lab.upstream_total(), 0);
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &good).await, 200, "control");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typ_algorithm_tampering_and_encoding_attacks() {
    let lab = Lab::start().await;
    let c = claims("m", "read admin");
    let mut v = Vec::new();
    for typ in [
        json!("jwt"),
        json!("at+jwt "),
        json!("application/at+jwt; x"),
        json!("at+jwt+x"),
        json!("application/"),
        json!(1),
        json!(null),
        json!(["at+jwt"]),
    ] {
        v.push((format!("typ {typ}"), sign_with(&lab.k1, &json!({"alg": "ES256", "kid": "k1", "typ": typ}), &c)));
    }
    // Algorithm off the allow-list: PS256 with the RSA issuer's own key (it allows RS256 only),
    // ES256 and HS512 names for our ES256-only issuer.
    let ps = rsa_key(RsaAlg::PS256);
    v.push((
        "PS256 for an RS256-only issuer".into(),
        sign_with(&ps, &json!({"alg": "PS256", "kid": "rsa1"}), &ext_claims(RSA_ISS, "read")),
    ));
    v.push((
        "ES256 for an RS256-only issuer".into(),
        sign_with(&lab.k1, &json!({"alg": "ES256", "kid": "rsa1"}), &ext_claims(RSA_ISS, "read")),
    ));
    for alg in ["HS512", "ES512", "RS512", "PS384", "ES256K", "EdDSA"] {
        v.push((format!("alg {alg} named for our issuer"), sign_with(&lab.k1, &header(alg, "k1"), &c)));
    }
    // Tampered claims and flipped bits.
    let good = token(&lab.k1, &claims("m", "read"));
    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    v.push(("scope widened, old signature".into(), format!("{h}.{}.{sig}", b64json(&claims("m", "read admin")))));
    v.push(("sub changed, old signature".into(), format!("{h}.{}.{sig}", b64json(&claims("root", "read")))));
    let raw = B64.decode(sig).unwrap();
    for pos in [0usize, 1, 31, 32, 63] {
        for bit in [0x01u8, 0x80] {
            let mut s = raw.clone();
            s[pos] ^= bit;
            v.push((
                format!("signature byte {pos} ^ {bit:#x}"),
                format!("{h}.{rest_p}.{}", b64(&s), rest_p = rest.split('.').next().unwrap()),
            ));
        }
    }
    // Invalid UTF-8 and a BOM inside otherwise valid, properly signed JSON.
    let n = now();
    let p = format!(r#"{{"iss":"{ISSUER}","aud":"{AUD}","sub":"m","scope":"read","iat":{},"exp":{}}}"#, n - 5, n + 600);
    let hdr = br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#.to_vec();
    let mut bad_p = p.clone().into_bytes();
    bad_p.splice(p.find("\"m\"").unwrap() + 1..p.find("\"m\"").unwrap() + 2, [0xff, 0xfe]);
    let mut bad_h = hdr.clone();
    bad_h.splice(hdr.len() - 3..hdr.len() - 2, [0xc0, 0xaf]);
    let bom = |b: &[u8]| [&[0xef, 0xbb, 0xbf][..], b].concat();
    v.push(("invalid UTF-8 in the payload".into(), sign_raw(&lab.k1, &hdr, &bad_p)));
    v.push(("invalid UTF-8 in the header".into(), sign_raw(&lab.k1, &bad_h, p.as_bytes())));
    v.push(("BOM before the payload JSON".into(), sign_raw(&lab.k1, &hdr, &bom(p.as_bytes()))));
    v.push(("BOM before the header JSON".into(), sign_raw(&lab.k1, &bom(&hdr), p.as_bytes())));
    v.push(("payload JSON followed by garbage".into(), sign_raw(&lab.k1, &hdr, format!("{p}x").as_bytes())));
    v.push(("payload is a JSON array".into(), sign_raw(&lab.k1, &hdr, format!("[{p}]").as_bytes())));
    refuse_all(&lab, v).await;
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(lab.status_of(&mut conn, &sign_raw(&lab.k1, &hdr, p.as_bytes())).await, 200, "control");
    let rs = sign_with(&rsa_key(RsaAlg::RS256), &json!({"alg": "RS256", "kid": "rsa1"}), &ext_claims(RSA_ISS, "read"));
    assert_eq!(lab.status_of(&mut conn, &rs).await, 200, "control RS256");
}
