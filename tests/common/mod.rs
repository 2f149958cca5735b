//! The one fixture module of the over-the-wire tests, included by every test target: the
//! `gateway.toml` skeleton ([`Config`]) and a gateway in a temp dir ([`Gw`]), HTTPS (h1/h2),
//! plain and raw-TCP clients ([`client`]), a recording upstream ([`upstream`]), a group endpoint
//! with a switchable `/healthz` ([`instance`]), token forging and
//! minting ([`tokens`]), the demo client and user tables ([`tables`]), bounded polling
//! ([`poll`]) and the admin metrics ([`metrics`]).
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod instance;
pub mod metrics;
pub mod poll;
pub mod tables;
pub mod tokens;
pub mod upstream;

#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use instance::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use poll::*;
#[allow(unused_imports)]
pub use tables::*;
#[allow(unused_imports)]
pub use tokens::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tempfile::TempDir;

use tokengate::commands::{mint, MintRequest};
use tokengate::config::RsaAlg;
use tokengate::keys::SigningKey;
use tokengate::server::Running;

pub const ISSUER: &str = "https://tokengate.test";
pub const AUD: &str = "api";
/// The token endpoint as the gateway names itself (the `aud` of client assertions).
pub const TOKEN_URL: &str = "https://tokengate.test/oauth2/token";

/// The default `admin.scope`: what state-changing admin endpoints require.
pub const ADMIN_SCOPE: &str = "tokengate:admin";

/// One POST to the admin listener at `addr`, with a bearer token when `token` is given.
pub async fn admin_post(addr: SocketAddr, path: &str, token: Option<&str>) -> RawResp {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    raw(addr, &format!("POST {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"))
        .await
}

/// The `gateway.toml` used by the tests; `server_extra` goes into `[server]`, `routes` at the end.
pub fn config_text(server_extra: &str, routes: &str) -> String {
    Config::new().server(server_extra).rest(routes).text()
}

/// The same skeleton with top-level keys (`top`, e.g. `clients_file`), extra `[tokens]` keys, and
/// anything after it (`rest`: routes, tables, `[lockout]`, `[state]`).
pub fn config_with(top: &str, server_extra: &str, tokens_extra: &str, rest: &str) -> String {
    Config::new().top(top).server(server_extra).tokens(tokens_extra).rest(rest).text()
}

/// The one `gateway.toml` skeleton of the tests, built up section by section: ephemeral
/// listeners, a self-signed certificate and a generated `k1` key in the gateway's folder.
#[derive(Clone, Debug)]
pub struct Config {
    /// Top-level keys (before `[server]`), e.g. `clients_file`.
    pub top: String,
    /// Extra `[server]` keys.
    pub server: String,
    pub shutdown_grace_secs: u64,
    /// `[tokens] keys_dir`, relative to the config's folder unless absolute.
    pub keys_dir: String,
    /// Extra `[tokens]` keys.
    pub tokens: String,
    /// `[tokens] refresh_reuse_grace_secs`: 0 unless a test sets it, so that reuse detection
    /// is tested as RFC 9700 states it; the grace's own tests turn it on.
    pub reuse_grace_secs: u64,
    /// Extra `[tls]` keys (mutual TLS).
    pub tls: String,
    /// The body of `[log]`.
    pub log: String,
    /// Everything after the skeleton: routes, tables, `[lockout]`, `[state]`, `[[issuers]]`.
    pub rest: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            top: String::new(),
            server: String::new(),
            shutdown_grace_secs: 5,
            keys_dir: "keys".into(),
            tokens: String::new(),
            reuse_grace_secs: 0,
            tls: String::new(),
            log: "level = \"warn\"".into(),
            rest: String::new(),
        }
    }
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }
    pub fn top(mut self, keys: &str) -> Self {
        self.top.push_str(keys);
        self
    }
    pub fn server(mut self, keys: &str) -> Self {
        self.server.push_str(keys);
        self
    }
    pub fn shutdown_grace_secs(mut self, secs: u64) -> Self {
        self.shutdown_grace_secs = secs;
        self
    }
    pub fn keys_dir(mut self, dir: impl Into<String>) -> Self {
        self.keys_dir = dir.into();
        self
    }
    pub fn tokens(mut self, keys: &str) -> Self {
        self.tokens.push_str(keys);
        self
    }
    pub fn reuse_grace_secs(mut self, secs: u64) -> Self {
        self.reuse_grace_secs = secs;
        self
    }
    pub fn tls(mut self, keys: &str) -> Self {
        self.tls.push_str(keys);
        self
    }
    pub fn log(mut self, body: &str) -> Self {
        self.log = body.into();
        self
    }
    /// Appends to what follows the skeleton.
    pub fn rest(mut self, text: &str) -> Self {
        self.rest.push_str(text);
        self
    }

    pub fn text(&self) -> String {
        let Config { top, server, shutdown_grace_secs, keys_dir, tokens, reuse_grace_secs, tls, log, rest } = self;
        format!(
            r#"{top}
[server]
listen = "127.0.0.1:0"
listen_plain = "127.0.0.1:0"
shutdown_grace_secs = {shutdown_grace_secs}
{server}

[tls]
cert = "certs/gateway.crt"
key = "certs/gateway.key"
self_signed_if_missing = true
{tls}

[admin]
listen = "127.0.0.1:0"

[tokens]
issuer = "{ISSUER}"
audience = "{AUD}"
keys_dir = "{keys_dir}"
active_kid = "k1"
generate_if_missing = true
leeway_secs = 5
refresh_reuse_grace_secs = {reuse_grace_secs}
{tokens}

[log]
{log}

{rest}
"#
        )
    }
}

