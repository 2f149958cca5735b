//! Client certificates (mutual TLS, RFC 8705): the CAs they chain to (`tls.client_ca`), which
//! certificates a handshake accepts, and what the token endpoint reads from them (thumbprint,
//! subject DN, SANs). Knows nothing of snapshots or requests: the listener's verifier
//! (`listener::handshake`) and the token endpoint (`oauth::mtls`) call in here.
//!
//! # Two layers
//! The handshake (TLS layer) accepts a certificate that chains to `tls.client_ca`, or, only when
//! some client uses `self_signed_tls_client_auth`, a self-signed one (its issuer is its subject
//! and its own key verifies its signature). Either way rustls still verifies the handshake
//! signature, so the client holds the certificate's private key. Accepting a self-signed
//! certificate authenticates nobody by itself: the application layer decides, per client, and
//! `tls_client_auth` verifies the chain again there ([`ClientTls::chains`]), so a self-signed
//! certificate that got through the handshake can never pass as a CA-issued one.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use super::{err, TlsError};
use crate::reason::pem_reason;

/// base64url SHA-256 of a DER certificate: its RFC 8705 `x5t#S256`.
pub fn thumbprint(der: &[u8]) -> String {
    use base64::Engine;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// A client certificate as the token endpoint and the proxy need it.
#[derive(Debug)]
pub struct ClientCert {
    /// The DER certificate, for `tls_client_auth` subject checks.
    pub der: Vec<u8>,
    /// base64url SHA-256 of `der`: the `x5t#S256` a bound token must carry.
    pub x5t_s256: String,
    /// The certificates the client sent after its own (TLS chain, or the load balancer's
    /// header), for `tls_client_auth`'s chain check at the token endpoint.
    pub intermediates: Vec<CertificateDer<'static>>,
}

impl ClientCert {
    /// A certificate without intermediates.
    pub fn from_der(der: Vec<u8>) -> ClientCert {
        let x5t_s256 = thumbprint(&der);
        ClientCert { der, x5t_s256, intermediates: Vec::new() }
    }

    /// The client's certificate chain as sent (its own certificate first); None when empty.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<ClientCert> {
        let (leaf, rest) = chain.split_first()?;
        let mut cert = ClientCert::from_der(leaf.to_vec());
        cert.intermediates = rest.iter().map(|c| c.clone().into_owned()).collect();
        Some(cert)
    }
}

/// What the HTTPS listener and the token endpoint check client certificates against; built with
/// each snapshot, so a reload changes it for the next handshake.
pub struct ClientTls {
    /// rustls' webpki verifier over `tls.client_ca` (client-auth usage, validity, chain).
    chain: Arc<dyn ClientCertVerifier>,
    /// Whether the handshake also lets a self-signed certificate through (some client uses
    /// `self_signed_tls_client_auth`); the token endpoint decides what it is worth.
    accept_self_signed: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("accept_self_signed", &self.accept_self_signed).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA certificates of `ca` (PEM); fails when it holds none or one is unusable.
    pub fn load(ca: &Path, accept_self_signed: bool) -> Result<ClientTls, TlsError> {
        let pem = std::fs::read(ca).map_err(|e| err(ca, crate::reason::io_reason(&e)))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.map_err(|e| err(ca, pem_reason(&e)))?).map_err(|e| err(ca, e))?;
        }
        if roots.is_empty() {
            return Err(err(ca, "holds no CA certificate"));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Unauthenticated clients are allowed here; whether the listener insists is decided per
        // handshake from `tls.client_auth` (see `listener::handshake`).
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(ca, e))?;
        Ok(ClientTls { chain, accept_self_signed })
    }

    /// The handshake's rule: the certificate chains to `tls.client_ca`, or it is self-signed and
    /// self-signed certificates are let through. The error is the chain's.
    pub fn verify_handshake(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match self.chain.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => Ok(()),
            Err(_) if self.accept_self_signed && intermediates.is_empty() && is_self_signed(end_entity) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the certificate chains to `tls.client_ca` now (the `tls_client_auth` check, made
    /// again at the token endpoint whatever the handshake let through).
    pub fn chains(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>], now: UnixTime) -> bool {
        self.chain.verify_client_cert(&CertificateDer::from(end_entity), intermediates, now).is_ok()
    }
}

