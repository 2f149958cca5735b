//! RFC 8705 over the wire: client authentication by certificate at the token endpoint
//! (`tls_client_auth`, `self_signed_tls_client_auth`), certificate-bound access tokens and their
//! check at the proxy, `tls.client_auth = "required"`, the load balancer's certificate header,
//! discovery and reload. Clients: rustls with a client certificate (h1 and h2) and stock `curl
//! --cert --key` (h1 and h2). Certificates: a CA and another CA made with rcgen, CA-issued client
//! certificates, and self-signed ones.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/dpop_client.rs"]
#[allow(dead_code)]
mod dpop_client;
#[path = "../support/test_ca.rs"]
#[allow(dead_code)]
mod test_ca;

mod binding;
mod curl;
mod header;
mod reload;
mod token_auth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use rcgen::DnType;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;
use test_ca::TestCa;

/// One client credential: certificate and key, as files (for curl and the config) and DER.
pub struct Cred {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Cred {
    fn write(dir: &std::path::Path, name: &str, (cert_pem, key_pem): (String, String)) -> Cred {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        write_file(&cert_path, &cert_pem);
        write_file(&key_path, &key_pem);
        Cred { cert_pem, key_pem, cert_path, key_path }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("certificate PEM")
    }

    /// `x5t#S256` of the certificate, computed here independently of the gateway.
    pub fn thumbprint(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(&self.der()))
    }

    /// The certificate as a load balancer passes it: URL-encoded PEM (nginx `$ssl_client_escaped_cert`).
    pub fn header_value(&self) -> String {
        percent_encoding::utf8_percent_encode(&self.cert_pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }
}

/// A self-signed certificate with subject `dn`: (certificate PEM, key PEM).
fn self_signed(dn: &[(DnType, &str)]) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// The subject of `pki-app` in DER order (O, then CN): `CN=pki-app,O=Acme` as RFC 4514 writes it.
const PKI_DN: [(DnType, &str); 2] = [(DnType::OrganizationName, "Acme"), (DnType::CommonName, "pki-app")];

/// The certificates of the tests, in their own folder.
pub struct Pki {
    pub dir: TempDir,
    /// The CA of `tls.client_ca`.
    pub ca_path: PathBuf,
    /// Another CA (its PEM file), trusted nowhere unless a test swaps it in.
    pub other_ca_path: PathBuf,
    /// CA-issued, subject `CN=pki-app,O=Acme`: the `pki-app` client's certificate.
    pub pki_app: Cred,
    /// CA-issued, subject `CN=intruder,O=Acme`.
    pub wrong_subject: Cred,
    /// CA-issued, SAN dNSName `san-app.example`: the `san-app` client's certificate.
    pub san_app: Cred,
    /// Issued by the other CA, subject `CN=pki-app,O=Acme`.
    pub foreign: Cred,
    /// Self-signed, subject `CN=pki-app,O=Acme`: looks like `pki-app`'s but no CA signed it.
    pub self_signed_pki: Cred,
    /// Self-signed, registered for `self-app`.
    pub self_app: Cred,
    /// Self-signed, registered for no one.
    pub unregistered: Cred,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("tokengate test client CA");
        let other = TestCa::new("some other CA");
        let ca_path = dir.path().join("client-ca.pem");
        write_file(&ca_path, &ca.pem);
        let other_ca_path = dir.path().join("other-ca.pem");
        write_file(&other_ca_path, &other.pem);
        let d = dir.path();
        let pki = Pki {
            pki_app: Cred::write(d, "pki-app", ca.client_cert(&PKI_DN, &[])),
            wrong_subject: Cred::write(
                d,
                "intruder",
                ca.client_cert(&[(DnType::OrganizationName, "Acme"), (DnType::CommonName, "intruder")], &[]),
            ),
            san_app: Cred::write(
                d,
                "san-app",
                ca.client_cert(&[(DnType::CommonName, "whatever")], &["san-app.example"]),
            ),
            foreign: Cred::write(d, "foreign", other.client_cert(&PKI_DN, &[])),
            self_signed_pki: Cred::write(d, "self-pki", self_signed(&PKI_DN)),
            self_app: Cred::write(d, "self-app", self_signed(&[(DnType::CommonName, "self-app")])),
            unregistered: Cred::write(d, "unregistered", self_signed(&[(DnType::CommonName, "self-app")])),
            ca_path,
            other_ca_path,
            dir,
        };
        write_file(&pki.dir.path().join("self-app-registered.pem"), &pki.self_app.cert_pem);
        pki
    }

    /// The `[[clients]]` of the tests: `pki-app` (subject DN), `san-app` (SAN dNSName),
    /// `self-app` (self-signed, registered), `secret-app` (a secret, tokens not bound) and
    /// `bound-secret-app` (a secret, tokens bound).
    pub fn clients(&self) -> String {
        let hash = hash_of(SECRET);
        let registered = self.dir.path().join("self-app-registered.pem");
        format!(
            r#"
[[clients]]
id = "pki-app"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=pki-app,O=Acme"
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]

[[clients]]
id = "san-app"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_san_dns = "san-app.example"
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]

[[clients]]
id = "self-app"
token_endpoint_auth_method = "self_signed_tls_client_auth"
tls_client_certificates = "{registered}"
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]

[[clients]]
id = "secret-app"
secret_hash = "{hash}"
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]