/// A `[[routes]]` entry for `prefix` -> `upstream` with extra keys.
pub fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// A `[lockout]` section: `max_failures` in a 300 s window, waits from `base_wait_secs` up to 60 s.
pub fn lockout(max_failures: u32, base_wait_secs: u64, per_ip_per_minute: u32) -> String {
    format!(
        "\n[lockout]\nmax_failures = {max_failures}\nwindow_secs = 300\nbase_wait_secs = {base_wait_secs}\n\
         max_wait_secs = 60\nper_ip_per_minute = {per_ip_per_minute}\n"
    )
}

/// A public echo route and a protected echo route: nothing outside the gateway is needed.
pub const ECHO_ROUTES: &str = r#"
[[routes]]
prefix = "/pub"
upstream = "echo"
public = true

[[routes]]
prefix = "/api"
upstream = "echo"
"#;

/// A gateway running in-process from a config in its own temp dir.
pub struct Gw {
    pub dir: TempDir,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub plain: SocketAddr,
    pub admin: SocketAddr,
    /// The certificate served at start (trusted by `conn_*`).
    pub cert: CertificateDer<'static>,
    running: Option<Running>,
}

impl Gw {
    pub async fn start(server_extra: &str, routes: &str) -> Gw {
        Self::start_text(&config_text(server_extra, routes)).await
    }

    pub async fn start_config(config: &Config) -> Gw {
        Self::start_text(&config.text()).await
    }

    pub async fn start_text(text: &str) -> Gw {
        Self::start_in(tempfile::tempdir().expect("tempdir"), text).await
    }

    /// Like [`Gw::start_text`] in `dir`, which may already hold files the config names relative
    /// to its folder (certificates, say).
    pub async fn start_in(dir: TempDir, text: &str) -> Gw {
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).expect("write config");
        let running = tokengate::server::start(config.clone()).await.expect("gateway starts");
        let cert = read_cert(&dir.path().join("certs/gateway.crt"));
        Gw {
            https: running.https_addr,
            plain: running.plain_addr.expect("listen_plain is configured"),
            admin: running.admin_addr,
            cert,
            config,
            dir,
            running: Some(running),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Graceful shutdown; returns when every task has ended.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// A valid token from `tokengate::commands::mint`.
    pub fn mint(&self, sub: &str, scope: &str) -> String {
        mint(&self.config, &MintRequest { sub, scope, ttl: Some(600), aud: None, client_id: Some("client-7") })
            .expect("mint")
    }

    /// The private key `keys/<kid>.pem` as a `SigningKey`.
    pub fn key(&self, kid: &str) -> SigningKey {
        load_key(&self.path(&format!("keys/{kid}.pem")), kid)
    }

    /// A fresh HTTPS connection (h2 when `h2`), trusting the start certificate.
    pub async fn tls(&self, h2: bool) -> Conn {
        Conn::tls(self.https, std::slice::from_ref(&self.cert), h2).await
    }

    /// A fresh plain-HTTP/1.1 connection to `listen_plain`.
    pub async fn plain_conn(&self) -> Conn {
        Conn::plain(self.plain).await
    }

    /// One GET over a fresh HTTPS/1.1 connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.tls(false).await.send(req("GET", path, headers, empty())).await
    }