/// A certificate whose issuer is its subject and whose own key verifies its signature.
pub fn is_self_signed(der: &[u8]) -> bool {
    match x509_parser::parse_x509_certificate(der) {
        Ok((rest, cert)) => {
            rest.is_empty() && cert.issuer().as_raw() == cert.subject().as_raw() && cert.verify_signature(None).is_ok()
        }
        Err(_) => false,
    }
}

/// The thumbprints of the certificates in a PEM file (`tls_client_certificates`).
pub fn registered_thumbprints(path: &Path) -> Result<Vec<String>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err(path, crate::reason::io_reason(&e)))?;
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| err(path, pem_reason(&e)))?;
        if x509_parser::parse_x509_certificate(&c).is_err() {
            return Err(err(path, "holds a certificate that is not valid X.509"));
        }
        out.push(thumbprint(&c));
    }
    if out.is_empty() {
        return Err(err(path, "holds no certificate"));
    }
    Ok(out)
}

/// What a `tls_client_auth` client's certificate must show (exactly one is configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectMatch {
    /// `tls_client_auth_subject_dn`: the subject as an RFC 4514 string, compared exactly.
    Dn(String),
    /// `tls_client_auth_san_dns`: a dNSName (compared without regard to ASCII case).
    Dns(String),
    /// `tls_client_auth_san_uri`: a uniformResourceIdentifier, compared exactly.
    Uri(String),
    /// `tls_client_auth_san_ip`: an iPAddress.
    Ip(IpAddr),
    /// `tls_client_auth_san_email`: an rfc822Name, compared exactly.
    Email(String),
}

impl SubjectMatch {
    /// Whether the DER certificate shows this subject; false for anything unparsable.
    pub fn matches(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
        if let SubjectMatch::Dn(want) = self {
            return rfc4514(cert.subject()).is_some_and(|dn| dn == *want);
        }
        sans(&cert).iter().any(|n| match (self, n) {
            (SubjectMatch::Dns(w), GeneralName::DNSName(d)) => w.eq_ignore_ascii_case(d),
            (SubjectMatch::Uri(w), GeneralName::URI(u)) => w == u,
            (SubjectMatch::Email(w), GeneralName::RFC822Name(e)) => w == e,
            (SubjectMatch::Ip(w), GeneralName::IPAddress(b)) => ip_of(b) == Some(*w),
            _ => false,
        })
    }
}

/// The SAN entries of a certificate (none when it has no SAN, or a malformed one).
fn sans<'a>(cert: &'a X509Certificate<'a>) -> Vec<GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        _ => Vec::new(),
    }
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The RFC 4514 short names this formats by name (plus `emailAddress` and `serialNumber`, as
/// `openssl x509 -nameopt RFC2253` prints them); any other type is its dotted OID.
const SHORT_NAMES: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("2.5.4.5", "serialNumber"),
];

