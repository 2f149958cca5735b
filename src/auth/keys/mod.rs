//! Signing and verification keys.
//!
//! Keys are parsed once, when a snapshot is built, into aws-lc-rs objects: the hot path never
//! re-parses a PEM or DER. A [`VerifyKey`] is bound to exactly one algorithm, so a token can
//! never choose how its own signature is checked (no RSA-key-as-HMAC-secret confusion).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use crate::config::RsaAlg;

mod alg;
mod jwks;

pub use alg::Alg;
pub use jwks::embedded_public_key;

/// Why keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> KeyError {
    KeyError::File { path: path.to_owned(), msg: msg.to_string() }
}

/// DER of a PKCS#1 RSAPublicKey (SEQUENCE { INTEGER n, INTEGER e }), the form aws-lc-rs parses.
fn rsa_pkcs1_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend(&bytes[skip..]);
        }
    }
    fn int(out: &mut Vec<u8>, v: &[u8]) {
        let v = &v[v.iter().take_while(|b| **b == 0).count()..];
        let pad = v.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        len(out, v.len() + pad as usize);
        if pad {
            out.push(0);
        }
        out.extend(v);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    int(&mut body, n);
    int(&mut body, e);
    let mut out = vec![0x30];
    len(&mut out, body.len());
    out.extend(body);
    out
}

/// A public (or, for HS*, shared) key that checks signatures of exactly one algorithm.
pub struct VerifyKey {
    /// The only algorithm this key accepts; compared with the token's `alg` before any crypto.
    pub alg: Alg,
    /// The parsed key material.
    check: Check,
}

#[allow(clippy::large_enum_variant)] // inline: the hot path verifies without a pointer chase
enum Check {
    Public(ParsedPublicKey),
    Hmac(aws_lc_rs::hmac::Key),
}

impl VerifyKey {
    /// Parses public key bytes (SPKI or PKCS#1 for RSA, uncompressed point for EC, raw for Ed25519).
    pub fn public(alg: Alg, bytes: &[u8]) -> Result<VerifyKey, KeyError> {
        let v = alg
            .verification()
            .ok_or_else(|| KeyError::Invalid(format!("{} is not a public-key algorithm", alg.as_str())))?;
        let parsed = ParsedPublicKey::new(v, bytes)
            .map_err(|e| KeyError::Invalid(format!("bad {} public key: {e}", alg.as_str())))?;
        Ok(VerifyKey { alg, check: Check::Public(parsed) })
    }

    /// An HMAC secret; empty or short secrets are refused (a guessable key signs anything).
    pub fn hmac(alg: Alg, secret: &[u8]) -> Result<VerifyKey, KeyError> {
        let h = alg.hmac().ok_or_else(|| KeyError::Invalid(format!("{} is not an HMAC algorithm", alg.as_str())))?;
        if secret.len() < 32 {
            return Err(KeyError::Invalid("HMAC secrets must be at least 32 bytes".into()));
        }
        Ok(VerifyKey { alg, check: Check::Hmac(aws_lc_rs::hmac::Key::new(h, secret)) })
    }

    /// True when `sig` is a valid signature of `msg` under this key (constant time for HMAC).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.check {
            Check::Public(k) => k.verify_sig(msg, sig).is_ok(),
            Check::Hmac(k) => aws_lc_rs::hmac::verify(k, msg, sig).is_ok(),
        }
    }
}

/// The verification keys of one issuer, by `kid`.
#[derive(Default)]
pub struct KeySet {
    /// kid -> keys (one per algorithm a JWK without `alg` may serve).
    by_kid: HashMap<String, Vec<Arc<VerifyKey>>>,
}

impl KeySet {
    /// Adds a key under `kid`.
    pub fn insert(&mut self, kid: String, key: VerifyKey) {
        self.by_kid.entry(kid).or_default().push(Arc::new(key));
    }

