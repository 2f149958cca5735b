//! The server-certificate check of every connection tokengate opens (upstreams, other issuers'
//! key sets, Redis, the trace collector): webpki as rustls runs it, plus the one case where
//! curl and OpenSSL trust a certificate that webpki refuses. `openssl req -x509` (OpenSSL 3's
//! defaults) marks a self-signed certificate `CA:TRUE`, which webpki will not take as a server's
//! own certificate (`CaUsedAsEndEntity`); when the pinned file holds the very certificate the
//! server presents, it is trusted whatever its basic constraints, its names and dates still
//! checked. Every refusal is worded once here, as a sentence naming the server, what is wrong
//! with its certificate and the config key that pins what is trusted ([`describe`]).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Where the trusted certificates come from, for the sentences of refusals.
#[derive(Debug, Clone)]
pub struct Anchors {
    /// The config key that pins them (`upstream_ca`, `state.ca`...), or that names the peer
    /// when the public roots are trusted (`tracing.otlp_endpoint`).
    pub key: &'static str,
    /// The pinned PEM file; None for the webpki (public) roots.
    pub file: Option<PathBuf>,
}

impl Anchors {
    /// "upstream_ca pins certs/up.pem", or the advice to pin when the public roots refused.
    fn clause(&self) -> String {
        match &self.file {
            Some(f) => format!("{} pins {}", self.key, f.display()),
            None => format!("only publicly trusted CAs are accepted without a CA file pinned for {}", self.key),
        }
    }
}

/// A refused server certificate, in words; carried through rustls as the `OtherError` of
/// `InvalidCertificate`, so that it reaches the error chain of whoever opened the connection.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// webpki's verifier, with pinned certificates accepted as they are (see the module doc).
#[derive(Debug)]
pub struct ServerVerifier {
    /// The ordinary check: a chain to one of the anchors.
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the pinned file, matched byte for byte against the server's.
    pinned: Vec<CertificateDer<'static>>,
    /// For the words of a refusal.
    anchors: Anchors,
}

impl ServerVerifier {
    /// A verifier trusting `roots` (the certificates of `anchors.file`, or the public roots)
    /// and, as they are, the certificates in `pinned`.
    pub fn new(
        roots: rustls::RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        anchors: Anchors,
        provider: Arc<CryptoProvider>,
    ) -> Result<ServerVerifier, rustls::client::VerifierBuilderError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(ServerVerifier { webpki, pinned, anchors })
    }

    fn refuse(&self, server: &ServerName<'_>, why: String) -> rustls::Error {
        let sentence = format!("the certificate of {} {why}; {}", server.to_str(), self.anchors.clause());
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(sentence)))))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return pinned_as_is(end_entity, server_name, now)
                .map(|()| ServerCertVerified::assertion())
                .map_err(|why| self.refuse(server_name, why));
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| self.refuse(server_name, webpki_words(&e, self.anchors.file.is_some())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The checks left for a certificate trusted because it is the pinned one: its dates, and its
/// names. Names as webpki reads them (subjectAltName); a certificate with no subjectAltName at
/// all (`openssl req -x509 -subj /CN=host` without `-addext`) is matched on its common name, as
/// curl and OpenSSL do.
fn pinned_as_is(der: &CertificateDer<'_>, server: &ServerName<'_>, now: UnixTime) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| "cannot be parsed".to_owned())?;
    let validity = cert.validity();
    let now_secs = now.as_secs() as i64;
    if now_secs < validity.not_before.timestamp() {
        return Err(format!("is not valid before {}", date(validity.not_before.timestamp())));
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(format!("expired on {}", date(validity.not_after.timestamp())));
    }
    let parsed = rustls::server::ParsedCertificate::try_from(der).map_err(|_| "cannot be parsed".to_owned())?;
    if rustls::client::verify_server_name(&parsed, server).is_ok() {
        return Ok(());
    }
    let has_san = cert.subject_alternative_name().ok().flatten().is_some();
    let common_names: Vec<&str> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).collect();
    if !has_san && common_names.iter().any(|cn| name_matches(cn, server)) {
        return Ok(());
    }
    let named = if has_san { "its subjectAltName" } else { "its common name" };
    Err(format!("does not name this host ({named} does not match)"))
}

