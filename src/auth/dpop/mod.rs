//! DPoP proofs (RFC 9449): a JWT the client signs for each request with a key it holds, naming
//! the request's method and URI, so that a token bound to that key (`cnf.jkt`) is worthless to
//! whoever merely copies it.
//!
//! [`verify_proof`] is the whole of RFC 9449 section 4.3 except the replay memory ([`replay`])
//! and the nonce's freshness ([`nonce`]), which need state. It knows nothing about routes or
//! listeners: the caller says what method, URI and token the proof must name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::keys::{embedded_public_key, Alg, VerifyKey};

pub mod nonce;
pub mod replay;
#[cfg(test)]
mod tests;

/// Proofs longer than this are refused before decoding (an RSA-4096 `jwk` proof is ~1.5 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// `typ` of a DPoP proof (RFC 9449 4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

/// Why a proof was refused; each is one `invalid_dpop_proof` answer (or `use_dpop_nonce`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the DPoP proof is missing")]
    Missing,
    #[error("more than one DPoP header")]
    Several,
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    #[error("the DPoP proof's typ is not dpop+jwt")]
    WrongType,
    #[error("the DPoP proof's algorithm is not allowed")]
    Algorithm,
    #[error("the DPoP proof's jwk is not a usable public key")]
    BadKey,
    #[error("the DPoP proof's signature is invalid")]
    BadSignature,
    #[error("the DPoP proof's htm does not match the request method")]
    WrongMethod,
    #[error("the DPoP proof's htu does not match the request URI")]
    WrongUri,
    #[error("the DPoP proof is too old or issued in the future")]
    Stale,
    #[error("the DPoP proof's ath does not match the access token")]
    WrongTokenHash,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error("the DPoP proof's key is not the key the token is bound to")]
    WrongKey,
    /// Too many recent proofs to remember one more: refused rather than left unchecked.
    #[error("the DPoP replay memory is full; retry later")]
    MemoryFull,
    /// Not `invalid_dpop_proof`: the client must retry with the server's nonce (RFC 9449 8).
    #[error("a fresh DPoP nonce is required")]
    UseNonce,
}

impl ProofError {
    /// Every error, so the rejection metric can list each reason (at 0) from the start.
    pub const ALL: [ProofError; 15] = [
        ProofError::Missing,
        ProofError::Several,
        ProofError::Malformed,
        ProofError::WrongType,
        ProofError::Algorithm,
        ProofError::BadKey,
        ProofError::BadSignature,
        ProofError::WrongMethod,
        ProofError::WrongUri,
        ProofError::Stale,
        ProofError::WrongTokenHash,
        ProofError::Replayed,
        ProofError::WrongKey,
        ProofError::MemoryFull,
        ProofError::UseNonce,
    ];

    /// Short label for the rejection metric.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::Missing => "dpop_missing",
            ProofError::Several => "dpop_several",
            ProofError::Malformed => "dpop_malformed",
            ProofError::WrongType => "dpop_typ",
            ProofError::Algorithm => "dpop_alg",
            ProofError::BadKey => "dpop_jwk",
            ProofError::BadSignature => "dpop_signature",
            ProofError::WrongMethod => "dpop_htm",
            ProofError::WrongUri => "dpop_htu",
            ProofError::Stale => "dpop_iat",
            ProofError::WrongTokenHash => "dpop_ath",
            ProofError::Replayed => "dpop_replay",
            ProofError::WrongKey => "dpop_wrong_key",
            ProofError::MemoryFull => "dpop_memory_full",
            ProofError::UseNonce => "dpop_nonce",
        }
    }
}

/// What a proof must say, from the request it came with.
pub struct Expect<'a> {
    /// The request method, compared exactly (methods are case-sensitive).
    pub method: &'a str,
    /// The request URI as the client addressed it (scheme, authority, path; no query).
    pub uri: &'a str,
    /// The access token the proof must be bound to through `ath` (the proxy), or None (the
    /// token endpoint, where no token is presented yet).
    pub access_token: Option<&'a str>,
    /// Algorithms a proof may use (asymmetric only).
    pub algorithms: &'a [Alg],
    /// How old `iat` may be, in seconds.
    pub max_age: u64,
    /// How far in the future `iat` may be (clock skew), in seconds.
    pub leeway: u64,
}

