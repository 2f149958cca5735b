//! A real OpenID provider (`oidc-provider` from npm, run by `tests/support/oidc/provider.mjs`) on a
//! free loopback port, over HTTPS with a certificate from a CA made here, killed when dropped.
//! Tests include it by `#[path]`; it issues client-credentials JWT access tokens for one resource
//! (`urn:api`, audience `api`) and publishes its keys at `jwks_uri()`, so a gateway can be pointed
//! at it as a remote identity provider. Missing Node.js or a missing `npm ci` fails the test with
//! a message saying how to get them: these tests never pass by skipping.
//!
//! Blocking on purpose (std processes and a small rustls HTTP/1.0 client): it is called from
//! sync tests and, briefly, from async ones.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

#[path = "ports.rs"]
mod ports;
use ports::free_port;
#[path = "test_ca.rs"]
mod test_ca;
use test_ca::TestCa;

/// How long a start may take before the test fails (node + oidc-provider start in ~0.5 s).
const READY_WITHIN: Duration = Duration::from_secs(20);

/// What the provider is started with; `Default` is what most tests need.
#[derive(Clone, Debug)]
pub struct Options {
    /// Static clients as (client_id, secret): client_credentials only, client_secret_basic.
    pub clients: Vec<(String, String)>,
    /// The resource indicator tokens are issued for (also the default when a request names none).
    pub resource: String,
    /// The `aud` of those tokens: what a gateway is configured to expect.
    pub audience: String,
    /// The scopes the resource server knows; a token gets the requested ones among them.
    pub scope: String,
    /// "RS256" or "ES256": the access tokens' algorithm and the type of keys generated.
    pub alg: &'static str,
    /// Access token lifetime in seconds.
    pub token_ttl: u64,
    /// `Cache-Control: max-age=N` on the JWKS; None: no Cache-Control at all (oidc-provider's own).
    pub jwks_max_age: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: vec![("svc".into(), "svc-secret".into())],
            resource: "urn:api".into(),
            audience: "api".into(),
            scope: "read write".into(),
            alg: "RS256",
            token_ttl: 300,
            jwks_max_age: None,
        }
    }
}

/// One provider; `stop` and `restart` keep its port (so its issuer), certificate and keys.
pub struct OidcProvider {
    /// The running node process; None between `stop` and `restart`.
    child: Option<Child>,
    /// Loopback port it listens on; the issuer is `https://localhost:<port>`.
    pub port: u16,
    /// CA and server certificate, key file, logs; removed on drop.
    dir: tempfile::TempDir,
    /// What it was started with; `set_jwks_max_age` updates it so that a restart keeps it.
    opts: Options,
    /// Processes started so far: numbers each one's log files.
    spawns: u32,
    /// JWKS fetches counted by processes that have exited (the counter lives in the process).
    earlier_hits: u64,
    /// A TLS client that trusts this provider's CA, for the harness's own requests.
    tls: Arc<rustls::ClientConfig>,
}

impl OidcProvider {
    /// Starts a provider with the default [`Options`].
    pub fn start() -> OidcProvider {
        Self::start_with(Options::default())
    }

