//! Validation-only builds: no signing key read or made, only `[[issuers]]` trusted, a keys
//! folder full of private keys only warned about.

use std::path::Path;

use super::{BuildMode, Snapshot};
use crate::auth::keys::{generate_pem, Alg, OwnKeys, SigningKey};
use crate::config::RsaAlg;

const CENTRAL: &str = "https://central.example";

/// A sidecar config in `dir` (`keys_dir = "keys"`, default location), trusting a JWKS file.
fn sidecar(dir: &Path) -> std::path::PathBuf {
    let key = SigningKey::from_pem("c1", generate_pem(Alg::ES256).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
    std::fs::write(dir.join("central.json"), OwnKeys::single(key).jwks().to_string()).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[tokens]\nissue_tokens = false\nactive_kid = \"k1\"\n\n[[issuers]]\nissuer = \"{CENTRAL}\"\n\
             jwks = \"central.json\"\nalgorithms = [\"ES256\"]\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"echo\"\n"
        ),
    )
    .unwrap();
    config
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_sidecar_with_no_keys_folder_generates_no_key_and_trusts_only_its_issuers() {
    let dir = tempfile::tempdir().unwrap();
    let config = sidecar(dir.path());
    for mode in [BuildMode::Check, BuildMode::Start] {
        let s = Snapshot::build(&config, mode).expect("a sidecar builds without keys");
        assert!(s.own.is_none() && !s.issues_tokens());
        let trusted: Vec<&String> = s.trust.issuers.keys().collect();
        assert_eq!(trusted, [CENTRAL], "the own issuer is not trusted");
        assert!(s.first_start.iter().all(|n| !n.contains("signing key")), "{:?}", s.first_start);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(!s.watched.contains(&dir.path().join("keys")), "the keys folder is not watched");
    }
    // Only the certificate was made (by the Start build): no keys folder, no key.
    assert_eq!(files(dir.path()), ["central.json", "certs", "gateway.toml"]);
}

#[test]
fn a_sidecar_with_an_empty_keys_folder_builds_and_it_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = sidecar(dir.path());
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let s = Snapshot::build(&config, BuildMode::Start).expect("builds");
    assert!(s.own.is_none() && s.warnings.is_empty());
    assert!(files(&dir.path().join("keys")).is_empty(), "a key was generated");
}

#[test]
fn private_keys_in_a_sidecar_keys_folder_are_unused_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = sidecar(dir.path());
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    // Not even a valid key: it is never read.
    std::fs::write(keys.join("k1.pem"), "not a key").unwrap();
    let s = Snapshot::build(&config, BuildMode::Check).expect("builds, the keys unread");
    assert!(s.own.is_none());
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].contains("unused") && s.warnings[0].contains(&keys.display().to_string()),
        "{:?}",
        s.warnings
    );
    let summary = crate::commands::check(&config).unwrap();
    assert!(summary.contains("mode: validation only"), "{summary}");
    assert!(summary.contains("warning: tokens.keys_dir"), "{summary}");
}

#[test]
fn mint_refuses_in_validation_only_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = sidecar(dir.path());
    let req = crate::commands::MintRequest { sub: "a", scope: "", ttl: None, aud: None, client_id: None };
    let e = crate::commands::mint(&config, &req).unwrap_err().to_string();
    assert!(e.contains("tokens.issue_tokens = false: this gateway holds no signing key"), "{e}");
}

#[test]
fn an_issuing_gateway_still_generates_its_key_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "[tokens]\nactive_kid = \"k1\"\n").unwrap();
    let s = Snapshot::build(&config, BuildMode::Start).unwrap();
    assert!(s.issues_tokens());
    assert_eq!(files(&dir.path().join("keys")), ["k1.pem"]);
    let summary = crate::commands::check(&config).unwrap();
    assert!(summary.contains("mode: issuing tokens as https://tokengate.local"), "{summary}");
}
