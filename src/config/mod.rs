//! The on-disk configuration (`gateway.toml`): plain serde structs, defaults, and path resolution.
//!
//! Nothing here is used on the request path directly: [`crate::snapshot`] turns a parsed
//! [`Config`] into the immutable, pre-computed snapshot the proxy reads.

mod cidr;
mod cors;
mod error;
pub mod restart;
mod tables;

pub use cidr::Cidr;
pub use cors::CorsConfig;
use error::parse_error;
pub use error::ConfigError;
pub use tables::{ClientConfig, Grant, TablesFile, TlsClientAuthMethod, UserConfig};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod issuers;
pub use issuers::{fetchable_url, is_loopback, IssuerConfig, KeySource, RequireTyp};
mod dpop;
pub use dpop::{DpopConfig, DpopMode};
mod quota;
pub use quota::{default_burst, lease_size, ClientRateLimit, LimitKey, RouteRateLimit};
mod state;
pub use state::{redacted_url, split_host_port, StateBackend, StateConfig};
mod tls;
pub use tls::{ClientAuthMode, TlsCertificate, TlsConfig};
mod tracing;
pub use self::tracing::TracingConfig;
mod routes;
use routes::yes;
pub use routes::{RouteConfig, UpstreamTarget};
mod upstreams;
pub use upstreams::{
    is_group_name, BalanceKind, EjectConfig, HashOn, HealthCheckConfig, RetryBudgetConfig, UpstreamGroupConfig,
    UpstreamProtocol,
};

/// The whole `gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, worker threads and proxy-wide limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Certificate and key of the HTTPS listener.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The admin listener (health, readiness, reload status, metrics).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Our own issuer: signing keys and the checks applied to the tokens it issues.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Other identity providers whose tokens the proxy accepts.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Path prefixes, the upstream each forwards to and the rules a request must pass.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named groups of endpoints a route may forward to by name, balanced and health-checked.
    #[serde(default)]
    pub upstreams: Vec<UpstreamGroupConfig>,
    /// Log format and filter.
    #[serde(default)]
    pub log: LogConfig,
    /// OAuth2 clients allowed at the token endpoint (inline; more from `clients_file`).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Resource owners for the password grant (inline; more from `users_file`).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// A TOML file of `[[clients]]`, kept apart so it can be managed (and reloaded) on its own.
    #[serde(default)]
    pub clients_file: Option<PathBuf>,
    /// A TOML file of `[[users]]`.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Brute-force protection at the token endpoint.
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// Where refresh-token families, revocations and lockout counters are kept.
    #[serde(default)]
    pub state: StateConfig,
    /// DPoP proofs (RFC 9449): algorithms, time window, nonces, replay memory.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// Distributed tracing: W3C Trace Context propagation and OTLP span export.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The folder relative paths are resolved against (the config file's own folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTPS listener address.
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener, for a sidecar behind mesh TLS or for benchmarks.
    pub listen_plain: Option<SocketAddr>,
    /// Tokio worker threads; 0 means one per core.
    pub workers: usize,
    /// How the worker threads share the work: one work-stealing runtime, or one single-threaded
    /// runtime per worker, each accepting on its own `SO_REUSEPORT` listener.
    pub runtime: RuntimeKind,
    /// Keep client-sent `X-Forwarded-*` headers (append to them) instead of replacing them.
    pub trust_forwarded: bool,
    /// How long requests in flight may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Time allowed for the upstream to start answering before the proxy answers 504.
    pub upstream_timeout_secs: u64,
    /// Time allowed to open a TCP connection to an upstream before the proxy answers 502.
    pub upstream_connect_timeout_secs: u64,
    /// Idle pooled upstream connections are closed after this long.
    pub upstream_idle_timeout_secs: u64,
    /// Time a client gets to send the request head (slowloris protection).
    pub header_read_timeout_secs: u64,
    /// Time a client gets to complete the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Largest request head (HTTP/1) or header list (HTTP/2) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most request headers accepted (HTTP/1).
    pub max_headers: usize,
    /// Most client connections open at once, all listeners together; more are closed at accept.
    pub max_connections: usize,
    /// Most client connections open at once from one IP address; 0 disables.
    pub max_connections_per_ip: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
    /// Most request-body bytes read and dropped before an answer the gateway makes without the
    /// body (refusals), so that HTTP/2 clients are not sent a reset; 0 disables.
    pub discard_body_bytes: u64,
    /// Time that reading gets before the answer goes out anyway.
    pub discard_body_timeout_secs: u64,
    /// Largest upstream response head accepted, in bytes (at least 8192); past it 502.
    pub upstream_max_header_bytes: usize,
    /// Most upstream response headers accepted; past it 502.
    pub upstream_max_headers: usize,
    /// Longest silence between body chunks from the upstream once it answered; the response is cut. 0 disables.
    pub upstream_body_idle_timeout_secs: u64,
    /// Longest silence between body chunks of a client's upload; 408 (or the response cut). 0 disables.
    pub request_body_idle_timeout_secs: u64,
    /// Longest time a client may leave a response unread (full TCP buffer, zero h2 window); the
    /// connection is closed. 0 disables.
    pub send_idle_timeout_secs: u64,
    /// The CORS policy of every route without its own, and of answers no route made (404, 405).
    pub cors: Option<CorsConfig>,
    /// DNS servers (`ip:port`, UDP and TCP) for every upstream host name, instead of the
    /// system's (`/etc/resolv.conf`): tests and clusters with their own DNS. Empty: the system's.
    pub resolvers: Vec<SocketAddr>,
}

