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
