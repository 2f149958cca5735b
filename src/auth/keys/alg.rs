//! The JWS algorithms tokengate knows, by name: a leaf that the config schema (`config::dpop`) can
//! name without importing the keys, which read the config.

use aws_lc_rs::signature;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// JWS algorithms tokengate knows. `none` is deliberately absent: it cannot even be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    ES256,
    ES384,
    RS256,
    PS256,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// Exact, case-sensitive match (RFC 7515: `alg` values are case-sensitive).
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "RS256" => Alg::RS256,
            "PS256" => Alg::PS256,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    pub(super) fn verification(self) -> Option<&'static dyn signature::VerificationAlgorithm> {
        Some(match self {
            Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::EdDSA => &signature::ED25519,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => return None,
        })
    }

    pub(super) fn hmac(self) -> Option<aws_lc_rs::hmac::Algorithm> {
        match self {
            Alg::HS256 => Some(aws_lc_rs::hmac::HMAC_SHA256),
            Alg::HS384 => Some(aws_lc_rs::hmac::HMAC_SHA384),
            Alg::HS512 => Some(aws_lc_rs::hmac::HMAC_SHA512),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Alg, D::Error> {
        let s = String::deserialize(d)?;
        Alg::parse(&s).ok_or_else(|| de::Error::custom(format!("unknown algorithm {s:?}")))
    }
}