/// `server.runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// One multi-thread tokio runtime: connections move between threads as load shifts.
    WorkStealing,
    /// One current-thread runtime per worker, the kernel spreading connections over their
    /// `SO_REUSEPORT` listeners: no cross-thread scheduling, but no stealing either.
    PerCore,
}

impl ServerConfig {
    /// Worker threads to run: `workers`, or one per core when 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ([127, 0, 0, 1], 8443).into(),
            listen_plain: None,
            workers: 0,
            runtime: RuntimeKind::WorkStealing,
            trust_forwarded: false,
            shutdown_grace_secs: 10,
            upstream_timeout_secs: 30,
            upstream_connect_timeout_secs: 5,
            upstream_idle_timeout_secs: 60,
            header_read_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            max_h2_streams: 256,
            discard_body_bytes: 1024 * 1024,
            discard_body_timeout_secs: 5,
            upstream_max_header_bytes: 64 * 1024,
            upstream_max_headers: 100,
            upstream_body_idle_timeout_secs: 60,
            request_body_idle_timeout_secs: 60,
            resolvers: Vec::new(),
            send_idle_timeout_secs: 60,
            cors: None,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener address; keep it on loopback or a private network.
    pub listen: SocketAddr,
    /// Scope a token of our own issuer must carry for state-changing admin endpoints.
    pub scope: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: ([127, 0, 0, 1], 9901).into(), scope: "tokengate:admin".into() }
    }
}

/// RSA keys sign with PKCS#1 v1.5 (RS256) or PSS (PS256).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum RsaAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[default]
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}

/// `[tokens]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Be a token issuer (signing keys, token endpoint, JWKS). `false`: validation only, a
    /// sidecar that holds no private key and trusts nothing but `[[issuers]]`.
    #[serde(default = "yes")]
    pub issue_tokens: bool,
    /// Our `iss`: exact string compared against every token's `iss`.
    pub issuer: String,
    /// Default audience a token must name when a route sets none.
    pub audience: String,
    /// Folder of private signing keys, one PEM file each, file stem = `kid`.
    pub keys_dir: PathBuf,
    /// The `kid` that signs new tokens; every key in `keys_dir` still validates.
    pub active_kid: Option<String>,
    /// Create one ES256 key when `keys_dir` holds none.
    pub generate_if_missing: bool,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Which RSA signature scheme RSA keys use.
    pub rsa_alg: RsaAlg,
    /// Longest bearer token accepted, in bytes; longer ones are refused before any parsing.
    pub max_token_bytes: usize,
    /// Lifetime of issued (and `tokengate mint`ed) access tokens.
    pub access_ttl_secs: u64,
    /// A refresh-token family dies this long after its first grant, however it is used.
    pub refresh_ttl_secs: u64,
    /// A refresh-token family dies when unused for this long.
    pub refresh_idle_secs: u64,
    /// A client retrying the refresh token it just rotated within this many seconds (a lost
    /// answer) gets a fresh pair instead of losing the family to reuse detection; 0: off.
    pub refresh_reuse_grace_secs: u64,
    /// Serve the token, revocation and introspection endpoints on the plain listener too.
    pub allow_plain_token_endpoint: bool,
    /// Validated tokens remembered (exact bytes -> claims) to skip re-verifying; 0 disables.
    pub cache_size: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            issue_tokens: true,
            issuer: "https://tokengate.local".into(),
            audience: "api".into(),
            keys_dir: "keys".into(),
            active_kid: None,
            generate_if_missing: true,
            leeway_secs: 30,
            rsa_alg: RsaAlg::RS256,
            max_token_bytes: 8 * 1024,
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 86400,
            refresh_idle_secs: 14 * 86400,
            refresh_reuse_grace_secs: 30,
            allow_plain_token_endpoint: false,
            cache_size: 10_000,
        }
    }
}