/// A name as an RFC 4514 string: RDNs last to first, joined by `,`; multi-valued RDNs by `+`;
/// string values escaped; other values, and types without a short name, as `#` and hex DER.
/// None when a value's DER cannot be rebuilt (a tag past 30 or a huge length).
pub fn rfc4514(name: &X509Name<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
            let value = match (short, atv.as_str()) {
                (Some(_), Ok(s)) => escape(s),
                _ => hex_der(atv.attr_value())?,
            };
            parts.push(format!("{}={value}", short.map_or(oid.clone(), str::to_owned)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 4514 section 2.4 escaping of a string value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `#` and the hex of a value's DER (tag, length, contents).
fn hex_der(v: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Option<String> {
    let tag = v.header.tag().0;
    if tag > 30 {
        return None;
    }
    let first = ((v.header.class() as u8) << 6) | (u8::from(v.header.is_constructed()) << 5) | tag as u8;
    let mut der = vec![first];
    let len = v.data.len();
    match len {
        0..=127 => der.push(len as u8),
        128..=255 => der.extend([0x81, len as u8]),
        256..=65535 => der.extend([0x82, (len >> 8) as u8, len as u8]),
        _ => return None,
    }
    der.extend_from_slice(v.data);
    Some(der.iter().fold(String::from("#"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    }))
}

/// Why a load balancer's client-certificate header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertHeaderError {
    /// Two or more of the header: which one the balancer meant cannot be told.
    #[error("the client certificate header was sent more than once")]
    Repeated,
    /// Not percent-encoded PEM text.
    #[error("the client certificate header is not URL-encoded PEM")]
    NotPem,
    /// PEM without a certificate in it.
    #[error("the client certificate header holds no certificate")]
    Empty,
    /// A certificate that does not parse as X.509.
    #[error("the client certificate header holds a certificate that is not X.509")]
    NotX509,
}

/// The certificates in a client-certificate header: URL-encoded PEM, the client's certificate
/// first and any intermediates after it (nginx `$ssl_client_escaped_cert`, AWS ALB). `+` stays
/// `+` (base64 uses it; these encoders leave it unescaped).
pub fn from_header(value: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertHeaderError> {
    let b = value;
    let bad_escape = b
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'%' && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()));
    if bad_escape {
        return Err(CertHeaderError::NotPem);
    }
    let pem: Vec<u8> = percent_encoding::percent_decode(value).collect();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|_| CertHeaderError::NotPem)?;
    if certs.is_empty() {
        return Err(CertHeaderError::Empty);
    }
    if certs.iter().any(|c| !matches!(x509_parser::parse_x509_certificate(c), Ok((rest, _)) if rest.is_empty())) {
        return Err(CertHeaderError::NotX509);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)], sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_dn_is_rfc4514_last_rdn_first_and_escaped() {
        let der = cert(&[(rcgen::DnType::CountryName, "DE"), (rcgen::DnType::CommonName, "app, \"one\"")], vec![]);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(rfc4514(c.subject()).unwrap(), "CN=app\\, \\\"one\\\",C=DE");
        assert!(SubjectMatch::Dn("CN=app\\, \\\"one\\\",C=DE".into()).matches(&der));
        assert!(!SubjectMatch::Dn("C=DE,CN=app\\, \\\"one\\\"".into()).matches(&der), "order matters");
        assert_eq!(escape(" #a "), "\\ #a\\ ");
        assert_eq!(escape("#a"), "\\#a");
    }

    #[test]
    fn sans_match_by_kind() {
        let der = cert(
            &[(rcgen::DnType::CommonName, "x")],
            vec![
                rcgen::SanType::DnsName("App.Example".try_into().unwrap()),
                rcgen::SanType::URI("spiffe://example/app".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()),
                rcgen::SanType::Rfc822Name("app@example.com".try_into().unwrap()),
            ],
        );
        assert!(SubjectMatch::Dns("app.example".into()).matches(&der));
        assert!(SubjectMatch::Uri("spiffe://example/app".into()).matches(&der));
        assert!(SubjectMatch::Ip("10.1.2.3".parse().unwrap()).matches(&der));
        assert!(SubjectMatch::Email("app@example.com".into()).matches(&der));
        assert!(!SubjectMatch::Dns("spiffe://example/app".into()).matches(&der), "kinds do not mix");
        assert!(!SubjectMatch::Ip("10.1.2.4".parse().unwrap()).matches(&der));
        assert!(!SubjectMatch::Dns("x".into()).matches(b"not a certificate"));
    }

    #[test]
    fn self_signed_is_told_from_ca_issued() {
        let own = cert(&[(rcgen::DnType::CommonName, "me")], vec![]);
        assert!(is_self_signed(&own));
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::default();
        leaf.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        let leaf = leaf.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer).unwrap();
        assert!(!is_self_signed(leaf.der()));
        assert!(!is_self_signed(b"junk"));
    }

    #[test]
    fn header_values_are_url_encoded_pem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap().self_signed(&key).unwrap();
        let enc: String =
            percent_encoding::utf8_percent_encode(&c.pem(), percent_encoding::NON_ALPHANUMERIC).to_string();
        assert_eq!(from_header(enc.as_bytes()).unwrap()[0].as_ref(), c.der().as_ref());
        // ALB-style: `+`, `/` and `=` left as they are.
        let alb = c.pem().replace('\n', "%0A").replace(' ', "%20");
        assert_eq!(from_header(alb.as_bytes()).unwrap()[0].as_ref(), c.der().as_ref());
        assert_eq!(from_header(b"%zz").unwrap_err(), CertHeaderError::NotPem);
        assert_eq!(from_header(b"hello").unwrap_err(), CertHeaderError::Empty);
        let junk = "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A";
        assert_eq!(from_header(junk.as_bytes()).unwrap_err(), CertHeaderError::NotX509);
        let broken = "-----BEGIN%20CERTIFICATE-----%0A!!!%0A-----END%20CERTIFICATE-----%0A";
        assert_eq!(from_header(broken.as_bytes()).unwrap_err(), CertHeaderError::NotPem);
    }
}
