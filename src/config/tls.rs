//! `[tls]`: the HTTPS listener's certificates (the default one, and one per server name under
//! `[[tls.certificates]]`, picked by SNI), and client certificates (mutual TLS, RFC 8705): the
//! CAs they chain to, whether the handshake asks for one, and the header a TLS-terminating load
//! balancer passes one in.

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
    /// Certificates for particular server names (SNI); `cert`/`key` serve every other name and
    /// clients that send none.
    pub certificates: Vec<TlsCertificate>,
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

/// `[[tls.certificates]]`: a certificate served to clients that ask for one of its names (SNI).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// The server names it is served for: exact names, or `*.` and a domain for any one label
    /// below it; each must be covered by the certificate's own subjectAltName.
    pub names: Vec<String>,
    /// PEM certificate chain, relative to the config file's folder.
    pub cert: PathBuf,
    /// PEM private key of that certificate, relative to the config file's folder.
    pub key: PathBuf,
}

impl TlsCertificate {
    /// How the entry is named in errors: by its first name, `[[tls.certificates]] "a.example"`.
    pub fn label(&self) -> String {
        format!("[[tls.certificates]] {:?}", self.names.first().map_or("", String::as_str))
    }

    /// Its names as they are matched: ASCII-lowercase, without a trailing dot.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.names.iter().map(|n| server_name_key(n))
    }
}

/// A server name as the listener matches it: ASCII-lowercase, without a trailing dot.
fn server_name_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Why `name` cannot be a `[[tls.certificates]]` name, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    let domain = name.strip_prefix("*.").unwrap_or(name);
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Some(
            "is an IP address, which clients never send as a server name (SNI); connections to an address get \
             tls.cert",
        );
    }
    if rustls_pki_types::DnsName::try_from(domain).is_err() || domain.contains('*') {
        return Some("is not a DNS name (a wildcard is `*.` and a domain, standing for one label)");
    }
    None
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
            certificates: Vec::new(),
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
        self.validate_certificates()?;
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

    /// Every `[[tls.certificates]]` entry has names, each a DNS name or a `*.` wildcard, and no
    /// name is listed twice (in one entry or across entries).
    fn validate_certificates(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (n, entry) in self.certificates.iter().enumerate() {
            if entry.names.is_empty() {
                return bad(format!(
                    "the [[tls.certificates]] entry with cert = {:?} has no names; list the server names it is served \
                     for",
                    entry.cert.display().to_string()
                ));
            }
            for (name, key) in entry.names.iter().zip(entry.keys()) {
                if let Some(why) = name_problem(name) {
                    return bad(format!("{}: the name {name:?} {why}", entry.label()));
                }
                match seen.iter().find(|(k, _)| *k == key) {
                    Some((_, m)) if *m == n => {
                        return bad(format!("{} lists the name {name:?} twice", entry.label()));
                    }
                    Some((_, m)) => {
                        return bad(format!(
                            "{} lists the name {name:?}, which {} lists already; a name has one certificate",
                            entry.label(),
                            self.certificates[*m].label()
                        ));
                    }
                    None => seen.push((key, n)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(text: &str) -> Result<TlsConfig, String> {
        let tls: TlsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        tls.validate().map(|()| tls).map_err(|e| e.to_string())
    }

    const ADMIN: &str = "[[certificates]]\nnames = [\"admin.example.com\", \"*.admin.example.com\"]\n\
                         cert = \"certs/admin.crt\"\nkey = \"certs/admin.key\"\n";

    #[test]
    fn certificates_by_name_parse_and_match_lowercase() {
        let tls = validated(ADMIN).unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.certificates[0].cert, PathBuf::from("certs/admin.crt"));
        let upper = ADMIN.replace("admin.example.com\",", "Admin.Example.COM.\",");
        let keys: Vec<String> = validated(&upper).unwrap().certificates[0].keys().collect();
        assert_eq!(keys, ["admin.example.com", "*.admin.example.com"]);
        assert!(validated("").unwrap().certificates.is_empty());
    }

    #[test]
    fn duplicate_and_unusable_names_are_refused_naming_the_entry() {
        let other = "[[certificates]]\nnames = [\"api.example.com\", \"ADMIN.example.com\"]\ncert = \"o.crt\"\nkey = \"o.key\"\n";
        assert_eq!(
            validated(&format!("{ADMIN}{other}")).unwrap_err(),
            "[[tls.certificates]] \"api.example.com\" lists the name \"ADMIN.example.com\", which [[tls.certificates]] \
             \"admin.example.com\" lists already; a name has one certificate"
        );
        let twice = ADMIN.replace("\"*.admin.example.com\"", "\"admin.example.com.\"");
        assert_eq!(
            validated(&twice).unwrap_err(),
            "[[tls.certificates]] \"admin.example.com\" lists the name \"admin.example.com.\" twice"
        );
        for (name, says) in [
            ("127.0.0.1", "is an IP address, which clients never send as a server name (SNI)"),
            ("*.10.0.0.1", "is an IP address"),
            ("a.*.example.com", "is not a DNS name"),
            ("*", "is not a DNS name"),
            ("bad name", "is not a DNS name"),
        ] {
            let text = ADMIN.replace("\"*.admin.example.com\"", &format!("{name:?}"));
            let e = validated(&text).unwrap_err();
            assert!(
                e.starts_with(&format!("[[tls.certificates]] \"admin.example.com\": the name {name:?} {says}")),
                "{e}"
            );
        }
        let empty = "[[certificates]]\nnames = []\ncert = \"certs/x.crt\"\nkey = \"certs/x.key\"\n";
        assert_eq!(
            validated(empty).unwrap_err(),
            "the [[tls.certificates]] entry with cert = \"certs/x.crt\" has no names; list the server names it is \
             served for"
        );
        let e = validated("[[certificates]]\nnames = [\"a.example\"]\ncert = \"a.crt\"\n").unwrap_err();
        assert!(e.contains("missing field `key`"), "{e}");
    }
}