    /// GET with `Authorization: Bearer <token>`.
    pub async fn get_with(&self, path: &str, token: &str) -> Resp {
        self.get(path, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// A fresh TLS handshake trusting `roots`: the certificate served, or None if it failed.
    pub async fn served_cert(&self, roots: &[CertificateDer<'static>]) -> Option<CertificateDer<'static>> {
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_client_config(roots, &[b"http/1.1"])));
        let tcp = tokio::net::TcpStream::connect(self.https).await.ok()?;
        let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
        let s = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await.ok()?.ok()?;
        s.get_ref().1.peer_certificates()?.first().map(|c| c.clone().into_owned())
    }

    /// One admin request; (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = raw(self.admin, &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")).await;
        (r.status, r.body_text())
    }

    /// One admin POST with `Authorization: Bearer <token>` when `token` is given.
    pub async fn admin_post(&self, path: &str, token: Option<&str>) -> RawResp {
        admin_post(self.admin, path, token).await
    }

    /// A token of the gateway's own key carrying the default admin scope.
    pub fn admin_token(&self) -> String {
        self.mint("operator", ADMIN_SCOPE)
    }

    pub async fn reload_status(&self) -> Value {
        let (status, body) = self.admin_get("/reload").await;
        assert_eq!(status, 200, "GET /reload: {body}");
        serde_json::from_str(&body).expect("/reload is JSON")
    }

    pub async fn generation(&self) -> u64 {
        self.reload_status().await["generation"].as_u64().expect("generation is a number")
    }

    /// Polls `/reload` until `generation > above` (panics after `secs`); returns the document.
    pub async fn wait_generation_above(&self, above: u64, secs: u64) -> Value {
        self.wait_reload(secs, "a reload", |doc| doc["generation"].as_u64().unwrap_or(0) > above).await
    }

    /// Polls `/reload` until `last_error` is set (panics after `secs`); returns the document.
    pub async fn wait_reload_error(&self, secs: u64) -> Value {
        self.wait_reload(secs, "a failed reload", |doc| !doc["last_error"].is_null()).await
    }

    /// Polls `/reload` until the document satisfies `done` (panics after `secs`); returns it.
    pub async fn wait_reload(&self, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        poll_until(secs, what, || async {
            let doc = self.reload_status().await;
            if done(&doc) {
                Ok(doc)
            } else {
                Err(format!("/reload = {doc}"))
            }
        })
        .await
    }

    /// The file watcher is registered asynchronously after `start`: rewrite the config (same
    /// content) until a reload is observed, so later file changes cannot be missed.
    pub async fn wait_watcher_ready(&self) -> u64 {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let base = self.generation().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            replace_file(&self.config, text.as_bytes());
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let g = self.generation().await;
                if g > base {
                    return g;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(Instant::now() < deadline, "the config file watcher never reloaded");
        }
    }
}

pub fn read_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).expect("cert file").next().expect("one cert").expect("cert PEM")
}

pub fn load_key(path: &Path, kid: &str) -> SigningKey {
    let pem = std::fs::read(path).expect("key file");
    SigningKey::from_pem(kid, &pem, RsaAlg::RS256).expect("key PEM")
}

/// Writes `bytes` to a temporary sibling and renames it over `path`, like an editor.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn write_json(path: &Path, v: &Value) {
    write_file(path, v.to_string());
}