impl<'a> Expect<'a> {
    /// What `dpop` config asks of a proof for `method` `uri` (and `access_token`, at the proxy).
    pub fn new(
        cfg: &'a crate::config::DpopConfig,
        method: &'a str,
        uri: &'a str,
        access_token: Option<&'a str>,
    ) -> Self {
        Expect {
            method,
            uri,
            access_token,
            algorithms: &cfg.algorithms,
            max_age: cfg.proof_max_age_secs,
            leeway: cfg.proof_leeway_secs,
        }
    }
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url: what `cnf.jkt` must equal.
    pub jkt: String,
    /// The proof's `jti`, for the replay memory.
    pub jti: String,
    /// The proof's `iat`: the replay memory keeps the jti until `iat + max_age + leeway`.
    pub iat: u64,
    /// The proof's `nonce`, for the caller to check when nonces are required.
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Value,
    /// Any `crit` is refused: this verifier understands no extension.
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks one proof (RFC 9449 4.3 steps 1-11, replay and nonce freshness aside). Cheap checks
/// first; the signature last but one, so garbage never reaches the math, and the thumbprint last.
pub fn verify_proof(proof: &str, expect: &Expect<'_>, now: u64) -> Result<Proven, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ProofError::Malformed);
    };
    let key = proof_key(h)?;
    if !expect.algorithms.contains(&key.alg) {
        return Err(ProofError::Algorithm);
    }
    let claims: Claims = decode_json(c)?;
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(ProofError::Malformed);
    }
    if claims.htm != expect.method {
        return Err(ProofError::WrongMethod);
    }
    if !same_uri(&claims.htu, expect.uri) {
        return Err(ProofError::WrongUri);
    }
    if claims.iat.saturating_add(expect.max_age) < now || claims.iat > now.saturating_add(expect.leeway) {
        return Err(ProofError::Stale);
    }
    if let Some(token) = expect.access_token {
        if claims.ath.as_deref() != Some(token_hash(token).as_str()) {
            return Err(ProofError::WrongTokenHash);
        }
    }
    let sig = B64.decode(s).map_err(|_| ProofError::Malformed)?;
    let signed = &proof[..h.len() + 1 + c.len()];
    if !key.key.verify(signed.as_bytes(), &sig) {
        return Err(ProofError::BadSignature);
    }
    Ok(Proven { jkt: key.jkt.clone(), jti: claims.jti, iat: claims.iat, nonce: claims.nonce })
}

/// A proof header that passed its checks: what every proof with the same header shares.
struct ProofKey {
    /// The header segment exactly as sent (the cache key).
    segment: Box<str>,
    /// Its algorithm (the allow-list is checked per proof: it may change on reload).
    alg: Alg,
    /// The embedded `jwk`, parsed.
    key: VerifyKey,
    /// The `jwk`'s RFC 7638 thumbprint.
    jkt: String,
}

/// Headers of the last proofs seen on this thread. A client signs every proof with one key, so
/// its proofs share one header segment: a hit skips the JSON, the key parsing and the
/// thumbprint (a quarter of an ES256 proof's cost). Per thread: no locks.
const KEY_SLOTS: usize = 8;

