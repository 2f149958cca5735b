//! The client and user tables of `gateway.toml` (`[[clients]]`, `[[users]]`) and of the files
//! `clients_file` and `users_file` name, which are merged into them and checked together.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{parse_error, ConfigError};
use super::tls::TlsConfig;

/// `[[clients]]`: an OAuth2 client of the token endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// PHC string (argon2id) of the client secret; never the secret itself.
    #[serde(default)]
    pub secret_hash: Option<String>,
    /// A public client has no secret and may only name itself (password grant only).
    #[serde(default)]
    pub public: bool,
    /// Every token request must carry a DPoP proof; its tokens are all DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// This client's own rate on every route with a `rate_limit` (instead of the route's).
    #[serde(default)]
    pub rate_limit: Option<super::ClientRateLimit>,
    /// Grants it may use.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Scopes it may be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes granted when a request names none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// JWKS file of its keys, for `private_key_jwt` client assertions.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// PEM public key file, for `private_key_jwt` client assertions.
    #[serde(default)]
    pub public_key: Option<PathBuf>,
    /// May call the introspection endpoint.
    #[serde(default)]
    pub introspect: bool,
    /// `aud` of access tokens issued to it (default `tokens.audience`).
    #[serde(default)]
    pub audience: Option<String>,
    /// RFC 8705 client authentication by certificate; absent, the method follows from the
    /// credentials configured (secret, keys, or public).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<TlsClientAuthMethod>,
    /// `tls_client_auth`: the certificate's subject DN, as an RFC 4514 string, matched exactly.
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a dNSName the certificate's SAN must list.
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a uniformResourceIdentifier the certificate's SAN must list.
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an iPAddress the certificate's SAN must list.
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an rfc822Name the certificate's SAN must list.
    #[serde(default)]
    pub tls_client_auth_san_email: Option<String>,
    /// `self_signed_tls_client_auth`: PEM file of the certificates registered for the client.
    #[serde(default)]
    pub tls_client_certificates: Option<PathBuf>,
    /// Bind its access tokens to the client certificate of the token request (RFC 8705 section
    /// 3); default true for the two certificate methods, false otherwise.
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: Option<bool>,
}

/// `[[clients]] token_endpoint_auth_method`: the RFC 8705 certificate methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsClientAuthMethod {
    /// A certificate that chains to `tls.client_ca`, with the configured subject or SAN.
    TlsClientAuth,
    /// A certificate registered for the client (`tls_client_certificates`), no chain needed.
    SelfSignedTlsClientAuth,
}

impl TlsClientAuthMethod {
    /// The RFC 8705 metadata name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsClientAuthMethod::TlsClientAuth => "tls_client_auth",
            TlsClientAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

impl ClientConfig {
    /// The `tls_client_auth_*` keys that are set, by name.
    pub fn tls_subject_keys(&self) -> Vec<(&'static str, &str)> {
        [
            ("tls_client_auth_subject_dn", &self.tls_client_auth_subject_dn),
            ("tls_client_auth_san_dns", &self.tls_client_auth_san_dns),
            ("tls_client_auth_san_uri", &self.tls_client_auth_san_uri),
            ("tls_client_auth_san_ip", &self.tls_client_auth_san_ip),
            ("tls_client_auth_san_email", &self.tls_client_auth_san_email),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// Whether its access tokens are bound to the token request's certificate.
    pub fn binds_certificate(&self) -> bool {
        self.tls_client_certificate_bound_access_tokens.unwrap_or(self.token_endpoint_auth_method.is_some())
    }
}

/// A grant type of the token endpoint, as named in `[[clients]] grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// `client_credentials`: machine to machine.
    ClientCredentials,
    /// `password`: trusted first-party apps (opt-in, RFC 9700 discourages it).
    Password,
    /// `refresh_token`: rotation of refresh tokens issued by the password grant.
    RefreshToken,
}

impl Grant {
    /// Every grant, in the order docs/configuration.md lists them (`[[clients]] grants`).
    pub const ALL: [Grant; 3] = [Grant::ClientCredentials, Grant::Password, Grant::RefreshToken];

    /// The `grant_type` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::RefreshToken => "refresh_token",
        }
    }