    /// Makes the CA and a `localhost`/127.0.0.1 certificate it signs, then starts the provider.
    pub fn start_with(opts: Options) -> OidcProvider {
        let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc");
        assert!(
            script_dir.join("node_modules/oidc-provider/package.json").is_file(),
            "{}/node_modules is missing: the OIDC tests need oidc-provider from npm; run \
             `npm ci --prefix tests/support/oidc` (`bash .ci/run` does)",
            script_dir.display()
        );
        let dir = tempfile::tempdir().expect("tempdir for the OIDC provider");
        let ca = TestCa::new("tokengate test OIDC CA");
        write(&dir.path().join("ca.pem"), &ca.pem);
        let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1"]);
        write(&dir.path().join("server.pem"), &cert);
        write(&dir.path().join("server.key"), &key);
        let tls = Arc::new(client_config(&dir.path().join("ca.pem")));
        let mut p = OidcProvider { child: None, port: free_port(), dir, opts, spawns: 0, earlier_hits: 0, tls };
        // Another process may take the port between free_port and the listen: then another port.
        for _ in 0..5 {
            match p.spawn() {
                Ok(()) => return p,
                Err(e) if e.contains("EADDRINUSE") => eprintln!("{e}; trying another port"),
                Err(e) => panic!("{e}"),
            }
            p.port = free_port();
        }
        p.spawn().unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// `https://localhost:<port>`: the `iss` of its tokens and the base of every endpoint.
    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Its JWKS (public keys); every GET of it is counted by [`jwks_hits`](Self::jwks_hits).
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// Its discovery document (`/.well-known/openid-configuration`).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// PEM of the CA that signed its certificate: what a gateway's `ca = ...` must name.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// PEM of a new CA that has nothing to do with this provider: trusting only it must fail.
    pub fn unrelated_ca_pem_path(&self) -> PathBuf {
        let pem = TestCa::new("unrelated test CA").pem;
        let file = tempfile::Builder::new().prefix("unrelated-ca-").suffix(".pem").tempfile_in(self.dir.path());
        let (_, path) = file.and_then(|f| f.keep().map_err(|e| e.error)).expect("file for an unrelated CA");
        write(&path, &pem);
        path
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether a process was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Provider down: SIGTERM (it closes its listener and connections), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let termed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let grace = if termed.is_ok_and(|s| s.success()) { Duration::from_secs(5) } else { Duration::ZERO };
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its last line counts the fetches it served, so the total survives restarts.
        let out = std::fs::read_to_string(self.log("stdout")).unwrap_or_default();
        match out.lines().rev().find_map(|l| l.strip_prefix("jwks_hits ")?.parse::<u64>().ok()) {
            Some(n) => self.earlier_hits += n,
            None => eprintln!("oidc provider on port {} exited without its jwks_hits line", self.port),
        }
    }

    /// Starts it again: same port, certificate and keys (the key file survives), a new process.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("restart on the same port: {e}"));
    }

    /// Key rotation, step 1: a new key is published and signs from now on; the older ones stay
    /// published. Returns the new kid. No restart (the process rebuilds its provider).
    pub fn rotate_add(&self) -> String {
        let r = self.control("POST", "/__test/keys/add");
        r["kid"].as_str().unwrap_or_else(|| panic!("keys/add answered {r}")).to_string()
    }

    /// Key rotation, step 2: only the newest (signing) key remains published.
    pub fn rotate_drop_old(&self) {
        self.control("POST", "/__test/keys/drop_old");
    }

