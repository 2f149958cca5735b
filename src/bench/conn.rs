//! Opening connections: TCP with TCP_NODELAY, optional TLS (rustls; webpki roots, a CA file, or
//! no verification), then our own HTTP/1.1 exchange ([`super::h1`]) or hyper's h2 client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::h1::{H1Conn, Io};

use super::args::Plan;

/// What makes connections: TLS settings and protocol, shared by every URL of a run.
#[derive(Clone)]
pub struct Connector {
    /// Built once: roots or `--cacert` or no verification, ALPN for the protocol.
    tls: Arc<rustls::ClientConfig>,
    /// HTTP/2 instead of HTTP/1.1.
    h2: bool,
    /// Connect and TLS handshake timeout (and each request's, through its endpoints).
    timeout: Duration,
}

/// One URL, ready to connect to and build requests for.
pub struct Endpoint {
    /// Where to connect (brackets of an IPv6 literal removed).
    host: String,
    /// The port to connect to (the scheme's default when the URL has none).
    port: u16,
    /// The `Host` header of HTTP/1.1 requests.
    authority: HeaderValue,
    /// HTTP/1.1: the origin-form target; h2: the absolute URI (for `:scheme` and `:authority`).
    uri: Uri,
    /// https: the TLS settings and the name the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
    /// Hand requests to hyper's h2 client rather than write them as HTTP/1.1 bytes.
    h2: bool,
    /// Connect timeout, and the time a request gets to be answered in full.
    pub timeout: Duration,
}

/// A client handle on one open connection.
pub enum Sender {
    /// Our own HTTP/1.1 exchange in the connection's task (see [`super::h1`]).
    H1(H1Conn),
    /// hyper's h2 client; its connection driver runs as its own task.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connector {
    pub fn new(plan: &Plan) -> anyhow::Result<Connector> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder =
            rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let mut cfg = if plan.insecure {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &plan.cacert {
                Some(path) => {
                    use rustls_pki_types::pem::PemObject;
                    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    for c in certs {
                        roots.add(c.with_context(|| path.display().to_string())?)?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        cfg.alpn_protocols = vec![if plan.h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Ok(Connector { tls: Arc::new(cfg), h2: plan.h2, timeout: plan.timeout })
    }

    /// The same settings over HTTP/1.1 (for the one token-endpoint request of a run).
    pub fn http1(&self) -> Connector {
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector { tls: Arc::new(tls), h2: false, timeout: self.timeout }
    }

    /// The endpoint of an already-checked http(s) URL.
    pub fn for_url(&self, url: Uri) -> anyhow::Result<Endpoint> {
        let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
        let raw_host = url.host().context("URL without host")?;
        let host = raw_host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = HeaderValue::from_str(url.authority().context("URL without host")?.as_str())?;
        let tls = if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone()).context("bad TLS server name")?;
            Some((tokio_rustls::TlsConnector::from(self.tls.clone()), name))
        } else {
            None
        };
        // HTTP/1.1 sends origin-form plus Host; h2 needs the absolute URI for :scheme/:authority.
        let uri = if self.h2 { url } else { url.path_and_query().map_or("/", |p| p.as_str()).parse::<Uri>()? };
        Ok(Endpoint { host, port, authority, uri, tls, h2: self.h2, timeout: self.timeout })
    }
}

impl Endpoint {
    /// Opens a connection (TCP_NODELAY, TLS when https); h2 starts its driver task.
    pub async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        let io = match &self.tls {
            None => Io::Tcp(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .context("TLS handshake timed out")??;
                if self.h2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    bail!("the server did not agree to h2 over ALPN");
                }
                Io::Tls(Box::new(tls))
            }
        };
        if !self.h2 {
            return Ok(Sender::H1(H1Conn::new(io)));
        }
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(s))
    }

    /// Whether requests go out as h2 (built with [`Endpoint::request`]) rather than as bytes
    /// from [`Endpoint::encode`].
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// An h2 request builder for this endpoint's URL.
    pub fn request(&self, method: Method) -> http::request::Builder {
        Request::builder().method(method).uri(self.uri.clone())
    }

    /// The bytes of an HTTP/1.1 request to this endpoint's URL.
    pub fn encode(&self, method: &Method, headers: &[(HeaderName, HeaderValue)], body: &[u8]) -> Bytes {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        super::h1::encode(method, target, &self.authority, headers, body)
    }
}

/// Accepts any certificate (for `--insecure`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(msg, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(msg, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