/// Whether a common name names `server`: the same IP address, or the same host name in any case.
fn name_matches(cn: &str, server: &ServerName<'_>) -> bool {
    match server {
        ServerName::IpAddress(ip) => cn.parse::<IpAddr>().is_ok_and(|c| c == IpAddr::from(*ip)),
        ServerName::DnsName(name) => cn.eq_ignore_ascii_case(name.as_ref()),
        _ => false,
    }
}

/// A Unix time as an RFC 3339 date, for the sentences.
fn date(secs: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What webpki refused, in words: the part of the sentence after "the certificate of HOST".
fn webpki_words(e: &rustls::Error, pinned_file: bool) -> String {
    let rustls::Error::InvalidCertificate(c) = e else { return tls_words(e) };
    match c {
        CertificateError::UnknownIssuer if pinned_file => "is not signed by a CA in the pinned file".into(),
        CertificateError::UnknownIssuer => "is not signed by a publicly trusted CA".into(),
        CertificateError::Expired => "has expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("expired on {}", date(not_after.as_secs() as i64))
        }
        CertificateError::NotValidYet => "is not valid yet".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("is not valid before {}", date(not_before.as_secs() as i64))
        }
        CertificateError::NotValidForName => "does not name this host".into(),
        CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => {
            "names no host (it has no subjectAltName)".into()
        }
        CertificateError::NotValidForNameContext { presented, .. } => {
            format!("names {}, not this host", presented.join(", "))
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "is not meant for TLS servers (its extended key usage)".into()
        }
        CertificateError::BadSignature => "has a signature that does not verify".into(),
        CertificateError::BadEncoding => "cannot be parsed".into(),
        CertificateError::Revoked => "is revoked".into(),
        CertificateError::UnhandledCriticalExtension => "has a critical extension tokengate does not know".into(),
        CertificateError::Other(OtherError(inner)) if format!("{inner:?}").contains("CaUsedAsEndEntity") => {
            // What `openssl req -x509` makes: trusted only as the exact certificate pinned.
            "is a CA certificate (CA:TRUE), which is trusted only as the very certificate pinned".into()
        }
        _ => "is signed with an algorithm, or in a form, that tokengate does not accept".into(),
    }
}

/// A TLS failure that is not a certificate check, in words.
fn tls_words(e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            if let Some(r) = inner.downcast_ref::<Refused>() {
                return r.0.clone();
            }
            format!("the server's certificate was refused ({inner})")
        }
        rustls::Error::InvalidCertificate(c) => format!("the server's certificate was refused ({c})"),
        rustls::Error::AlertReceived(A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity) => {
            "the server refused the TLS handshake: no TLS version or cipher in common".into()
        }
        rustls::Error::AlertReceived(A::CertificateRequired | A::BadCertificate | A::UnknownCA) => {
            "the server refused the TLS handshake: it wants a client certificate tokengate does not send".into()
        }
        rustls::Error::AlertReceived(A::UnrecognisedName) => {
            "the server refused the TLS handshake: it does not serve this host name".into()
        }
        rustls::Error::AlertReceived(a) => format!("the server ended the TLS handshake (alert {})", u8::from(*a)),
        rustls::Error::NoCertificatesPresented => "the server sent no certificate".into(),
        rustls::Error::PeerIncompatible(_) => "the server's TLS is incompatible with tokengate's".into(),
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => {
            "the server broke the TLS protocol (is it TLS at all?)".into()
        }
        rustls::Error::General(s) => s.clone(),
        other => format!("TLS failed: {other}"),
    }
}

/// What went wrong on an outgoing connection, in one sentence: a refused certificate as the
/// verifier worded it, another TLS failure or an OS error in words, else the innermost cause.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e;
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return tls_words(t);
        }
        innermost = err;
        cur = match err.downcast_ref::<std::io::Error>() {
            // An io::Error's source() skips the error it wraps (tokio-rustls wraps rustls's in
            // one, hyper-rustls that in another): step into it instead.
            Some(io) => match io.get_ref() {
                Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
                None => return crate::reason::io_reason(io),
            },
            None => err.source(),
        };
    }
    innermost.to_string()
}

/// The certificates of a pinned PEM file, for [`ServerVerifier::new`].
pub fn read_pinned(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| crate::reason::pem_reason(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::reason::pem_reason(&e))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
