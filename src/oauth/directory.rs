//! The client and user tables, compiled into the snapshot: PHC strings checked, assertion keys
//! parsed, grants as flags. Reloaded with everything else.

use std::collections::HashMap;
use std::time::Duration;

use crate::auth::keys::{Alg, KeySet, VerifyKey};
use crate::config::{Config, Grant};
use crate::error::BuildError;
use crate::oauth::secrets::{validate_phc, VerifiedSecrets};

/// Which grants a client may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// `client_credentials`.
    pub client_credentials: bool,
    /// `password`.
    pub password: bool,
    /// `refresh_token` (and so whether the password grant returns one).
    pub refresh_token: bool,
}

/// A client of the token endpoint.
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// argon2id PHC of its secret, if it has one.
    pub secret_hash: Option<String>,
    /// Public clients only name themselves.
    pub public: bool,
    /// Token requests without a DPoP proof are refused.
    pub require_dpop: bool,
    /// Allowed grants.
    pub grants: Grants,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Scopes granted when none are requested.
    pub default_scopes: Vec<String>,
    /// Keys for `private_key_jwt` assertions.
    pub assertion_keys: Option<KeySet>,
    /// May introspect.
    pub introspect: bool,
    /// `aud` of its access tokens.
    pub audience: String,
}

/// A resource owner.
pub struct User {
    /// argon2id PHC of the password.
    pub password_hash: String,
    /// Scopes the user may grant.
    pub scopes: Vec<String>,
    /// `sub` of the user's tokens.
    pub sub: String,
    /// Disabled users can neither log in nor refresh.
    pub disabled: bool,
}

/// Both tables plus the verified-secret record that must die with them.
pub struct Directory {
    /// Clients by id.
    pub clients: HashMap<String, Client>,
    /// Users by username.
    pub users: HashMap<String, User>,
    /// `sub` -> username, for refresh tokens (families record the `sub`).
    by_sub: HashMap<String, String>,
    /// Recently verified client secrets; dropped on every reload.
    pub verified: VerifiedSecrets,
}

/// Algorithms accepted in client assertions.
const ASSERTION_ALGS: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::RS256, Alg::PS256, Alg::EdDSA];

impl Directory {
    /// Compiles the tables of `config`.
    pub fn build(config: &Config) -> Result<Directory, BuildError> {
        let mut clients = HashMap::new();
        for c in &config.clients {
            let bad = |m: String| BuildError::Invalid(format!("client {:?}: {m}", c.id));
            if let Some(h) = &c.secret_hash {
                validate_phc(h).map_err(|e| bad(e.to_string()))?;
            }
            let assertion_keys = match (&c.jwks, &c.public_key) {
                (Some(_), Some(_)) => return Err(bad("set jwks or public_key, not both".into())),
                (Some(j), None) => Some(KeySet::from_jwks_file(&config.resolve(j), &ASSERTION_ALGS)?),
                (None, Some(p)) => Some(pem_public_key(&config.resolve(p)).map_err(bad)?),
                (None, None) => None,
            };
            let has = |g: Grant| c.grants.contains(&g);
            clients.insert(
                c.id.clone(),
                Client {
                    id: c.id.clone(),
                    secret_hash: c.secret_hash.clone(),
                    public: c.public,
                    require_dpop: c.require_dpop,
                    grants: Grants {
                        client_credentials: has(Grant::ClientCredentials),
                        password: has(Grant::Password),
                        refresh_token: has(Grant::RefreshToken),
                    },
                    scopes: c.scopes.clone(),
                    default_scopes: c.default_scopes.clone(),
                    assertion_keys,
                    introspect: c.introspect,
                    audience: c.audience.clone().unwrap_or_else(|| config.tokens.audience.clone()),
                },
            );
        }
        let mut users = HashMap::new();
        for u in &config.users {
            validate_phc(&u.password_hash).map_err(|e| BuildError::Invalid(format!("user {:?}: {e}", u.username)))?;
            users.insert(
                u.username.clone(),
                User {
                    password_hash: u.password_hash.clone(),
                    scopes: u.scopes.clone(),
                    sub: u.sub.clone().unwrap_or_else(|| u.username.clone()),
                    disabled: u.disabled,
                },
            );
        }
        let by_sub = users.iter().map(|(name, u)| (u.sub.clone(), name.clone())).collect();
        Ok(Directory { clients, users, by_sub, verified: VerifiedSecrets::new(Duration::from_secs(300), 10_000) })
    }

    /// The user whose tokens carry this `sub`.
    pub fn user_by_sub(&self, sub: &str) -> Option<&User> {
        self.by_sub.get(sub).and_then(|name| self.users.get(name))
    }
}

/// A PEM public key (SPKI) as a one-key set under kid "default", for each algorithm it can serve.
fn pem_public_key(path: &std::path::Path) -> Result<KeySet, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| format!("{}: {e:?}", path.display()))?;
    let mut set = KeySet::default();
    for alg in ASSERTION_ALGS {
        if let Ok(k) = VerifyKey::public(alg, spki.as_ref()) {
            set.insert("default".into(), k);
        }
    }
    if set.is_empty() {
        return Err(format!("{}: unsupported public key", path.display()));
    }
    Ok(set)
}
