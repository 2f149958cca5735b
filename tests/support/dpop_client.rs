//! The independent DPoP client of the tests: `tests/support/dpop/client.mjs`, panva's
//! `oauth4webapi` and `jose` from npm (RFC 9449 as they implement it, none of it written here).
//! Missing Node.js or a missing `npm ci --prefix tests/support/dpop` fails with what to run.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

fn script_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dpop")
}

/// Runs `client.mjs MODE INPUT`, trusting the gateway certificate `ca`; its JSON answer, or
/// the answer with `failed` set when the client threw.
pub fn run(mode: &str, input: &Value, ca: Option<&Path>) -> Value {
    let dir = script_dir();
    assert!(
        dir.join("node_modules/oauth4webapi/package.json").is_file(),
        "{}/node_modules is missing: the DPoP tests need oauth4webapi and jose from npm; run \
         `npm ci --prefix tests/support/dpop` (`bash .ci/run` does)",
        dir.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("client.mjs")).arg(mode).arg(input.to_string());
    if let Some(ca) = ca {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("node not found on PATH: the DPoP tests need Node.js (`bash .ci/run` installs it)")
        }
        Err(e) => panic!("cannot start node: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client.mjs {mode}: not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

/// Proofs made by jose with one key pair.
pub struct Proofs {
    /// The key as a private JWK, to make more proofs with the same key.
    pub private_jwk: Value,
    /// Its RFC 7638 thumbprint as jose computes it.
    pub jkt: String,
    /// One proof per spec, in order.
    pub proofs: Vec<String>,
}

/// Proofs for `specs` (each `{"htm", "htu", "token"?, "iat_offset"?, "jti"?, "nonce"?, "typ"?,
/// "unsigned"?, "hs256"?, "private_in_header"?, "other_jwk"?, "signed_by_other"?}`), signed with
/// `key` or a fresh `alg` key.
pub fn proofs(alg: &str, key: Option<&Value>, specs: &[Value]) -> Proofs {
    let mut input = json!({ "alg": alg, "proofs": specs });
    if let Some(k) = key {
        input["private_jwk"] = k.clone();
    }
    let out = run("proofs", &input, None);
    assert!(out.get("failed").is_none(), "jose failed: {out}");
    Proofs {
        private_jwk: out["private_jwk"].clone(),
        jkt: out["jkt"].as_str().expect("jkt").to_owned(),
        proofs: out["proofs"]
            .as_array()
            .expect("proofs")
            .iter()
            .map(|p| p.as_str().expect("proof").to_owned())
            .collect(),
    }
}

/// One proof spec for `htm` `htu`, bound to `token` when given.
pub fn spec(htm: &str, htu: &str, token: Option<&str>) -> Value {
    let mut s = json!({ "htm": htm, "htu": htu });
    if let Some(t) = token {
        s["token"] = t.into();
    }
    s
}

/// What oauth4webapi threw at a refused grant: its error class, the OAuth `error` it could read,
/// and the challenge schemes when the class is `WWWAuthenticateChallengeError`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `ResponseBodyError`, `WWWAuthenticateChallengeError`, ...
    pub class: String,
    /// The RFC 6749 `error` code, when oauth4webapi got as far as the body.
    pub error: Option<String>,
    /// Lowercased challenge schemes (`basic`), for a challenge error.
    pub schemes: Vec<String>,
}

impl Refusal {
    /// What a strict client reports for an `invalid_client` answered without a challenge.
    pub fn invalid_client() -> Refusal {
        Refusal { class: "ResponseBodyError".into(), error: Some("invalid_client".into()), schemes: vec![] }
    }

    /// What it reports for a 401 with our Basic challenge: the challenge, not the body.
    pub fn basic_challenge() -> Refusal {
        Refusal { class: "WWWAuthenticateChallengeError".into(), error: None, schemes: vec!["basic".into()] }
    }
}

/// One client credentials grant by oauth4webapi (`client_auth` mode: `input` names the method
/// and its credentials), trusting the gateway certificate `ca`: the access token, or how the
/// client reported the refusal.
pub fn client_credentials(input: &Value, ca: &Path) -> Result<String, Refusal> {
    let out = run("client_auth", input, Some(ca));
    if out.get("failed").is_none() {
        return Ok(out["access_token"].as_str().expect("access_token").to_owned());
    }
    let text = |v: &Value| v.as_str().map(str::to_owned);
    // Anything but oauth4webapi's own errors is the harness failing, not a refusal.
    let class = text(&out["name"]).filter(|c| c.ends_with("Error") && c != "TypeError" && c != "Error");
    Err(Refusal {
        class: class.unwrap_or_else(|| panic!("client.mjs failed, not refused: {out}")),
        error: text(&out["error"]),
        schemes: out["schemes"]
            .as_array()
            .map_or(vec![], |a| a.iter().filter_map(text).map(|s| s.to_lowercase()).collect()),
    })
}