    /// The grant a `grant_type` value names, if any.
    pub fn parse(s: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// `[[users]]`: a resource owner for the password grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub username: String,
    /// PHC string (argon2id) of the password.
    pub password_hash: String,
    /// Scopes the user may grant.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `sub` of the user's tokens (default: the username).
    #[serde(default)]
    pub sub: Option<String>,
    /// A disabled user can neither log in nor refresh.
    #[serde(default)]
    pub disabled: bool,
}

/// `clients_file` / `users_file` contents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesFile {
    /// Clients listed in the file.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Users listed in the file.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// The `[[clients]]` and `[[users]]` of a `clients_file` or `users_file`.
pub(super) fn read(path: &Path) -> Result<TablesFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
    toml::from_str(&text).map_err(|e| parse_error(path, &text, e))
}

/// The RFC 8705 keys of one client: one method, exactly the keys that method reads, and a
/// way for certificates to arrive.
fn validate_tls_client(tls: &TlsConfig, c: &ClientConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(format!("client {:?}: {m}", c.id)));
    let subjects = c.tls_subject_keys();
    let Some(method) = c.token_endpoint_auth_method else {
        if let Some((key, _)) = subjects.first() {
            return bad(format!("{key} needs token_endpoint_auth_method = \"tls_client_auth\""));
        }
        if c.tls_client_certificates.is_some() {
            return bad(
                "tls_client_certificates needs token_endpoint_auth_method = \"self_signed_tls_client_auth\"".into()
            );
        }
        return Ok(());
    };
    let m = method.as_str();
    if c.public || c.secret_hash.is_some() || c.jwks.is_some() || c.public_key.is_some() {
        return bad(format!("token_endpoint_auth_method = {m:?} takes no secret_hash, jwks, public_key or public"));
    }
    if !tls.mtls_enabled() {
        return bad(format!(
            "token_endpoint_auth_method = {m:?} needs tls.client_auth = \"optional\" or \"required\", or tls.client_cert_header"
        ));
    }
    match method {
        TlsClientAuthMethod::TlsClientAuth => {
            if subjects.len() != 1 {
                return bad(
                    "tls_client_auth needs exactly one of tls_client_auth_subject_dn, tls_client_auth_san_dns, \
                            tls_client_auth_san_uri, tls_client_auth_san_ip, tls_client_auth_san_email"
                        .into(),
                );
            }
            if tls.client_ca.is_none() {
                return bad("tls_client_auth needs tls.client_ca (the CAs its certificate must chain to)".into());
            }
            if c.tls_client_certificates.is_some() {
                return bad("tls_client_certificates is for self_signed_tls_client_auth, not tls_client_auth".into());
            }
            if let Some(ip) = &c.tls_client_auth_san_ip {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return bad(format!("tls_client_auth_san_ip {ip:?} is not an IP address"));
                }
            }
        }
        TlsClientAuthMethod::SelfSignedTlsClientAuth => {
            if let Some((key, _)) = subjects.first() {
                return bad(format!("{key} is for tls_client_auth, not self_signed_tls_client_auth"));
            }
            if c.tls_client_certificates.is_none() {
                return bad("self_signed_tls_client_auth needs tls_client_certificates (a PEM file)".into());
            }
        }
    }
    Ok(())
}

/// Checks the merged tables: unique ids and usernames, and each client's keys consistent with its
/// kind, its authentication method and the listener's client certificates (`tls`).
pub(super) fn validate(clients: &[ClientConfig], users: &[UserConfig], tls: &TlsConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    let mut ids = std::collections::HashSet::new();
    for c in clients {
        if c.id.is_empty() || !ids.insert(c.id.as_str()) {
            return bad(format!("client id {:?} is empty or listed twice", c.id));
        }
        if let Some(l) = &c.rate_limit {
            super::quota::check_rate(&format!("client {:?}: rate_limit", c.id), l.per_second, l.burst)?;
        }
        if c.public && (c.secret_hash.is_some() || c.grants.contains(&Grant::ClientCredentials)) {
            return bad(format!("client {:?}: a public client has no secret and no client_credentials grant", c.id));
        }
        validate_tls_client(tls, c)?;
        if c.token_endpoint_auth_method.is_none()
            && !c.public
            && c.secret_hash.is_none()
            && c.jwks.is_none()
            && c.public_key.is_none()
        {
            return bad(format!(
                "client {:?}: needs secret_hash, jwks, public_key or token_endpoint_auth_method (or public = true)",
                c.id
            ));
        }
        if let Some(d) = c.default_scopes.iter().find(|d| !c.scopes.contains(d)) {
            return bad(format!("client {:?}: default scope {d:?} is not in its scopes", c.id));
        }
    }
    let mut names = std::collections::HashSet::new();
    for u in users {
        if u.username.is_empty() || !names.insert(u.username.as_str()) {
            return bad(format!("username {:?} is empty or listed twice", u.username));
        }
    }
    Ok(())
}
