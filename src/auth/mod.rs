//! Tokens themselves, whichever path uses them: strict JWT parsing, validation and minting
//! ([`jwt`]), signing and verification keys and JWKS ([`keys`]), key sets fetched from other
//! providers by URL ([`remote`]), rules on claims and claim paths ([`claims`]), and the
//! verified-token cache ([`token_cache`]). Only [`bearer`]
//! looks at a request, and only at its head: where the access token is and how a refusal is
//! worded, for every listener alike. Nothing here knows about routes or listeners.

/// Wall-clock Unix seconds (0 if the clock is before 1970): the one clock of token times,
/// fetch times and denial expiries.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub mod bearer;
pub mod claims;
pub mod dpop;
pub mod jwt;
pub mod keys;
pub mod remote;
pub mod token_cache;