    /// The kids of its keys, the signing one first (read from its key file: no JWKS fetch).
    pub fn kids(&self) -> Vec<String> {
        let path = self.dir.path().join("jwks.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let set: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let keys = set["keys"].as_array().unwrap_or_else(|| panic!("{}: no keys", path.display()));
        keys.iter().map(|k| k["kid"].as_str().expect("every key has a kid").to_string()).collect()
    }

    /// GETs of its JWKS since `start`, across restarts (counted by the provider process itself).
    pub fn jwks_hits(&self) -> u64 {
        let now = if self.is_running() { self.control("GET", "/__test/jwks_hits")["hits"].as_u64() } else { Some(0) };
        self.earlier_hits + now.expect("jwks_hits answers a number")
    }

    /// Sets (Some) or removes (None) the JWKS's `Cache-Control: max-age`; kept across restarts.
    pub fn set_jwks_max_age(&mut self, seconds: Option<u32>) {
        self.opts.jwks_max_age = seconds;
        if self.is_running() {
            let q = seconds.map_or(String::new(), |s| format!("?seconds={s}"));
            self.control("POST", &format!("/__test/jwks_max_age{q}"));
        }
    }

    /// A client-credentials access token (a JWT) for the resource, with `scope` ("" for none).
    pub fn token(&self, client_id: &str, secret: &str, scope: &str) -> String {
        let r = self.token_response(client_id, secret, scope);
        match (r.status, r.json()["access_token"].as_str()) {
            (200, Some(t)) => t.to_string(),
            _ => panic!("token endpoint answered {}: {}", r.status, r.body),
        }
    }

    /// The token endpoint's answer to a client-credentials request.
    pub fn token_response(&self, client_id: &str, secret: &str, scope: &str) -> Resp {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials").append_pair("resource", &self.opts.resource);
        if !scope.is_empty() {
            form.append_pair("scope", scope);
        }
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)));
        let headers = [
            ("Authorization", format!("Basic {basic}")),
            ("Content-Type", "application/x-www-form-urlencoded".to_string()),
        ];
        self.request("POST", "/token", &headers, &form.finish()).unwrap_or_else(|e| panic!("token request: {e}"))
    }

    /// GET of `path`, trusting its CA; a GET of `/jwks` is counted.
    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], "").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET of `path` as JSON, expecting 200.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// One HTTPS request to the provider, trusting its CA.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Result<Resp, String> {
        https_request(self.port, self.tls.clone(), method, path, headers, body)
    }

    /// A test endpoint of provider.mjs; its JSON answer.
    fn control(&self, method: &str, path: &str) -> Value {
        assert!(self.is_running(), "{method} {path}: the OIDC provider is stopped");
        let r = self.request(method, path, &[], "").unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()
    }

    fn log(&self, stream: &str) -> PathBuf {
        self.dir.path().join(format!("{stream}-{}.log", self.spawns))
    }

    /// Starts the process and waits for its `ready` line; Err when it exited at start.
    fn spawn(&mut self) -> Result<(), String> {
        self.spawns += 1;
        let (out, err) = (self.log("stdout"), self.log("stderr"));
        let file = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let d = self.dir.path();
        let o = &self.opts;
        let clients: Vec<String> = o.clients.iter().map(|(id, secret)| format!("{id}:{secret}")).collect();
        let mut cmd = Command::new("node");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc/provider.mjs"))
            .env("OIDC_PORT", self.port.to_string())
            .env("OIDC_TLS_CERT", d.join("server.pem"))
            .env("OIDC_TLS_KEY", d.join("server.key"))
            .env("OIDC_JWKS_FILE", d.join("jwks.json"))
            .env("OIDC_CLIENTS", clients.join(","))
            .env("OIDC_RESOURCE", &o.resource)
            .env("OIDC_AUDIENCE", &o.audience)
            .env("OIDC_SCOPE", &o.scope)
            .env("OIDC_TOKEN_ALG", o.alg)
            .env("OIDC_TOKEN_TTL", o.token_ttl.to_string())
            .env_remove("OIDC_JWKS_MAX_AGE")
            .env_remove("OIDC_ISSUER")
            .env_remove("OIDC_HOST")
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err));
        if let Some(s) = o.jwks_max_age {
            cmd.env("OIDC_JWKS_MAX_AGE", s.to_string());
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "node not found on PATH: the OIDC tests need Node.js (`apt-get install nodejs npm`, then \
                 `npm ci --prefix tests/support/oidc`; `bash .ci/run` does both)"
            ),
            Err(e) => panic!("cannot start node: {e}"),
        };
        self.child = Some(child);
        let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("oidc provider on port {} exited at start ({status}): {}", self.port, stderr()));
            }
            if std::fs::read_to_string(&out).is_ok_and(|s| s.lines().any(|l| l.starts_with("ready "))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("oidc provider on port {} not ready within {READY_WITHIN:?}; stderr: {}", self.port, stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A rustls client that trusts only the certificates in `ca_pem`.
pub fn client_config(ca_pem: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap_or_else(|e| panic!("{}: {e}", ca_pem.display())) {
        roots.add(cert.expect("CA PEM parses")).expect("CA certificate is usable as a root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// One HTTP/1.0 request over TLS to 127.0.0.1:`port` as "localhost" (HTTP/1.0: the server closes
/// after its answer, with no chunking to undo). Err carries TLS failures such as an unknown issuer.
pub fn https_request(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<Resp, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let what = format!("{method} https://localhost:{port}{path}");
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{what}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| format!("{what}: {e}"))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| format!("{what}: {e}"))?;
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| format!("{what}: {e}"))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost:{port}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| format!("{what}: {e}"))?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A close without close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("{what}: {e}")),
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{what}: no header end in {text:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    Ok(Resp { status, head: head.to_string(), body: body.to_string() })
}

/// One answer of the provider.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status code.
    pub status: u16,
    /// Status line and header lines, as received.
    pub head: String,
    /// The body, as text (every answer of the provider is JSON).
    pub body: String,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}
