//! `[tls]`: the HTTPS listener's certificate, and client certificates (mutual TLS, RFC 8705):
//! the CAs they chain to, whether the handshake asks for one, and the header a TLS-terminating
//! load balancer passes one in.

use std::path::PathBuf;

use serde::Deserialize;

use super::cidr::Cidr;
use super::error::ConfigError;

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain served on the HTTPS listener.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// Write a self-signed localhost certificate at `cert`/`key` when they are missing.
    pub self_signed_if_missing: bool,
    /// PEM file of the CAs that client certificates must chain to (mutual TLS, RFC 8705), for the
    /// handshake and for `tls_client_auth` clients.
    pub client_ca: Option<PathBuf>,
    /// Whether the HTTPS listener asks for a client certificate, and whether it insists.
    pub client_auth: ClientAuthMode,
    /// Request header in which a TLS-terminating load balancer passes the client's certificate
    /// (URL-encoded PEM); believed only from `client_cert_header_peers`.
    pub client_cert_header: Option<String>,
    /// Peers (address blocks) whose `client_cert_header` is believed; anyone else's is ignored.
    pub client_cert_header_peers: Vec<Cidr>,
}

/// `tls.client_auth`: what the HTTPS listener asks of clients during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No certificate is requested.
    #[default]
    None,
    /// A certificate is requested; a client without one still connects.
    Optional,
    /// A handshake without an acceptable certificate fails.
    Required,
}

impl ClientAuthMode {
    /// The key's value as written in `gateway.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMode::None => "none",
            ClientAuthMode::Optional => "optional",
            ClientAuthMode::Required => "required",
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: "certs/gateway.crt".into(),
            key: "certs/gateway.key".into(),
            self_signed_if_missing: true,
            client_ca: None,
            client_auth: ClientAuthMode::None,
            client_cert_header: None,
            client_cert_header_peers: Vec::new(),
        }
    }
}

impl TlsConfig {
    /// Whether client certificates can reach the gateway at all (handshake or trusted header):
    /// what discovery announces as `tls_client_certificate_bound_access_tokens`.
    pub fn mtls_enabled(&self) -> bool {
        self.client_auth != ClientAuthMode::None || self.client_cert_header.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.client_auth != ClientAuthMode::None && self.client_ca.is_none() {
            return bad(format!(
                "tls.client_auth = {:?} needs tls.client_ca (the CAs client certificates must chain to)",
                self.client_auth.as_str()
            ));
        }
        match &self.client_cert_header {
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
                bad(format!("tls.client_cert_header {h:?} is not a valid header name"))
            }
            Some(_) if self.client_cert_header_peers.is_empty() => bad(
                "tls.client_cert_header needs tls.client_cert_header_peers (the load balancers whose header is believed)"
                    .into(),
            ),
            None if !self.client_cert_header_peers.is_empty() => {
                bad("tls.client_cert_header_peers is set but tls.client_cert_header is not".into())
            }
            _ => Ok(()),
        }
    }
}
