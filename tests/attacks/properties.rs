//! Property tests: the path normalizer, the JWT validator, the config loader, and (over the
//! wire, with a bounded number of random bodies) the token endpoint's private form parser.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tokengate::config::RsaAlg;
use tokengate::jwt::{Issuer, Trust};
use tokengate::keys::{Alg, OwnKeys, SigningKey};
use tokengate::routes::normalize_path;

use crate::common::*;
use crate::support::*;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Paths built from the characters that matter to the normalizer.
fn path_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "/",
        "//",
        ".",
        "..",
        "a",
        "admin",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%25",
        "%61",
        "%41",
        "%7e",
        "%3b",
        ";",
        "\\",
        "%c0%ae",
        "%ef%bc%8f",
        "%EF%BC%A1",
        "%e2%80%8b",
        "%00",
        "%",
        "%z",
        "~",
        "-",
        "_",
        "?",
        "#",
        " ",
        "\u{ff0f}",
        "é",
    ]);
    prop::collection::vec(atoms, 0..16).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn normalize_path_is_total_idempotent_and_canonical(s in prop_oneof![any::<String>(), path_like(), path_like().prop_map(|p| format!("/{p}"))]) {
        if let Ok(out) = normalize_path(&s) {
            let out = out.into_owned();
            prop_assert_eq!(normalize_path(&out).map(|c| c.into_owned()), Ok(out.clone()), "not idempotent on {:?}", s);
            for bad in ["//", "/./", "/../", "\\", ";"] {
                prop_assert!(!out.contains(bad), "{:?} -> {:?} contains {:?}", s, out, bad);
            }
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.ends_with("/..") && !out.ends_with("/."), "{:?} -> {:?}", s, out);
        }
    }
}

struct Fixture {
    trust: Trust,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (pem, key) = fresh_key("k1", Alg::ES256);
        std::fs::write(dir.path().join("k1.pem"), pem).unwrap();
        let own = OwnKeys::load(dir.path(), Some("k1"), RsaAlg::RS256).unwrap();
        let issuer = Issuer {
            keys: own.key_set().into(),
            algorithms: vec![Alg::ES256],
            audiences: vec![AUD.into()],
            require_typ: Some("at+jwt".into()),
            leeway: 5,
            scope_claim: None,
        };
        let trust = Trust { issuers: HashMap::from([(ISSUER.to_owned(), issuer)]), max_token_bytes: 8192 };
        Fixture { trust, key, _dir: dir }
    })
}

fn valid_token() -> &'static String {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        let mut c = claims("prop", "read");
        c["exp"] = (now() + 86_400).into();
        token(&fixture().key, &c)
    })
}

fn refuses(tok: &str) -> Result<(), TestCaseError> {
    let t = &fixture().trust;
    let n = now();
    prop_assert!(t.validate(tok, None, n).is_err(), "accepted (issuer audience): {:?}", tok);
    prop_assert!(t.validate(tok, Some(AUD), n).is_err(), "accepted (route audience): {:?}", tok);
    prop_assert!(t.validate_any_audience(tok, ISSUER, n).is_err(), "accepted (any audience): {:?}", tok);
    Ok(())
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn validate_refuses_arbitrary_strings(s in any::<String>()) {
        refuses(&s)?;
    }

    #[test]
    fn validate_refuses_arbitrary_three_segment_base64url(
        h in prop::collection::vec(any::<u8>(), 0..120),
        p in prop::collection::vec(any::<u8>(), 0..200),
        s in prop::collection::vec(any::<u8>(), 0..80),
        json_header in any::<bool>(),
    ) {
        let head = if json_header { B64.encode(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#) } else { B64.encode(&h) };
        refuses(&format!("{head}.{}.{}", B64.encode(&p), B64.encode(&s)))?;
    }

    #[test]
    fn validate_refuses_a_valid_token_with_one_byte_changed(idx in any::<prop::sample::Index>(), b in 0x20u8..0x7f) {
        let good = valid_token();
        prop_assert!(fixture().trust.validate(good, None, now()).is_ok(), "the unmutated token must pass");
        let i = idx.index(good.len());
        prop_assume!(good.as_bytes()[i] != b);
        let mut bytes = good.clone().into_bytes();
        bytes[i] = b;
        refuses(&String::from_utf8(bytes).unwrap())?;
    }
}

fn toml_like() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        "[server]\n",
        "[tokens]\n",
        "[[routes]]\n",
        "[[issuers]]\n",
        "[[clients]]\n",
        "[lockout]\n",
        "prefix = \"/a\"\n",
        "upstream = \"echo\"\n",
        "listen = \"127.0.0.1:0\"\n",
        "max_token_bytes = 1\n",
        "issuer = \"\"\n",
        "public = true\n",
        "scopes = [\"a\"]\n",
        "max_failures = -1\n",
        "window_secs = 99999999999999999999\n",
        "jwks = \"/nonexistent\"\n",
        "= ",
        "\"",
        "[",
        "]",
        "\n",
        "{",
        "}",
        ",",
        "\u{0}",
        "\u{feff}",
        "'''",
        "0x",
        "inf",
        "nan",
    ]);
    prop::collection::vec(atoms, 0..24).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(cfg(256))]

    #[test]
    fn config_load_never_panics(bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), toml_like()]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &bytes).unwrap();
        let res = std::panic::catch_unwind(|| tokengate::config::Config::load(&path));
        prop_assert!(res.is_ok(), "Config::load panicked on {:?}", String::from_utf8_lossy(&bytes));
        if res.unwrap().is_ok() {
            // Only well-formed TOML may load.
            let text = std::str::from_utf8(&bytes);
            prop_assert!(text.is_ok_and(|t| t.parse::<toml::Table>().is_ok()), "loaded: {:?}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// The form parser is private: 64 random bodies over one TLS connection. Every answer is a 4xx
/// RFC 6749 error, and the connection and the gateway keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_survives_random_form_bodies() {
    let lab = Lab::start().await;
    let mut runner = TestRunner::deterministic();
    let strat = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(prop::sample::select(b"=&%+;a0Ff\x00\xff grant_type".to_vec()), 0..300),
    ];
    let mut conn = lab.gw.tls(false).await;
    let auth = basic_header("svc", SECRET);
    for _ in 0..64 {
        let body = strat.new_tree(&mut runner).unwrap().current();
        let r = conn.send(req("POST", "/oauth2/token", &[FORM_CT, ("authorization", &auth)], full(body.clone()))).await;
        let s = r.status.as_u16();
        assert!((400..500).contains(&s), "{s} for {:?}: {}", String::from_utf8_lossy(&body), r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    lab.healthy().await;
}