/// `[lockout]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failed logins (per username, per client) within `window_secs` that lock the account.
    pub max_failures: u32,
    /// Window over which failures are counted.
    pub window_secs: u64,
    /// First lockout length; each further lockout doubles it.
    pub base_wait_secs: u64,
    /// Longest lockout.
    pub max_wait_secs: u64,
    /// Token-endpoint requests per client IP per minute before 429; 0 disables the limit.
    pub per_ip_per_minute: u32,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: 10,
            window_secs: 300,
            base_wait_secs: 60,
            max_wait_secs: 3600,
            per_ip_per_minute: 600,
        }
    }
}

/// Output format of the log.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    #[default]
    Pretty,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `pretty`.
    pub format: LogFormat,
    /// tracing filter directive (`info`, `tokengate=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
    /// File the log is appended to (relative to the config's folder); absent: standard error.
    pub file: Option<PathBuf>,
    /// Lines queued for the log writer thread; past it lines are dropped (and counted), so a
    /// slow disk or a stalled pipe never holds up a request.
    pub queue_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Pretty, level: "info".into(), file: None, queue_lines: 65_536 }
    }
}

impl Config {
    /// Reads and parses `path`; relative paths inside are kept relative until [`Config::resolve`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| parse_error(path, &text, e))?;
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.merge_table_files()?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Appends the `[[clients]]` / `[[users]]` of `clients_file` / `users_file`.
    fn merge_table_files(&mut self) -> Result<(), ConfigError> {
        for (file, want_clients) in [(self.clients_file.clone(), true), (self.users_file.clone(), false)] {
            let Some(file) = file else { continue };
            let t = tables::read(&self.resolve(&file))?;
            if want_clients {
                self.clients.extend(t.clients);
            } else {
                self.users.extend(t.users);
            }
        }
        Ok(())
    }

    /// Files besides the config itself whose change must trigger a reload.
    pub fn table_files(&self) -> Vec<PathBuf> {
        [&self.clients_file, &self.users_file].into_iter().flatten().map(|p| self.resolve(p)).collect()
    }

