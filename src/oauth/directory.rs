//! The client and user tables, compiled into the snapshot: PHC strings checked, assertion keys
//! parsed, grants as flags. Reloaded with everything else.

use std::collections::HashMap;
use std::time::Duration;

use crate::auth::keys::{Alg, KeySet, VerifyKey};
use crate::config::{ClientConfig, Config, Grant, TlsClientAuthMethod};
use crate::error::BuildError;
use crate::oauth::secrets::{validate_phc, VerifiedSecrets};
use crate::tls::client_cert::{registered_thumbprints, SubjectMatch};

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
    /// How it authenticates by certificate (RFC 8705 section 2), if it does.
    pub tls_auth: Option<TlsAuth>,
    /// Its access tokens are bound to the token request's certificate (RFC 8705 section 3).
    pub bind_certificate: bool,
}

/// A client's RFC 8705 authentication method and what it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsAuth {
    /// `tls_client_auth`: chains to `tls.client_ca` and shows this subject.
    Pki(SubjectMatch),
    /// `self_signed_tls_client_auth`: one of these registered thumbprints (`x5t#S256`).
    SelfSigned(Vec<String>),
}

impl Client {
    /// Whether a self-signed certificate may get through the handshake for this client.
    pub fn accepts_self_signed(&self) -> bool {
        matches!(self.tls_auth, Some(TlsAuth::SelfSigned(_)))
    }
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
    /// Clients with their own quota on limited routes, instead of each route's. Its own map,
    /// usually empty: looking a client up in an empty map hashes nothing.
    pub rate_limits: HashMap<String, crate::quota::Rate>,
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
                    tls_auth: tls_auth(config, c)?,
                    bind_certificate: c.binds_certificate(),
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
        let rate_limits = config
            .clients
            .iter()
            .filter_map(|c| {
                let l = c.rate_limit.as_ref()?;
                let burst = crate::config::default_burst(l.per_second, l.burst);
                Some((c.id.clone(), crate::quota::Rate { per_second: l.per_second, burst }))
            })
            .collect();
        let verified = VerifiedSecrets::new(Duration::from_secs(300), 10_000);
        Ok(Directory { clients, users, by_sub, verified, rate_limits })
    }

    /// The user whose tokens carry this `sub`.
    pub fn user_by_sub(&self, sub: &str) -> Option<&User> {
        self.by_sub.get(sub).and_then(|name| self.users.get(name))
    }
}

/// A client's certificate method, its keys checked by config validation already.
fn tls_auth(config: &Config, c: &ClientConfig) -> Result<Option<TlsAuth>, BuildError> {
    let bad = |m: &str| BuildError::Invalid(format!("client {:?}: {m}", c.id));
    Ok(match c.token_endpoint_auth_method {
        None => None,
        Some(TlsClientAuthMethod::SelfSignedTlsClientAuth) => {
            let file = c.tls_client_certificates.as_ref().ok_or_else(|| bad("needs tls_client_certificates"))?;
            Some(TlsAuth::SelfSigned(registered_thumbprints(&config.resolve(file))?))
        }
        Some(TlsClientAuthMethod::TlsClientAuth) => {
            let m = match (
                &c.tls_client_auth_subject_dn,
                &c.tls_client_auth_san_dns,
                &c.tls_client_auth_san_uri,
                &c.tls_client_auth_san_ip,
                &c.tls_client_auth_san_email,
            ) {
                (Some(dn), None, None, None, None) => SubjectMatch::Dn(dn.clone()),
                (None, Some(dns), None, None, None) => SubjectMatch::Dns(dns.clone()),
                (None, None, Some(uri), None, None) => SubjectMatch::Uri(uri.clone()),
                (None, None, None, Some(ip), None) => {
                    SubjectMatch::Ip(ip.parse().map_err(|_| bad("tls_client_auth_san_ip is not an IP address"))?)
                }
                (None, None, None, None, Some(email)) => SubjectMatch::Email(email.clone()),
                _ => return Err(bad("tls_client_auth needs exactly one tls_client_auth_* key")),
            };
            Some(TlsAuth::Pki(m))
        }
    })
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