    /// The key for this `kid` and algorithm; with no `kid`, the only key when there is one.
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&VerifyKey> {
        let keys = match kid {
            Some(k) => self.by_kid.get(k)?,
            None if self.by_kid.len() == 1 => self.by_kid.values().next()?,
            None => return None,
        };
        keys.iter().find(|k| k.alg == alg).map(|k| &**k)
    }

    /// Number of distinct kids.
    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// The kids held, sorted (for status pages and logs).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ed(Ed25519KeyPair),
}

/// One of our private keys: signs new tokens and publishes its public half.
pub struct SigningKey {
    /// Key id: the file stem, put in every token's header.
    pub kid: String,
    /// Algorithm given by the key type (and `tokens.rsa_alg` for RSA).
    pub alg: Alg,
    /// The private key, parsed once.
    signer: Signer,
    /// Public half as a JWK, for the JWKS document.
    jwk: Value,
    /// The verify key for the same public half, so our own tokens validate without a round trip.
    verify: Arc<VerifyKey>,
}

impl SigningKey {
    /// Parses a private key PEM (PKCS#8, SEC1 or PKCS#1); the key type gives the algorithm.
    pub fn from_pem(kid: &str, pem: &[u8], rsa_alg: RsaAlg) -> Result<SigningKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| KeyError::Invalid(format!("not a private key: {}", crate::reason::pem_reason(&e))))?;
        let bytes = der.secret_der();
        let (alg, signer) = if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes) {
            (Alg::EdDSA, Signer::Ed(k))
        } else if let Ok(k) = EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, bytes) {
            (Alg::ES256, Signer::Ecdsa(k))
        } else if let Ok(k) = EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, bytes) {
            (Alg::ES384, Signer::Ecdsa(k))
        } else if let Ok(k) = RsaKeyPair::from_pkcs8(bytes).or_else(|_| RsaKeyPair::from_der(bytes)) {
            if k.public_modulus_len() < 256 {
                return Err(KeyError::Invalid("RSA keys must be at least 2048 bits".into()));
            }
            match rsa_alg {
                RsaAlg::RS256 => (Alg::RS256, Signer::Rsa(k, &signature::RSA_PKCS1_SHA256)),
                RsaAlg::PS256 => (Alg::PS256, Signer::Rsa(k, &signature::RSA_PSS_SHA256)),
            }
        } else {
            return Err(KeyError::Invalid("unsupported key type (want P-256, P-384, Ed25519 or RSA >= 2048)".into()));
        };
        let (jwk, public): (Value, Vec<u8>) = match &signer {
            Signer::Ecdsa(k) => {
                let p = k.public_key().as_ref();
                let half = (p.len() - 1) / 2;
                let crv = if alg == Alg::ES256 { "P-256" } else { "P-384" };
                (
                    json!({"kty": "EC", "crv": crv, "x": B64.encode(&p[1..1 + half]), "y": B64.encode(&p[1 + half..])}),
                    p.to_vec(),
                )
            }
            Signer::Ed(k) => {
                let p = k.public_key().as_ref();
                (json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(p)}), p.to_vec())
            }
            Signer::Rsa(k, _) => {
                let p = k.public_key();
                let (n, e) = (p.modulus(), p.exponent());
                let der = rsa_pkcs1_der(n.big_endian_without_leading_zero(), e.big_endian_without_leading_zero());
                (
                    json!({"kty": "RSA", "n": B64.encode(n.big_endian_without_leading_zero()), "e": B64.encode(e.big_endian_without_leading_zero())}),
                    der,
                )
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = kid.into();
        jwk["alg"] = alg.as_str().into();
        jwk["use"] = "sig".into();
        let verify = Arc::new(VerifyKey::public(alg, &public)?);
        Ok(SigningKey { kid: kid.to_owned(), alg, signer, jwk, verify })
    }

    /// Signs `msg` (the JWS signing input) and returns the raw signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let fail = |_| KeyError::Invalid("signing failed".into());
        Ok(match &self.signer {
            Signer::Ecdsa(k) => k.sign(&rng, msg).map_err(fail)?.as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Rsa(k, enc) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(*enc, &rng, msg, &mut sig).map_err(fail)?;
                sig
            }
        })
    }

    /// The public JWK (kty, crv/n/e, x/y, kid, alg, use) — never a private part.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The verification key for tokens this key signed.
    pub fn verify_key(&self) -> Arc<VerifyKey> {
        self.verify.clone()
    }
}

