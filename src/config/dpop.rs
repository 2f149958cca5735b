//! `[dpop]`: how DPoP proofs (RFC 9449) are checked at the token endpoint and the proxy, and
//! the per-route `dpop` mode.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use crate::auth::keys::Alg;

/// `[[routes]] dpop`: what a route asks of sender-constrained tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopMode {
    /// A DPoP-bound token must come with a valid proof; an unbound bearer token passes.
    #[default]
    Allow,
    /// Only DPoP-bound tokens with a valid proof pass.
    Require,
}

/// `[dpop]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// Proof algorithms accepted (asymmetric only); advertised in discovery and in `algs=`.
    pub algorithms: Vec<Alg>,
    /// Oldest proof accepted: `iat` at most this many seconds ago. Also how long a proof's
    /// `jti` is remembered against replay.
    pub proof_max_age_secs: u64,
    /// Clock skew tolerated for a proof's `iat` in the future.
    pub proof_leeway_secs: u64,
    /// Require a server nonce in every proof (RFC 9449 8): a client first gets `use_dpop_nonce`
    /// with a `DPoP-Nonce` header, then signs proofs with it; pre-made proofs become useless.
    pub require_nonce: bool,
    /// A nonce is accepted for one to two of these periods.
    pub nonce_lifetime_secs: u64,
    /// File of at least 32 random bytes keying nonces, the same on every instance that should
    /// accept each other's nonces; without it each process keys its own.
    pub nonce_key_file: Option<PathBuf>,
    /// Most proof ids remembered in memory against replay (two proof windows' worth); past it
    /// proofs are refused rather than left unchecked.
    pub replay_cache_size: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            algorithms: vec![Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256, Alg::PS256],
            proof_max_age_secs: 60,
            proof_leeway_secs: 5,
            require_nonce: false,
            nonce_lifetime_secs: 300,
            nonce_key_file: None,
            replay_cache_size: 1_000_000,
        }
    }
}

impl DpopConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("dpop.{m}")));
        if self.algorithms.is_empty() {
            return bad("algorithms must list at least one algorithm");
        }
        if self.algorithms.iter().any(|a| matches!(a, Alg::HS256 | Alg::HS384 | Alg::HS512)) {
            return bad("algorithms must be asymmetric: a shared secret proves nothing about who holds it");
        }
        if self.proof_max_age_secs == 0 || self.proof_max_age_secs > 3600 {
            return bad("proof_max_age_secs must be between 1 and 3600");
        }
        if self.proof_leeway_secs > 300 {
            return bad("proof_leeway_secs must be at most 300");
        }
        if self.nonce_lifetime_secs == 0 {
            return bad("nonce_lifetime_secs must be at least 1");
        }
        if self.replay_cache_size == 0 {
            return bad("replay_cache_size must be at least 1");
        }
        Ok(())
    }

    /// Seconds a proof id must be remembered: as long as a proof with it could still pass.
    pub fn replay_window(&self) -> u64 {
        self.proof_max_age_secs + self.proof_leeway_secs
    }

    /// The accepted algorithms as the `algs` parameter of a challenge: "ES256 RS256 ...".
    pub fn algs_text(&self) -> String {
        self.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
    }
}
