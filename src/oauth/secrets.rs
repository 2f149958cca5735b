//! Client secrets and user passwords: argon2id PHC strings only, constant-time checks, a dummy
//! hash so unknown names cost the same as wrong passwords, and a short-lived record of verified
//! client secrets so machine clients are not capped by a full argon2 verify on every request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

/// Why a PHC string or hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("not an argon2id PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash)")]
    NotArgon2id,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Hashes a secret or password as argon2id with the OWASP minimum (m=19456 KiB, t=2, p=1).
pub fn hash(secret: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Checks that `phc` is an argon2id PHC string (done at load, so a typo fails the reload).
pub fn validate_phc(phc: &str) -> Result<(), SecretError> {
    let parsed = PasswordHash::new(phc).map_err(|_| SecretError::NotArgon2id)?;
    if parsed.algorithm.as_str() != "argon2id" || parsed.hash.is_none() {
        return Err(SecretError::NotArgon2id);
    }
    Ok(())
}

/// Full argon2 verification (CPU- and memory-heavy: run it off the async threads). The final
/// comparison inside the argon2 crate is constant time.
pub fn verify(phc: &str, secret: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// A valid hash of a random value, verified for unknown users and clients so that "no such
/// name" takes as long as "wrong password".
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash(&random_secret())
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG".into())
    })
}

/// 256 random bits, base64url: client secrets, refresh tokens.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut b);
    B64.encode(b)
}

/// Successful client-secret verifications, remembered briefly under a keyed hash of
/// (client id, presented secret, stored PHC). Only successes are kept, so a wrong secret always
/// pays the full argon2 cost; the key is random per instance and the record lives in the
/// snapshot, so a reload (a changed or removed client) drops every entry.
pub struct VerifiedSecrets {
    /// Random HMAC key: entries are useless outside this process.
    key: hmac::Key,
    /// keyed hash -> when the entry stops counting.
    seen: Mutex<HashMap<[u8; 32], Instant>>,
    /// How long a verification is remembered.
    ttl: Duration,
    /// Upper bound on entries (memory stays bounded whatever clients do).
    cap: usize,
}

impl VerifiedSecrets {
    /// An empty record with entries kept for `ttl`, at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> VerifiedSecrets {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &random_secret().into_bytes()));
        VerifiedSecrets { key, seen: Mutex::new(HashMap::new()), ttl, cap }
    }

    fn tag(&self, client_id: &str, secret: &str, phc: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [client_id, secret, phc] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// True when this exact secret was verified for this client and hash within the TTL.
    pub fn recently_verified(&self, client_id: &str, secret: &str, phc: &str) -> bool {
        let tag = self.tag(client_id, secret, phc);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&tag).is_some_and(|until| *until > Instant::now())
    }

    /// Records a successful full verification.
    pub fn remember(&self, client_id: &str, secret: &str, phc: &str) {
        let tag = self.tag(client_id, secret, phc);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.cap {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.cap {
                seen.clear();
            }
        }
        seen.insert(tag, now + self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        validate_phc(&h).unwrap();
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert!(!verify(&h, ""));
        assert_ne!(hash("s3cret").unwrap(), h, "salts must differ");
    }

    #[test]
    fn only_argon2id_phc_strings_are_accepted() {
        assert!(validate_phc("plaintext").is_err());
        assert!(validate_phc("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG").is_err());
        assert!(validate_phc("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ").is_err());
        assert!(!verify("garbage", "x"));
        validate_phc(dummy_hash()).unwrap();
    }

    #[test]
    fn verified_secret_record_is_keyed_on_client_secret_and_hash() {
        let v = VerifiedSecrets::new(Duration::from_secs(60), 2);
        assert!(!v.recently_verified("c", "s", "h"));
        v.remember("c", "s", "h");
        assert!(v.recently_verified("c", "s", "h"));
        assert!(!v.recently_verified("c", "t", "h"), "another secret");
        assert!(!v.recently_verified("d", "s", "h"), "another client");
        assert!(!v.recently_verified("c", "s", "h2"), "a changed hash");
        // length-prefixing: ("cs","") must not collide with ("c","s")
        assert!(!v.recently_verified("cs", "", "h"));
        v.remember("c2", "s", "h");
        v.remember("c3", "s", "h");
        assert!(v.seen.lock().unwrap().len() <= 2, "bounded");
        let expired = VerifiedSecrets::new(Duration::from_millis(0), 8);
        expired.remember("c", "s", "h");
        assert!(!expired.recently_verified("c", "s", "h"));
    }
}