thread_local! {
    static KEYS: std::cell::RefCell<(Vec<std::rc::Rc<ProofKey>>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// The checked header of segment `h`: from this thread's cache when the same text was seen.
fn proof_key(h: &str) -> Result<std::rc::Rc<ProofKey>, ProofError> {
    let hit = KEYS.try_with(|c| c.borrow().0.iter().find(|k| *k.segment == *h).cloned()).ok().flatten();
    if let Some(k) = hit {
        return Ok(k);
    }
    let header: Header = decode_json(h)?;
    if header.crit.is_some() {
        return Err(ProofError::Malformed);
    }
    if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(PROOF_TYP)) {
        return Err(ProofError::WrongType);
    }
    // RFC 9864's fully-specified "Ed25519" is what current clients (oauth4webapi) sign with.
    let alg = match header.alg.as_str() {
        "Ed25519" => Some(Alg::EdDSA),
        other => Alg::parse(other),
    };
    let alg = alg.filter(|a| !matches!(a, Alg::HS256 | Alg::HS384 | Alg::HS512)).ok_or(ProofError::Algorithm)?;
    let key = embedded_public_key(&header.jwk, alg).map_err(|_| ProofError::BadKey)?;
    let jkt = thumbprint(&header.jwk).ok_or(ProofError::BadKey)?;
    let entry = std::rc::Rc::new(ProofKey { segment: h.into(), alg, key, jkt });
    let _ = KEYS.try_with(|c| {
        let (slots, next) = &mut *c.borrow_mut();
        if slots.len() < KEY_SLOTS {
            slots.push(entry.clone());
        } else {
            slots[*next] = entry.clone();
            *next = (*next + 1) % KEY_SLOTS;
        }
    });
    Ok(entry)
}

/// A base64url segment decoded into `T`; serde refuses repeated members of `T`'s fields.
fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, ProofError> {
    let bytes = B64.decode(segment).map_err(|_| ProofError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)
}

/// `ath`: base64url SHA-256 of the access token's ASCII (RFC 9449 4.2).
pub fn token_hash(token: &str) -> String {
    B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()))
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members of the key's type,
/// in lexicographic order with no whitespace. None for a key type without a defined member set.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let v = jwk.get(*m)?.as_str()?;
        if i > 0 {
            canonical.push(',');
        }
        // serde_json escapes exactly as RFC 7638 section 3.3 asks (RFC 8259 minimal escaping).
        canonical.push_str(&serde_json::to_string(m).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(v).ok()?);
    }
    canonical.push('}');
    Some(B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes())))
}

/// RFC 9449 4.3 step 9: the two URIs are equal once query and fragment are dropped and scheme
/// and host are compared case-insensitively with default ports removed (RFC 3986 6.2.2-6.2.3).
/// The path is compared as sent: a client signs the path it requests.
pub fn same_uri(htu: &str, request: &str) -> bool {
    match (Normalized::parse(htu), Normalized::parse(request)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[derive(PartialEq, Eq, Debug)]
struct Normalized {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Normalized {
    fn parse(s: &str) -> Option<Normalized> {
        let s = s.split('#').next()?;
        let s = s.split('?').next()?;
        let uri: http::Uri = s.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let port = authority.port_u16().filter(|p| *p != default);
        let path = if uri.path().is_empty() { "/" } else { uri.path() };
        Some(Normalized { scheme, host: authority.host().to_ascii_lowercase(), port, path: path.to_owned() })
    }
}

/// A proof checked for one request by [`check_request`]: its key and its id.
pub struct Accepted {
    /// The proof key's thumbprint (`cnf.jkt` of the token it binds or proves).
    pub jkt: String,
    /// The proof's id, remembered by this process; a shared store may still refuse it.
    pub id: [u8; 16],
}

/// Everything both ends ask of a proof beyond [`verify_proof`]: the key it must be signed by
/// (`bound_to`, a token's `cnf.jkt`), a current nonce when `dpop.require_nonce`
/// ([`ProofError::UseNonce`]), and a first use in this process's replay memory. The key is checked
/// before the memory, so a proof by the wrong key takes no room there.
pub fn check_request(
    proof: &str,
    expect: &Expect<'_>,
    bound_to: Option<&str>,
    cfg: &crate::config::DpopConfig,
    nonces: &nonce::Nonces,
    memory: &replay::ReplayMemory,
    now: u64,
) -> Result<Accepted, ProofError> {
    let proven = verify_proof(proof, expect, now)?;
    if bound_to.is_some_and(|jkt| jkt != proven.jkt) {
        return Err(ProofError::WrongKey);
    }
    if cfg.require_nonce && !proven.nonce.as_deref().is_some_and(|n| nonces.check(n, now)) {
        return Err(ProofError::UseNonce);
    }
    let id = replay::proof_id(&proven.jkt, &proven.jti);
    match memory.first_use(&id, now, cfg.replay_window(), cfg.replay_cache_size) {
        replay::Seen::First => Ok(Accepted { jkt: proven.jkt, id }),
        replay::Seen::Again => Err(ProofError::Replayed),
        replay::Seen::Full => Err(ProofError::MemoryFull),
    }
}
