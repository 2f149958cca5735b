//! The CLI's one-shot commands (`check`, `keygen`, `mint`); `serve` lives in [`crate::listener`].

use std::path::Path;

use serde_json::json;

use crate::auth::jwt::{self, ACCESS_TOKEN_TYP};
use crate::auth::keys::{self, Alg, SigningKey};
use crate::config::RsaAlg;
use crate::error::BuildError;
use crate::snapshot::{BuildMode, Snapshot};

/// Loads everything a start would, creating nothing, and returns a summary: one line, then one
/// line for each file a first start would create.
pub fn check(config: &Path) -> Result<String, BuildError> {
    let s = Snapshot::build(config, BuildMode::Check)?;
    let mut out = match &s.own {
        Some(own) => format!(
            "ok: {} route(s), {} trusted issuer(s), {} signing key(s), active kid {:?}\nmode: issuing tokens as {} \
             (token endpoint, revocation, introspection, JWKS and metadata served)",
            s.routes.len(),
            s.trust.issuers.len(),
            own.keys.len(),
            own.active.kid,
            s.config.tokens.issuer
        ),
        None => format!(
            "ok: {} route(s), {} trusted issuer(s), no signing key\nmode: validation only (tokens.issue_tokens = \
             false): no token, revocation, introspection, JWKS or metadata endpoint; only [[issuers]] are trusted",
            s.routes.len(),
            s.trust.issuers.len()
        ),
    };
    for note in &s.first_start {
        out.push_str("\nserve ");
        out.push_str(note);
    }
    for warning in &s.warnings {
        out.push_str("\nwarning: ");
        out.push_str(warning);
    }
    let mut remotes: Vec<_> = s.trust.remotes().map(|r| &r.spec).collect();
    remotes.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    for spec in remotes {
        let from = match &spec.source {
            crate::config::KeySource::Uri(u) => u.to_string(),
            _ => format!("the jwks_uri of {}'s discovery document", spec.issuer),
        };
        out.push_str(&format!("\nissuer {}: keys from {from}, fetched by serve (check fetches nothing)", spec.issuer));
    }
    Ok(out)
}

/// Writes a new private key PEM for `alg` to `out` (mode 0600; never overwrites).
pub fn keygen(alg: &str, out: &Path) -> Result<(), String> {
    let alg = Alg::parse(alg)
        .filter(|a| matches!(a, Alg::ES256 | Alg::ES384 | Alg::RS256 | Alg::PS256 | Alg::EdDSA))
        .ok_or_else(|| format!("unsupported algorithm {alg:?} (ES256, ES384, RS256, PS256, EdDSA)"))?;
    let pem = keys::generate_pem(alg).map_err(|e| e.to_string())?;
    keys::write_private(out, &pem).map_err(|e| format!("{}: {e}", out.display()))
}

/// What `tokengate dpop-proof` proves: one request, optionally bound to an access token.
pub struct ProofRequest<'a> {
    /// Private key file (PEM, from `tokengate keygen`): the key the token will be bound to.
    pub key: &'a Path,
    /// HTTP method of the request (`htm`).
    pub method: &'a str,
    /// URL of the request (`htu`); query and fragment are dropped.
    pub url: &'a str,
    /// The access token the request carries (`ath`), if any.
    pub token: Option<&'a str>,
    /// The server's `DPoP-Nonce`, when it asked for one.
    pub nonce: Option<&'a str>,
}

/// `count` DPoP proofs (RFC 9449) for one request, each with its own `jti`, and the key's
/// thumbprint (the `cnf.jkt` of tokens bound to it). For curl users and load generators.
pub fn dpop_proofs(req: &ProofRequest, count: usize) -> Result<(Vec<String>, String), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let pem = std::fs::read(req.key).map_err(|e| format!("{}: {}", req.key.display(), crate::reason::io_reason(&e)))?;
    let key = SigningKey::from_pem("dpop", &pem, RsaAlg::RS256).map_err(|e| format!("{}: {e}", req.key.display()))?;
    let jwk = key.public_jwk().clone();
    let jkt = crate::auth::dpop::thumbprint(&jwk).ok_or("the key has no RFC 7638 thumbprint")?;
    let htu = req.url.split(['?', '#']).next().unwrap_or(req.url);
    let header = B64.encode(json!({ "typ": "dpop+jwt", "alg": key.alg.as_str(), "jwk": jwk }).to_string());
    let now = jwt::now();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut claims = json!({ "jti": jwt::random_id(), "htm": req.method, "htu": htu, "iat": now });
        if let Some(t) = req.token {
            claims["ath"] = crate::auth::dpop::token_hash(t).into();
        }
        if let Some(n) = req.nonce {
            claims["nonce"] = n.into();
        }
        let input = format!("{header}.{}", B64.encode(claims.to_string()));
        let sig = key.sign(input.as_bytes()).map_err(|e| e.to_string())?;
        out.push(format!("{input}.{}", B64.encode(sig)));
    }
    Ok((out, jkt))
}

/// What `tokengate mint` puts in a token.
pub struct MintRequest<'a> {
    /// `sub` claim.
    pub sub: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// Lifetime; None uses `tokens.access_ttl_secs`.
    pub ttl: Option<u64>,
    /// `aud`; None uses `tokens.audience`.
    pub aud: Option<&'a str>,
    /// `client_id`; None uses "tokengate-cli".
    pub client_id: Option<&'a str>,
}

/// Signs an access token with the active key of the config at `config`.
pub fn mint(config: &Path, req: &MintRequest) -> Result<String, BuildError> {
    let s = Snapshot::build(config, BuildMode::Start)?;
    let Some(own) = &s.own else {
        return Err(BuildError::Invalid(format!(
            "{}: tokens.issue_tokens = false: this gateway holds no signing key; mint at the central issuer",
            config.display()
        )));
    };
    let t = &s.config.tokens;
    let now = jwt::now();
    let claims = json!({
        "iss": t.issuer,
        "sub": req.sub,
        "aud": req.aud.unwrap_or(&t.audience),
        "scope": req.scope,
        "client_id": req.client_id.unwrap_or("tokengate-cli"),
        "iat": now,
        "exp": now + req.ttl.unwrap_or(t.access_ttl_secs),
        "jti": jwt::random_id(),
    });
    Ok(jwt::sign(&own.active, ACCESS_TOKEN_TYP, &claims)?)
}

/// Reads a secret from `input` (first line, without its line ending) and returns its argon2id PHC.
pub fn hash_secret(input: &mut dyn std::io::BufRead) -> Result<String, String> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| format!("reading stdin: {e}"))?;
    let secret = line.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err("no secret on stdin".into());
    }
    crate::oauth::secrets::hash(secret).map_err(|e| e.to_string())
}

/// A fresh client: a random secret (shown once) and the `[[clients]]` entry holding its hash.
pub fn add_client(id: &str, grants: &[String], scopes: &[String]) -> Result<(String, String), String> {
    if let Some(g) = grants.iter().find(|g| crate::config::Grant::parse(g).is_none()) {
        return Err(format!("unknown grant {g:?}; expected client_credentials, password or refresh_token"));
    }
    let secret = crate::oauth::secrets::random_secret();
    let hash = crate::oauth::secrets::hash(&secret).map_err(|e| e.to_string())?;
    let list = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let entry = format!(
        "[[clients]]\nid = {id:?}\nsecret_hash = {hash:?}\ngrants = [{}]\nscopes = [{}]\ndefault_scopes = [{}]\n",
        list(grants),
        list(scopes),
        list(scopes)
    );
    Ok((secret, entry))
}
