//! JWKS documents into verification keys: files we are given, strictly, and sets fetched from a
//! provider, leniently (keys we cannot or must not use are skipped, with the reason).

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use super::{file_err, rsa_pkcs1_der, Alg, KeyError, KeySet, VerifyKey, B64};

impl KeySet {
    /// Parses a JWKS fetched from a provider, leniently: a key that is not for signatures (`use`
    /// other than `sig`), carries private members, is symmetric (`oct`: a secret published at a
    /// URL is no secret), or serves no allowed algorithm is skipped, with the reason, instead of
    /// refusing the whole set. Providers publish encryption keys and new key types beside the
    /// ones we use. Fails only when the document is not a JWKS at all.
    pub fn from_remote_jwks(bytes: &[u8], allowed: &[Alg]) -> Result<(KeySet, Vec<String>), KeyError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| KeyError::Invalid(format!("not JSON: {e}")))?;
        let keys =
            doc.get("keys").and_then(Value::as_array).ok_or_else(|| KeyError::Invalid("no \"keys\" array".into()))?;
        let (mut set, mut skipped) = (KeySet::default(), Vec::new());
        for (i, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("#{i}"));
            let why = if jwk.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
                Some("not a signature key (use)".to_string())
            } else if PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some()) {
                Some("carries private key members".into())
            } else if jwk.get("kty").and_then(Value::as_str) == Some("oct") {
                Some("symmetric (oct) keys are never trusted from a URL".into())
            } else {
                match jwk_keys(jwk, allowed) {
                    Ok(v) if v.is_empty() => Some("serves no allowed algorithm".into()),
                    Ok(v) => {
                        v.into_iter().for_each(|key| set.insert(kid.clone(), key));
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            if let Some(why) = why {
                skipped.push(format!("{kid}: {why}"));
            }
        }
        Ok((set, skipped))
    }

    /// Loads a JWKS file, keeping the keys whose algorithm is in `allowed`.
    pub fn from_jwks_file(path: &Path, allowed: &[Alg]) -> Result<KeySet, KeyError> {
        let text = std::fs::read(path).map_err(|e| file_err(path, crate::reason::io_reason(&e)))?;
        Self::from_jwks(&text, allowed).map_err(|e| file_err(path, e))
    }

    /// Parses a JWKS document (shaped so that a remote JWKS body can go through the same code).
    pub fn from_jwks(bytes: &[u8], allowed: &[Alg]) -> Result<KeySet, KeyError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| KeyError::Invalid(format!("not JSON: {e}")))?;
        let keys =
            doc.get("keys").and_then(Value::as_array).ok_or_else(|| KeyError::Invalid("no \"keys\" array".into()))?;
        let mut set = KeySet::default();
        for (i, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("#{i}"));
            if jwk.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
                continue;
            }
            for key in jwk_keys(jwk, allowed).map_err(|e| KeyError::Invalid(format!("key {kid}: {e}")))? {
                set.insert(kid.clone(), key);
            }
        }
        if set.is_empty() {
            return Err(KeyError::Invalid("no usable signing key for the allowed algorithms".into()));
        }
        Ok(set)
    }
}

/// The verify key of one public JWK embedded in a message (a DPoP proof's `jwk`) for `alg`:
/// private members, symmetric keys and a key type that cannot serve `alg` are refused.
pub fn embedded_public_key(jwk: &Value, alg: Alg) -> Result<VerifyKey, String> {
    if !jwk.is_object() {
        return Err("jwk is not an object".into());
    }
    if PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some()) {
        return Err("jwk carries private key members".into());
    }
    if matches!(alg, Alg::HS256 | Alg::HS384 | Alg::HS512) || jwk.get("kty").and_then(Value::as_str) == Some("oct") {
        return Err("symmetric keys cannot prove possession".into());
    }
    jwk_keys(jwk, &[alg])?.pop().ok_or_else(|| format!("jwk cannot serve {}", alg.as_str()))
}