    /// A path from the config, made absolute against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        tables::validate(&self.clients, &self.users, &self.tls)?;
        self.state.validate()?;
        self.dpop.validate()?;
        self.tracing.validate()?;
        self.tls.validate()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.tokens.issuer.is_empty() {
            return bad("tokens.issuer must not be empty".into());
        }
        // One scope token: a space would make it two, and an empty one would be granted to all.
        if self.admin.scope.is_empty() || self.admin.scope.contains(' ') {
            return bad(format!("admin.scope {:?} must be one non-empty scope", self.admin.scope));
        }
        if self.log.queue_lines == 0 {
            return bad("log.queue_lines must be at least 1".into());
        }
        if self.tokens.max_token_bytes < 64 {
            return bad("tokens.max_token_bytes is too small".into());
        }
        for r in &self.routes {
            if !r.prefix.starts_with('/') {
                return bad(format!("route prefix {:?} must start with '/'", r.prefix));
            }
            if r.public && !r.scopes.is_empty() {
                return bad(format!("route {:?} is public but lists scopes", r.prefix));
            }
            if let Some(l) = &r.rate_limit {
                quota::check_route(&r.prefix, r.public, l)?;
            }
            if let UpstreamTarget::Group(name) = &r.upstream {
                if !self.upstreams.iter().any(|g| g.name == *name) {
                    return bad(format!("route {:?}: upstream {name:?} is no [[upstreams]] name", r.prefix));
                }
                if r.upstream_ca.is_some() {
                    return bad(format!(
                        "route {:?}: upstream_ca is for a URL upstream, not the group {name:?} (set the group's ca)",
                        r.prefix
                    ));
                }
            }
            r.check_upstream_protocol().map_err(|m| ConfigError::Invalid(format!("route {:?}: {m}", r.prefix)))?;
        }
        upstreams::validate(&self.upstreams)?;
        // Two routes one request could reach alike are refused when the route table is built
        // (`proxy::routes::table`), which knows hosts, methods and placeholders.
        self.validate_mode()?;
        for (n, i) in self.issuers.iter().enumerate() {
            // In validation-only mode our own issuer is trusted by no one: a sidecar may trust a
            // central that bears the same name.
            if self.tokens.issue_tokens && i.issuer == self.tokens.issuer {
                return bad(format!("[[issuers]] {:?} duplicates tokens.issuer", i.issuer));
            }
            if self.issuers[..n].iter().any(|j| j.issuer == i.issuer) {
                return bad(format!("[[issuers]] {:?} is listed twice", i.issuer));
            }
            i.validate()?;
        }
        Ok(())
    }

    /// `tokens.issue_tokens = false` (validation only): trusts someone, and has no token endpoint
    /// for clients or users to use.
    fn validate_mode(&self) -> Result<(), ConfigError> {
        if self.tokens.issue_tokens {
            return Ok(());
        }
        let why = "makes no sense with tokens.issue_tokens = false (this gateway has no token endpoint)";
        let unused = [
            ("clients_file", self.clients_file.is_some()),
            ("users_file", self.users_file.is_some()),
            ("[[clients]]", !self.clients.is_empty()),
            ("[[users]]", !self.users.is_empty()),
        ];
        if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid(format!("{key} {why}")));
        }
        if self.issuers.is_empty() {
            return Err(ConfigError::Invalid(
                "tokens.issue_tokens = false needs at least one [[issuers]] entry: a gateway that trusts no issuer \
                 refuses every token"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(text: &str) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.base_dir = ".".into();
        c.validate().map(|()| c).map_err(|e| e.to_string())
    }

    const CENTRAL: &str = "\n[[issuers]]\nissuer = \"https://central.example\"\njwks_uri = \"https://central.example/.well-known/jwks.json\"\n";

    #[test]
    fn upstream_protocol_fits_the_upstream() {
        let r = |upstream: &str, p: &str| {
            format!("[[routes]]\nprefix = \"/g\"\nupstream = \"{upstream}\"\nupstream_protocol = \"{p}\"\n")
        };
        assert!(validated(&r("http://127.0.0.1:50051", "h2c")).is_ok());
        assert!(validated(&r("https://svc.example", "auto")).is_ok());
        assert!(validated(&r("https://svc.example", "http1")).is_ok());
        let e = validated(&r("https://svc.example", "h2c")).unwrap_err();
        assert!(e.starts_with("route \"/g\": upstream_protocol = \"h2c\" is HTTP/2 over plain TCP"), "{e}");
        let e = validated(&r("http://127.0.0.1:1", "auto")).unwrap_err();
        assert!(e.contains("upstream_protocol = \"auto\" picks the version by ALPN, which needs TLS"), "{e}");
        let e = validated(&r("echo", "h2c")).unwrap_err();
        assert!(e.contains("upstream_protocol is for a URL upstream, not echo"), "{e}");
    }

    #[test]
    fn issue_tokens_defaults_to_true() {
        assert!(validated("").unwrap().tokens.issue_tokens);
    }

    #[test]
    fn validation_only_needs_an_issuer() {
        let e = validated("[tokens]\nissue_tokens = false\n").unwrap_err();
        assert!(e.contains("tokens.issue_tokens = false needs at least one [[issuers]]"), "{e}");
        assert!(!validated(&format!("[tokens]\nissue_tokens = false\n{CENTRAL}")).unwrap().tokens.issue_tokens);
    }

    #[test]
    fn validation_only_refuses_clients_and_users() {
        let client = "\n[[clients]]\nid = \"app\"\nsecret_hash = \"x\"\ngrants = [\"client_credentials\"]\n";
        let e = validated(&format!("[tokens]\nissue_tokens = false\n{CENTRAL}{client}")).unwrap_err();
        assert!(e.starts_with("[[clients]] makes no sense with tokens.issue_tokens = false"), "{e}");
        let user = "\n[[users]]\nusername = \"alice\"\npassword_hash = \"x\"\n";
        let e = validated(&format!("[tokens]\nissue_tokens = false\n{CENTRAL}{user}")).unwrap_err();
        assert!(e.starts_with("[[users]] makes no sense"), "{e}");
        let e =
            validated(&format!("clients_file = \"c.toml\"\n[tokens]\nissue_tokens = false\n{CENTRAL}")).unwrap_err();
        assert!(e.starts_with("clients_file makes no sense"), "{e}");
    }

    #[test]
    fn a_sidecar_may_trust_an_issuer_named_like_its_own() {
        // Its own issuer is trusted by no one in validation-only mode: no duplicate.
        let same = "\n[[issuers]]\nissuer = \"https://tokengate.local\"\njwks_uri = \"https://c.example/jwks.json\"\n";
        assert!(validated(&format!("[tokens]\nissue_tokens = false\n{same}")).is_ok());
        let e = validated(same).unwrap_err();
        assert!(e.contains("duplicates tokens.issuer"), "{e}");
    }
}
