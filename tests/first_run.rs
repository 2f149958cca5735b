//! What a new user meets first, run as a user runs it (the real binary, `RUST_BACKTRACE=1` set):
//! `check` creates nothing and says what `serve` would create; a mistyped certificate or keys
//! path is an error naming the key, never a silently generated file; every start-up error is one
//! line naming the file or key, without Rust debug text.

use std::path::Path;
use std::process::{Command, Output};

fn tokengate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tokengate")
}

/// The shipped gateway.toml, copied into a fresh folder, with `edit` applied.
fn shipped(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml")).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), edit(text)).unwrap();
    dir
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// One line on stderr, `tokengate: ...`, with none of the tell-tales of debug output.
fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("tokengate: "), "{err}");
    for tell in ["os error", "Os {", "kind:", "Custom {", "backtrace", "Caused by", "Error {", "NoItemsFound"] {
        assert!(!err.contains(tell), "debug text {tell:?} in: {err}");
    }
    err
}

#[test]
fn check_creates_nothing_and_says_what_serve_would_create() {
    let dir = shipped(|t| t);
    let out = tokengate(dir.path(), &["check", "--config", "gateway.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("ok: 3 route(s)"), "{text}");
    assert!(text.contains("would create the ES256 signing key ./keys/k1.pem"), "{text}");
    assert!(text.contains("would create a self-signed localhost certificate ./certs/gateway.crt"), "{text}");
    assert_eq!(files(dir.path()), ["gateway.toml"], "check wrote files");
}

#[test]
fn a_mistyped_certificate_path_is_an_error_not_a_new_certificate() {
    let elsewhere = tempfile::tempdir().unwrap();
    let typo = elsewhere.path().join("mytls/server.crt");
    let dir = shipped(|t| t.replace("cert = \"certs/gateway.crt\"", &format!("cert = {:?}", typo.to_str().unwrap())));
    for cmd in ["check", "serve"] {
        let out = tokengate(dir.path(), &[cmd, "--config", "gateway.toml"]);
        let err = one_line_error(&out);
        assert!(err.contains("tls.cert") && err.contains(typo.to_str().unwrap()), "{cmd}: {err}");
        assert!(err.contains("only at the default"), "{cmd}: {err}");
        assert!(!typo.exists() && !elsewhere.path().join("mytls").exists(), "{cmd} created the mistyped path");
        assert_eq!(files(dir.path()), ["gateway.toml"], "{cmd} created files");
    }
}

#[test]
fn a_mistyped_keys_folder_is_an_error_not_a_new_key() {
    let dir = shipped(|t| t.replace("keys_dir = \"keys\"", "keys_dir = \"kyes\""));
    for cmd in ["check", "serve"] {
        let err = one_line_error(&tokengate(dir.path(), &[cmd, "--config", "gateway.toml"]));
        assert!(err.contains("tokens.keys_dir") && err.contains("kyes"), "{cmd}: {err}");
        assert!(!dir.path().join("kyes").exists(), "{cmd} created the mistyped folder");
    }
}

#[test]
fn start_up_errors_are_one_line_naming_the_file_or_key() {
    let dir = shipped(|t| t.replace("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:84430\""));
    let err = one_line_error(&tokengate(dir.path(), &["serve", "--config", "missing.toml"]));
    assert_eq!(err.trim_end(), "tokengate: missing.toml: does not exist");

    let err = one_line_error(&tokengate(dir.path(), &["serve", "--config", "gateway.toml"]));
    assert!(err.contains("gateway.toml, line 5 column 10"), "{err}");

    std::fs::write(dir.path().join("bad-route.toml"), "[[routes]]\nprefix = \"/x\"\nupstream = \"ftp://host\"\n")
        .unwrap();
    let err = one_line_error(&tokengate(dir.path(), &["check", "--config", "bad-route.toml"]));
    assert!(err.contains("bad-route.toml, line 3") && err.contains("upstream \"ftp://host\""), "{err}");

    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/k1.pem"), "not a key").unwrap();
    std::fs::write(dir.path().join("junk-key.toml"), "[tokens]\nactive_kid = \"k1\"\n").unwrap();
    let err = one_line_error(&tokengate(dir.path(), &["check", "--config", "junk-key.toml"]));
    assert!(err.contains("tokens.keys_dir") && err.contains("k1.pem: not a private key"), "{err}");
}
