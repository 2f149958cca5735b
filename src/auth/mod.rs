//! Tokens themselves, whichever path uses them: strict JWT parsing, validation and minting
//! ([`jwt`]), signing and verification keys and JWKS ([`keys`]), key sets fetched from other
//! providers by URL ([`remote`]), and the verified-token cache ([`token_cache`]). Nothing here
//! knows about requests, routes or listeners.

pub mod jwt;
pub mod keys;
pub mod remote;
pub mod token_cache;