/// Our own keys: every key in `keys_dir`, and which one signs.
pub struct OwnKeys {
    /// All loaded private keys, by kid.
    pub keys: HashMap<String, Arc<SigningKey>>,
    /// The key new tokens are signed with.
    pub active: Arc<SigningKey>,
}

impl OwnKeys {
    /// Loads every `*.pem` in `dir`; the active key is `active_kid`, or the only key.
    pub fn load(dir: &Path, active_kid: Option<&str>, rsa_alg: RsaAlg) -> Result<OwnKeys, KeyError> {
        let entries = std::fs::read_dir(dir).map_err(|e| file_err(dir, crate::reason::io_reason(&e)))?;
        let mut keys = HashMap::new();
        for entry in entries {
            let path = entry.map_err(|e| file_err(dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let Some(kid) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if kid.starts_with('.') {
                continue; // editors' and Kubernetes' temporaries
            }
            let pem = std::fs::read(&path).map_err(|e| file_err(&path, crate::reason::io_reason(&e)))?;
            let key = SigningKey::from_pem(kid, &pem, rsa_alg).map_err(|e| file_err(&path, e))?;
            keys.insert(kid.to_owned(), Arc::new(key));
        }
        let active = match active_kid {
            Some(kid) => keys
                .get(kid)
                .cloned()
                .ok_or_else(|| file_err(dir, format!("tokens.active_kid {kid:?} has no {kid}.pem in this folder")))?,
            None if keys.len() == 1 => keys.values().next().cloned().ok_or_else(|| file_err(dir, "no key"))?,
            None if keys.is_empty() => {
                return Err(file_err(dir, "holds no *.pem signing key (create one with `tokengate keygen`)"))
            }
            None => return Err(file_err(dir, "holds several keys: set tokens.active_kid to the one that signs")),
        };
        Ok(OwnKeys { keys, active })
    }

    /// Just `key`, active: what a first start would have, for `tokengate check`.
    pub fn single(key: SigningKey) -> OwnKeys {
        let key = Arc::new(key);
        OwnKeys { keys: HashMap::from([(key.kid.clone(), key.clone())]), active: key }
    }

    /// The verification side of every key, for the trust store.
    pub fn key_set(&self) -> KeySet {
        let mut set = KeySet::default();
        for (kid, k) in &self.keys {
            set.by_kid.entry(kid.clone()).or_default().push(k.verify_key());
        }
        set
    }

    /// The JWKS document with the public half of every key.
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<_> = self.keys.values().map(|k| k.public_jwk().clone()).collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        json!({ "keys": keys })
    }
}

/// Makes a new private key for `alg` and returns it as a PKCS#8 PEM.
pub fn generate_pem(alg: Alg) -> Result<String, KeyError> {
    let fail = |e: aws_lc_rs::error::Unspecified| KeyError::Invalid(format!("key generation failed: {e}"));
    let der: Vec<u8> = match alg {
        Alg::ES256 | Alg::ES384 => {
            let a = if alg == Alg::ES256 {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            EcdsaKeyPair::generate(a).map_err(fail)?.to_pkcs8v1().map_err(fail)?.as_ref().to_vec()
        }
        Alg::EdDSA => Ed25519KeyPair::generate().map_err(fail)?.to_pkcs8v1().map_err(fail)?.as_ref().to_vec(),
        Alg::RS256 | Alg::PS256 => {
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?.as_der().map_err(fail)?.as_ref().to_vec()
        }
        _ => return Err(KeyError::Invalid(format!("cannot generate a private key for {}", alg.as_str()))),
    };
    Ok(pem_encode("PRIVATE KEY", &der))
}

/// PEM armour with 64-column base64 lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a private key file readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_key_signs_and_verifies_and_rejects_tampering() {
        for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256] {
            let pem = generate_pem(alg).unwrap();
            let key = SigningKey::from_pem("k", pem.as_bytes(), RsaAlg::RS256).unwrap();
            assert_eq!(key.alg, alg);
            let sig = key.sign(b"msg").unwrap();
            assert!(key.verify_key().verify(b"msg", &sig));
            assert!(!key.verify_key().verify(b"msh", &sig));
            assert!(key.public_jwk().get("d").is_none(), "JWK must never hold a private part");
        }
    }

    #[test]
    fn rsa_alg_setting_selects_pss() {
        let pem = generate_pem(Alg::RS256).unwrap();
        let key = SigningKey::from_pem("k", pem.as_bytes(), RsaAlg::PS256).unwrap();
        assert_eq!(key.alg, Alg::PS256);
        let sig = key.sign(b"m").unwrap();
        assert!(key.verify_key().verify(b"m", &sig));
        // The same public key bound to RS256 must not accept a PSS signature.
        let jwks = json!({"keys": [key.public_jwk()]}).to_string();
        let set = KeySet::from_jwks(jwks.as_bytes(), &[Alg::RS256, Alg::PS256]).unwrap();
        assert!(set.find(Some("k"), Alg::RS256).is_none(), "JWK declares PS256 only");
        assert!(set.find(Some("k"), Alg::PS256).unwrap().verify(b"m", &sig));
    }

    #[test]
    fn published_jwk_round_trips_into_a_verifier() {
        for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256] {
            let key = SigningKey::from_pem("kid1", generate_pem(alg).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
            let jwks = json!({"keys": [key.public_jwk()]}).to_string();
            let set = KeySet::from_jwks(jwks.as_bytes(), &[alg]).unwrap();
            let sig = key.sign(b"hello").unwrap();
            assert!(set.find(Some("kid1"), alg).unwrap().verify(b"hello", &sig), "{alg:?}");
            assert!(set.find(Some("other"), alg).is_none());
        }
    }

    #[test]
    fn hmac_keys_refuse_short_or_empty_secrets() {
        assert!(VerifyKey::hmac(Alg::HS256, b"").is_err());
        assert!(VerifyKey::hmac(Alg::HS256, b"short").is_err());
        assert!(VerifyKey::hmac(Alg::RS256, &[1; 32]).is_err());
        let jwks = json!({"keys": [{"kty": "oct", "kid": "h", "k": ""}]}).to_string();
        assert!(KeySet::from_jwks(jwks.as_bytes(), &[Alg::HS256]).is_err());
    }

    #[test]
    fn jwks_keeps_only_allowed_algorithms() {
        let key = SigningKey::from_pem("e", generate_pem(Alg::ES256).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
        let jwks = json!({"keys": [key.public_jwk()]}).to_string();
        assert!(KeySet::from_jwks(jwks.as_bytes(), &[Alg::RS256]).is_err());
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let der = RsaKeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap();
        assert!(SigningKey::from_pem("r", pem_encode("PRIVATE KEY", der.as_ref()).as_bytes(), RsaAlg::RS256).is_ok());
        let jwks =
            json!({"keys": [{"kty": "RSA", "kid": "s", "n": B64.encode([0xc5u8; 128]), "e": "AQAB"}]}).to_string();
        let set = KeySet::from_jwks(jwks.as_bytes(), &[Alg::RS256]);
        // 1024-bit modulus: either refused at load or never verifies.
        if let Ok(set) = set {
            assert!(!set.find(Some("s"), Alg::RS256).unwrap().verify(b"m", &[0u8; 128]));
        }
    }
}