[[clients]]
id = "bound-secret-app"
secret_hash = "{hash}"
tls_client_certificate_bound_access_tokens = true
grants = ["client_credentials"]
scopes = ["read"]
default_scopes = ["read"]
"#,
            registered = registered.display()
        )
    }

    /// The test gateway's config: `[tls] client_ca` and `client_auth = "optional"` plus
    /// `tls_extra`, the clients, `/pub` (public echo) and `/api` to `upstream` (a URL or `echo`).
    pub fn config(&self, tls_extra: &str, upstream: &str) -> Config {
        self.config_mode("optional", tls_extra, upstream)
    }

    /// [`Pki::config`] with `tls.client_auth = mode`.
    pub fn config_mode(&self, mode: &str, tls_extra: &str, upstream: &str) -> Config {
        Config::new()
            .tls(&format!("client_ca = \"{}\"\nclient_auth = \"{mode}\"\n{tls_extra}", self.ca_path.display()))
            .rest(&self.clients())
            .rest(&route("/pub", "echo", "public = true"))
            .rest(&route("/api", upstream, "scopes = [\"read\"]"))
    }
}

/// The rustls client config of a connection presenting `cred` (none when None), trusting the
/// gateway's certificate.
pub fn client_config(gw: &Gw, cred: Option<&Cred>, h2: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gw.cert.clone()).expect("trust the gateway's certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match cred {
        Some(c) => {
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key PEM");
            builder.with_client_auth_cert(vec![c.der()], key).expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    cfg
}

/// A TLS stream to the gateway presenting `cred`, or why the handshake failed.
async fn handshake(
    gw: &Gw,
    cred: Option<&Cred>,
    h2: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(gw, cred, h2)));
    let tcp = tokio::net::TcpStream::connect(gw.https).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(std::time::Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// An HTTPS connection (h2 when `h2`) presenting `cred`.
pub async fn mtls(gw: &Gw, cred: Option<&Cred>, h2: bool) -> Conn {
    Conn::over_tls(handshake(gw, cred, h2).await.expect("TLS handshake"), h2).await
}

/// Whether the gateway refuses a connection presenting `cred`: the handshake fails, or (TLS 1.3,
/// where the client finishes first) the first request gets no answer but an alert.
pub async fn refused(gw: &Gw, cred: Option<&Cred>) -> bool {
    let Ok(mut s) = handshake(gw, cred, false).await else { return true };
    let ask = async {
        s.write_all(b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), ask).await.expect("timely answer") {
        Ok(buf) => !buf.starts_with(b"HTTP/1.1 200"),
        Err(_) => true,
    }
}

/// `POST /oauth2/token` with `client_credentials` and `params` on `conn`.
pub async fn token_request(conn: &mut Conn, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(params);
    let mut h = vec![FORM_CT];
    h.extend_from_slice(headers);
    conn.send(req("POST", "/oauth2/token", &h, full(encode_form(&form)))).await
}

/// A token for `client_id` over a connection presenting `cred`; panics unless 200.
pub async fn token_for(gw: &Gw, cred: &Cred, client_id: &str) -> String {
    let r = token_request(&mut mtls(gw, Some(cred), false).await, &[("client_id", client_id)], &[]).await;
    assert_eq!(r.status, 200, "token for {client_id}: {}", r.text());
    r.json()["access_token"].as_str().expect("access_token").to_owned()
}

/// GET `path` with the bearer `token` on `conn`.
pub async fn call(conn: &mut Conn, path: &str, token: &str) -> Resp {
    conn.send(req("GET", path, &[("authorization", &format!("Bearer {token}"))], empty())).await
}

/// Asserts an RFC 6750 refusal of a certificate-bound token: 401 `invalid_token` with a challenge.
pub fn assert_binding_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert!(r.www_auth().contains("error=\"invalid_token\""), "{what}: {}", r.www_auth());
    assert_eq!(r.json()["error"], "invalid_token", "{what}");
}

/// Asserts an `invalid_client` answer of the token endpoint, and returns it (status, challenge,
/// body) so that failures can be compared with each other: 400 without a challenge when the
/// request showed a certificate, 401 with `Basic` when it used Basic or nothing (RFC 6749 5.2).
pub fn assert_invalid_client(r: &Resp, what: &str) -> (u16, String, String) {
    match r.status.as_u16() {
        400 => assert_eq!(r.header("www-authenticate"), None, "{what}"),
        401 => assert_eq!(r.www_auth(), "Basic realm=\"tokengate\"", "{what}"),
        other => panic!("{what}: {other} {}", r.text()),
    }
    assert_eq!(r.json()["error"], "invalid_client", "{what}");
    (r.status.as_u16(), r.header("www-authenticate").unwrap_or_default().to_owned(), r.text())
}

/// The `cnf` claim of a token (unverified: the gateway's own tests check signatures).
pub fn cnf_of(token: &str) -> Value {
    claims_of(token)["cnf"].clone()
}

/// A raw HTTP/1.1 exchange with `addr` from the local address `src` (127.0.0.x): how the tests
/// play a trusted or an untrusted load balancer.
pub async fn raw_from(src: &str, addr: SocketAddr, request: &str) -> RawResp {
    let exchange = async {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{src}:0").parse().expect("source address")).expect("bind source");
        let mut s = sock.connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    parse_raw(&tokio::time::timeout(std::time::Duration::from_secs(20), exchange).await.expect("timely answer"))
}