/// JWK members that only a private key has (RFC 7518 6.2.2, 6.3.2, 6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing \"{name}\""))?;
    B64.decode(s).map_err(|_| format!("\"{name}\" is not base64url"))
}

/// The verify keys one JWK yields: one per allowed algorithm its type can serve.
fn jwk_keys(jwk: &Value, allowed: &[Alg]) -> Result<Vec<VerifyKey>, String> {
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or("missing \"kty\"")?;
    let declared = match jwk.get("alg").and_then(Value::as_str) {
        Some(a) => Some(Alg::parse(a).ok_or_else(|| format!("unsupported alg {a:?}"))?),
        None => None,
    };
    let family: &[Alg] = match kty {
        "RSA" => &[Alg::RS256, Alg::PS256],
        "EC" => match jwk.get("crv").and_then(Value::as_str) {
            Some("P-256") => &[Alg::ES256],
            Some("P-384") => &[Alg::ES384],
            _ => return Err("unsupported EC curve".into()),
        },
        "OKP" if jwk.get("crv").and_then(Value::as_str) == Some("Ed25519") => &[Alg::EdDSA],
        "oct" => &[Alg::HS256, Alg::HS384, Alg::HS512],
        _ => return Err(format!("unsupported key type {kty:?}")),
    };
    let algs = family.iter().copied().filter(|a| allowed.contains(a) && declared.is_none_or(|d| d == *a));
    let mut out = Vec::new();
    for alg in algs {
        let key = match kty {
            "RSA" => VerifyKey::public(alg, &rsa_pkcs1_der(&b64_field(jwk, "n")?, &b64_field(jwk, "e")?)),
            "EC" => {
                let mut point = vec![4u8];
                point.extend(b64_field(jwk, "x")?);
                point.extend(b64_field(jwk, "y")?);
                VerifyKey::public(alg, &point)
            }
            "OKP" => VerifyKey::public(alg, &b64_field(jwk, "x")?),
            _ => VerifyKey::hmac(alg, &b64_field(jwk, "k")?),
        };
        out.push(key.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{generate_pem, SigningKey};
    use crate::config::RsaAlg;
    use serde_json::json;

    #[test]
    fn remote_jwks_skips_what_it_cannot_trust_and_keeps_the_rest() {
        let es = SigningKey::from_pem("es", generate_pem(Alg::ES256).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
        let rs = SigningKey::from_pem("rs", generate_pem(Alg::RS256).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
        let mut enc = rs.public_jwk().clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut private = es.public_jwk().clone();
        private["kid"] = "priv".into();
        private["d"] = "AAAA".into();
        let jwks = json!({"keys": [
            es.public_jwk(), rs.public_jwk(), enc, private,
            {"kty": "oct", "kid": "hmac", "k": B64.encode([7u8; 32]), "alg": "HS256"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        ]})
        .to_string();
        let (set, skipped) = KeySet::from_remote_jwks(jwks.as_bytes(), &[Alg::RS256, Alg::HS256]).unwrap();
        assert_eq!(set.kids(), ["rs"], "ES256 is not allowed here; everything else is untrusted");
        let skipped = skipped.join("; ");
        for why in [
            "es: serves no allowed algorithm",
            "enc: not a signature key",
            "priv: carries private key members",
            "hmac: carries private key members",
            "oaep: unsupported alg",
            "p521: unsupported EC curve",
        ] {
            assert!(skipped.contains(why), "{why} in {skipped}");
        }
        let sig = rs.sign(b"m").unwrap();
        assert!(set.find(Some("rs"), Alg::RS256).unwrap().verify(b"m", &sig));
        assert!(KeySet::from_remote_jwks(b"{}", &[Alg::RS256]).is_err());
        assert!(KeySet::from_remote_jwks(b"<html>", &[Alg::RS256]).is_err());
        let (empty, _) = KeySet::from_remote_jwks(br#"{"keys":[]}"#, &[Alg::RS256]).unwrap();
        assert!(empty.is_empty());
    }
}
