//! The immutable snapshot of everything reloadable: config, trusted issuers and their keys, our
//! signing keys, routes and the TLS certificate. A reload builds a whole new one and swaps it in
//! atomically; a snapshot that fails to build is refused and the old one keeps serving.

mod first_start;
pub mod reload;

/// Defined with what it governs (what a first start creates), so that file needs nothing of this one.
pub use first_start::BuildMode;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use rustls::sign::CertifiedKey;

use crate::auth::dpop::nonce::Nonces;
use crate::auth::jwt::{Issuer, IssuerKeys, Trust, ACCESS_TOKEN_TYP};
use crate::auth::keys::{Alg, KeySet, OwnKeys};
use crate::auth::remote::{RemoteKeys, RemoteSpec};
use crate::config::{Config, IssuerConfig, KeySource, RequireTyp, UpstreamTarget};
pub use crate::error::BuildError;
use crate::proxy::cors::Cors;
use crate::proxy::routes::{RouteSpec, RouteTable};
use crate::proxy::upstream::endpoints::EndpointSet;
use crate::proxy::upstream::group::{Background, Group};
use crate::proxy::upstream::{Pool, Pools};
use crate::tls::sni::Certificates;

/// Where a route sends its traffic.
#[allow(clippy::large_enum_variant)] // one per route, built once per reload
pub enum Upstream {
    /// The built-in echo service.
    Echo,
    /// A remote HTTP(S) service.
    Remote {
        /// Path of the base URL without trailing '/', prepended to the forwarded path.
        base_path: String,
        /// Connections to this upstream, shared by the routes that name the same one.
        pool: Arc<Pool>,
    },
    /// An `[[upstreams]]` group: balanced over its endpoints, with passive health and a retry.
    Group(Arc<Group>),
}

/// One route, pre-computed for the hot path.
pub struct Route {
    /// Configured prefix, as written (used as the metrics/log label).
    pub prefix: String,
    /// The route told apart from others on the same prefix (`"/orders" [GET] on api.example`):
    /// how a reload finds the previous generation's quota state.
    pub key: String,
    /// Its place in `config.routes`, for what the snapshot keeps only there.
    pub index: usize,
    /// Where requests go.
    pub upstream: Upstream,
    /// Scopes the token must hold.
    pub scopes: Vec<String>,
    /// Scopes joined by ' ' for the 403 `WWW-Authenticate` header.
    pub scope_text: String,
    /// Audience required (None: the issuer's accepted audiences).
    pub audience: Option<String>,
    /// No token needed.
    pub public: bool,
    /// Extra identity headers (already-validated header names) -> claim paths.
    pub claims_to_headers: Vec<(HeaderName, crate::auth::claims::ClaimPath)>,
    /// `require`, compiled: every rule must hold of the token's claims.
    pub require: Box<[crate::auth::claims::Rule]>,
    /// Keep `Authorization` when forwarding.
    pub forward_token: bool,
    /// Remove the prefix from the forwarded path.
    pub strip_prefix: bool,
    /// Time the upstream gets to answer.
    pub timeout: Duration,
    /// Whether unbound bearer tokens pass, or only DPoP-bound ones with their proof.
    pub dpop: crate::config::DpopMode,
    /// The route's per-caller quota, if it has one.
    pub quota: Option<RouteQuota>,
    /// The CORS policy the gateway answers browsers with on this route (its own or the server's).
    pub cors: Option<Arc<Cors>>,
}

/// A route's quota: what it counts per, the rate, and the state (kept across reloads that leave
/// the route's key unchanged, so a reload forgives no one).
pub struct RouteQuota {
    /// What the quota is counted per.
    pub key: crate::config::LimitKey,
    /// The route's rate (a client's own `rate_limit` replaces it).
    pub rate: crate::quota::Rate,
    /// The TAT of every key seen recently: the count itself when it is this instance's own, the
    /// fallback while a shared store cannot be reached.
    pub table: Arc<crate::quota::Table>,
    /// Counted across instances on the shared store (`rate_limit.shared` with a Redis backend).
    pub shared: bool,
    /// `rate_limit.lease` as written (None: a tenth of the caller's burst).
    pub lease: Option<u32>,
    /// The allowances this instance holds from the shared store, by key.
    pub leases: Arc<crate::quota::Leases>,
    /// `RateLimit` headers on every answer (`rate_limit.headers`), not only on a 429.
    pub headers: bool,
}

/// Everything a request needs, frozen at one generation.
pub struct Snapshot {
    /// The parsed config this snapshot was built from.
    pub config: Config,
    /// Trusted issuers (ours first among equals) and their keys.
    pub trust: Trust,
    /// Our signing keys; None in validation-only mode (`tokens.issue_tokens = false`).
    pub own: Option<OwnKeys>,
    /// Prefix table.
    pub routes: RouteTable<Arc<Route>>,
    /// The HTTPS listener's certificates: `tls.cert`, and each `[[tls.certificates]]` entry's
    /// for its names, picked by the handshake's server name (SNI).
    pub certificates: Certificates,
    /// The CAs client certificates chain to (`tls.client_ca`), for the handshake and for
    /// `tls_client_auth`; None when unset.
    pub client_tls: Option<Arc<crate::tls::client_cert::ClientTls>>,
    /// `tls.client_cert_header`, parsed once: stripped from every request, believed from
    /// `tls.client_cert_header_peers` only.
    pub client_cert_header: Option<HeaderName>,
    /// OAuth clients and users.
    pub directory: crate::oauth::directory::Directory,
    /// Every route's `claims_to_headers` names: stripped from client requests on all routes, so
    /// no upstream ever sees a client-made copy of a header some route derives from a token.
    pub identity_headers: Vec<HeaderName>,
    /// Tokens validated under this snapshot; dropped with it on reload.
    pub token_cache: crate::auth::token_cache::TokenCache,
    /// Upstream connection pools, one per distinct upstream; the next reload adopts them.
    pub pools: Pools,
    /// The `[[upstreams]]` groups, in config order; the next reload adopts their endpoints' health.
    pub groups: Vec<Arc<Group>>,
    /// Files and folders whose change triggers a reload.
    pub watched: Vec<PathBuf>,
    /// What this build created (first start) or would create (`tokengate check`), in words.
    pub first_start: Vec<String>,
    /// Warnings about the configuration that do not stop it (logged at start, shown by `check`).
    pub warnings: Vec<String>,
    /// Makes and checks DPoP server nonces (`dpop.require_nonce`).
    pub nonces: crate::auth::dpop::nonce::Nonces,
    /// `dpop.algorithms` as a challenge's `algs` parameter, made once.
    pub dpop_algs: String,
    /// `server.cors`, compiled: for answers no route made (404, 405), and inherited by routes.
    pub cors: Option<Arc<Cors>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("routes", &self.routes.len())
            .field("issuers", &self.trust.issuers.len())
            .finish()
    }
}

fn parse_algs(names: &[String]) -> Result<Vec<Alg>, BuildError> {
    names.iter().map(|n| Alg::parse(n).ok_or_else(|| BuildError::Invalid(format!("unknown algorithm {n:?}")))).collect()
}

impl Snapshot {
    /// Loads `config_path` and everything it names.
    pub fn build(config_path: &Path, mode: BuildMode) -> Result<Snapshot, BuildError> {
        Snapshot::build_after(config_path, mode, None)
    }

    /// Like [`Snapshot::build`], keeping `previous`'s upstream connection pools where the
    /// upstream did not change (a reload should not drop warm connections).
    pub fn build_after(
        config_path: &Path,
        mode: BuildMode,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let config = Config::load(config_path)?;
        let t = &config.tokens;
        let keys_dir = config.resolve(&t.keys_dir);
        let mut first_start = Vec::new();
        let (cert, key) = (config.resolve(&config.tls.cert), config.resolve(&config.tls.key));
        first_start::refuse_typed_paths(&config, &keys_dir, (&cert, &key), mode)?;
        let certified_key = first_start::certificate(&config, (&cert, &key), mode, &mut first_start)?;
        let own = first_start::signing_keys(&config, &keys_dir, mode, &mut first_start)?;
        let warnings: Vec<String> = first_start::unused_keys(&config, &keys_dir).into_iter().collect();
        if mode == BuildMode::Start {
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
        }
        let mut trust = Trust { issuers: Default::default(), max_token_bytes: t.max_token_bytes };
        if let Some(own) = &own {
            let mut own_algs: Vec<Alg> = Vec::new();
            for alg in own.keys.values().map(|k| k.alg) {
                if !own_algs.contains(&alg) {
                    own_algs.push(alg);
                }
            }
            trust.issuers.insert(
                t.issuer.clone(),
                Issuer {
                    keys: own.key_set().into(),
                    algorithms: own_algs,
                    audiences: vec![t.audience.clone()],
                    require_typ: Some(ACCESS_TOKEN_TYP.into()),
                    leeway: t.leeway_secs,
                    scope_claim: None,
                },
            );
        }
        let mut watched = vec![config_path.to_owned()];
        // A validating sidecar reads no keys: its keys folder is not watched either.
        if own.is_some() {
            watched.push(keys_dir);
        }
        for i in &config.issuers {
            let algorithms = parse_algs(&i.algorithms)?;
            let keys = issuer_keys(&config, i, algorithms.clone(), previous.map(|p| &p.trust), &mut watched)?;
            let require_typ = match &i.require_typ {
                None | Some(RequireTyp::Flag(false)) => None,
                Some(RequireTyp::Flag(true)) => Some(ACCESS_TOKEN_TYP.to_string()),
                Some(RequireTyp::Value(v)) => Some(v.trim_start_matches("application/").to_ascii_lowercase()),
            };
            let audiences = if i.audiences.is_empty() { vec![t.audience.clone()] } else { i.audiences.clone() };
            let scope_claim = (i.scope_claim != "scope").then(|| i.scope_claim.clone());
            let issuer = Issuer { keys, algorithms, audiences, require_typ, leeway: t.leeway_secs, scope_claim };
            trust.issuers.insert(i.issuer.clone(), issuer);
        }
        watched.push(cert);
        watched.push(key);
        let certificates = sni_certificates(&config, certified_key, &mut watched)?;
        let cors = match &config.server.cors {
            Some(c) => Some(Arc::new(Cors::compile(c).map_err(|e| BuildError::Invalid(format!("server.cors.{e}")))?)),
            None => None,
        };
        let mut table = Vec::with_capacity(config.routes.len());
        let resolver = upstream_resolver(&config);
        let mut pools = Pools::new(resolver.clone().filter(|_| !config.server.resolvers.is_empty()));
        let groups = build_groups(&config, &mut pools, previous, resolver.as_ref())?;
        for (index, r) in config.routes.iter().enumerate() {
            let (route, methods) = build_route(
                &config,
                (index, r),
                (&mut pools, &groups),
                previous.map(|p| &p.pools),
                previous.map(|p| &p.routes),
                cors.as_ref(),
            )?;
            table.push(RouteSpec { prefix: r.prefix.clone(), hosts: r.hosts.clone(), methods, value: Arc::new(route) });
            if let Some(ca) = &r.upstream_ca {
                watched.push(config.resolve(ca));
            }
        }
        let routes = RouteTable::new(table).map_err(|e| BuildError::Invalid(format!("routes: {e}")))?;
        let directory = crate::oauth::directory::Directory::build(&config)?;
        watched.extend(config.table_files());
        for c in &config.clients {
            let files = c.jwks.iter().chain(c.public_key.iter()).chain(c.tls_client_certificates.iter());
            watched.extend(files.map(|p| config.resolve(p)));
        }
        let client_tls = match &config.tls.client_ca {
            Some(ca) => {
                let ca = config.resolve(ca);
                let self_signed = directory.clients.values().any(|c| c.accepts_self_signed());
                let tls = crate::tls::client_cert::ClientTls::load(&ca, self_signed)?;
                watched.push(ca);
                Some(Arc::new(tls))
            }
            None => None,
        };
        let client_cert_header = match &config.tls.client_cert_header {
            Some(h) => Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                BuildError::Invalid(format!("tls.client_cert_header {h:?} is not a valid header name"))
            })?),
            None => None,
        };
        let token_cache = crate::auth::token_cache::TokenCache::new(config.tokens.cache_size);
        let identity_headers = routes_claim_headers(&config);
        let nonces = dpop_nonces(&config, &mut watched)?;
        let dpop_algs = config.dpop.algs_text();
        Ok(Snapshot {
            config,
            trust,
            own,
            routes,
            certificates,
            client_tls,
            client_cert_header,
            directory,
            identity_headers,
            token_cache,
            pools,
            groups,
            watched,
            first_start,
            warnings,
            nonces,
            dpop_algs,
            cors,
        })
    }

    /// Whether this gateway issues tokens (`tokens.issue_tokens`): it holds signing keys, and
    /// serves the token, revocation, introspection, JWKS and metadata endpoints.
    pub fn issues_tokens(&self) -> bool {
        self.own.is_some()
    }
}

/// The HTTPS listener's certificates: `default` (`tls.cert`) for any name, and each
/// `[[tls.certificates]]` entry's for the names it lists; their files are watched like `tls.cert`.
fn sni_certificates(
    config: &Config,
    default: Arc<CertifiedKey>,
    watched: &mut Vec<PathBuf>,
) -> Result<Certificates, BuildError> {
    let mut certificates = Certificates::new(default);
    for entry in &config.tls.certificates {
        let (cert, key) = (config.resolve(&entry.cert), config.resolve(&entry.key));
        let names: Vec<String> = entry.keys().collect();
        certificates.add(&names, (&cert, &key)).map_err(|e| BuildError::Invalid(format!("{}: {e}", entry.label())))?;
        watched.push(cert);
        watched.push(key);
    }
    Ok(certificates)
}

/// DPoP nonces keyed by `dpop.nonce_key_file`, or by this process's own random key (the same
/// across reloads, so a reload does not void the nonces clients hold).
fn dpop_nonces(config: &Config, watched: &mut Vec<PathBuf>) -> Result<Nonces, BuildError> {
    static PROCESS_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let lifetime = config.dpop.nonce_lifetime_secs;
    let Some(file) = &config.dpop.nonce_key_file else {
        let key = PROCESS_KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            // No entropy source: nonces are forgeable, which only weakens their freshness.
            let _ = aws_lc_rs::rand::fill(&mut k);
            k
        });
        return Ok(Nonces::new(key, lifetime));
    };
    let path = config.resolve(file);
    let key = std::fs::read(&path).map_err(|e| {
        BuildError::Invalid(format!("dpop.nonce_key_file {}: {}", path.display(), crate::reason::io_reason(&e)))
    })?;
    if key.len() < 32 {
        return Err(BuildError::Invalid(format!(
            "dpop.nonce_key_file {}: holds {} bytes, at least 32 random bytes are needed",
            path.display(),
            key.len()
        )));
    }
    watched.push(path);
    Ok(Nonces::new(&key, lifetime))
}

/// An `[[issuers]]` entry's keys: its JWKS file, or its remote set, the previous snapshot's
/// when nothing that decides the fetching changed (so a reload neither refetches nor forgets).
fn issuer_keys(
    config: &Config,
    i: &IssuerConfig,
    algorithms: Vec<Alg>,
    previous: Option<&Trust>,
    watched: &mut Vec<PathBuf>,
) -> Result<IssuerKeys, BuildError> {
    if let KeySource::File(file) = i.source() {
        let path = config.resolve(&file);
        let keys = KeySet::from_jwks_file(&path, &algorithms)?;
        watched.push(path);
        return Ok(IssuerKeys::Static(keys));
    }
    let ca = i.ca.as_ref().map(|p| config.resolve(p));
    watched.extend(ca.clone());
    let spec = RemoteSpec::new(i, algorithms, ca);
    let kept = previous.and_then(|t| t.issuers.get(&i.issuer)).and_then(|old| match &old.keys {
        IssuerKeys::Remote(r) if r.spec == spec => Some(r.clone()),
        _ => None,
    });
    match kept {
        Some(r) => Ok(IssuerKeys::Remote(r)),
        None => Ok(IssuerKeys::Remote(RemoteKeys::new(spec)?)),
    }
}

fn routes_claim_headers(config: &Config) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = config
        .routes
        .iter()
        .flat_map(|r| r.claims_to_headers.keys())
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// The resolver of upstream host names, when one is needed: `[server] resolvers` are set, or a
/// group names an endpoint by host name (re-resolved in the background). Without one (the system's
/// configuration unreadable), names are resolved by `getaddrinfo` at each connect, as routes' are.
fn upstream_resolver(config: &Config) -> Option<Arc<hickory_resolver::TokioResolver>> {
    let named = config.upstreams.iter().any(|g| !EndpointSet::names(g).is_empty());
    if config.server.resolvers.is_empty() && !named {
        return None;
    }
    match crate::proxy::upstream::lookup::resolver(&config.server.resolvers) {
        Ok(r) => Some(Arc::new(r)),
        Err(error) => {
            tracing::warn!(%error, "upstream host names are looked up at each connect, not re-resolved");
            None
        }
    }
}

/// The `[[upstreams]]` groups: each endpoint's pool from `pools` (adopted like a route's), its
/// health and resolved addresses adopted from the previous generation's group of the same name.
fn build_groups(
    config: &Config,
    pools: &mut Pools,
    previous: Option<&Snapshot>,
    resolver: Option<&Arc<hickory_resolver::TokioResolver>>,
) -> Result<Vec<Arc<Group>>, BuildError> {
    let mut groups = Vec::with_capacity(config.upstreams.len());
    for g in &config.upstreams {
        let bad = |m: String| BuildError::Invalid(format!("[[upstreams]] {:?}: {m}", g.name));
        let old = previous.and_then(|p| p.groups.iter().find(|o| o.name == g.name));
        let ca = g.ca.as_ref().map(|ca| config.resolve(ca));
        let endpoints = EndpointSet::build(
            g,
            &config.server,
            pools,
            previous.map(|p| &p.pools),
            old.map(|o| &*o.endpoints),
            ca.as_deref(),
        )?;
        let hash_on = match g.balance {
            crate::config::BalanceKind::Hash => Some(g.hash_on().map_err(bad)?),
            _ => None,
        };
        let background = Background::of(g, resolver);
        let retry = crate::proxy::upstream::retry::RetryPolicy::new(g);
        let group = Group::new(g.name.clone(), endpoints, (g.balance, hash_on), &g.eject, (background, retry));
        groups.push(Arc::new(group));
    }
    Ok(groups)
}

fn build_route(
    config: &Config,
    (index, r): (usize, &crate::config::RouteConfig),
    (pools, groups): (&mut Pools, &[Arc<Group>]),
    previous: Option<&Pools>,
    previous_routes: Option<&RouteTable<Arc<Route>>>,
    server_cors: Option<&Arc<Cors>>,
) -> Result<(Route, Vec<http::Method>), BuildError> {
    let bad = |m: String| BuildError::Invalid(format!("route {:?}: {m}", r.prefix));
    let methods = route_methods(r)?;
    let key =
        crate::proxy::routes::table::describe_route(&r.prefix, &r.hosts, methods.iter().map(http::Method::as_str));
    let upstream = match &r.upstream {
        UpstreamTarget::Echo => Upstream::Echo,
        UpstreamTarget::Url(uri) => {
            // Both checked when the config was parsed.
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(bad(format!("upstream {uri}: no scheme or host")));
            };
            let ca = r.upstream_ca.as_ref().map(|ca| config.resolve(ca));
            let pool = pools.get(&config.server, (scheme, authority), ca.as_deref(), r.upstream_protocol, previous)?;
            Upstream::Remote { base_path: uri.path().trim_end_matches('/').to_owned(), pool }
        }
        UpstreamTarget::Group(name) => match groups.iter().find(|g| g.name == *name) {
            Some(g) => Upstream::Group(g.clone()),
            // Checked when the config was parsed.
            None => return Err(bad(format!("upstream {name:?} is no [[upstreams]] name"))),
        },
    };
    let mut claims_to_headers = Vec::new();
    for (h, claim) in &r.claims_to_headers {
        let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| bad(format!("bad header name {h:?}")))?;
        let path = claim.compile().map_err(|e| bad(format!("claims_to_headers: {e}")))?;
        claims_to_headers.push((name, path));
    }
    let route = Route {
        prefix: r.prefix.clone(),
        quota: r.rate_limit.as_ref().map(|l| route_quota(config, &key, l, previous_routes)),
        key,
        index,
        upstream,
        scope_text: r.scopes.join(" "),
        scopes: r.scopes.clone(),
        audience: r.audience.clone(),
        public: r.public,
        claims_to_headers,
        require: {
            let placeholders = crate::proxy::routes::table::placeholders(&r.prefix);
            let rules: Result<Vec<_>, String> = r.require.iter().map(|rule| rule.compile(&placeholders)).collect();
            rules.map_err(|e| bad(format!("require: {e}")))?.into()
        },
        forward_token: r.forward_token,
        strip_prefix: r.strip_prefix,
        timeout: Duration::from_secs(r.upstream_timeout_secs.unwrap_or(config.server.upstream_timeout_secs)),
        dpop: r.dpop,
        cors: crate::proxy::cors::route_policy(r.cors.as_ref(), server_cors, &r.methods).map_err(bad)?,
    };
    Ok((route, methods))
}

/// `[[routes]] methods`, uppercased and checked.
fn route_methods(r: &crate::config::RouteConfig) -> Result<Vec<http::Method>, BuildError> {
    let bad = |m: &str| BuildError::Invalid(format!("route {:?}: methods: {m:?} is not an HTTP method", r.prefix));
    r.methods.iter().map(|m| http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| bad(m))).collect()
}

/// Each `[[upstreams]]` endpoint's health and totals, for `GET /metrics` (only those configured now).
pub fn observe_upstreams(snap: &Snapshot, metrics: &crate::metrics::Metrics) {
    let observed: Vec<(&str, Vec<crate::proxy::upstream::group::EndpointRow>)> =
        snap.groups.iter().map(|g| (g.name.as_str(), g.observe())).collect();
    let rows = observed.iter().flat_map(|(group, endpoints)| {
        endpoints.iter().map(|(e, healthy, totals)| (*group, e.as_str(), *healthy, *totals))
    });
    metrics.observe_endpoints(rows);
}

/// Each limited route's quota state, for `GET /metrics`.
pub fn observe_quotas(snap: &Snapshot, metrics: &crate::metrics::Metrics) {
    // Labelled by prefix: routes that share one (by method or host) are summed.
    let mut by_prefix: Vec<(&str, usize, u64)> = Vec::new();
    for route in snap.routes.values() {
        let Some(q) = &route.quota else { continue };
        let (keys, evicted) = (q.table.len() + q.leases.len(), q.table.evicted() + q.leases.evicted());
        match by_prefix.iter_mut().find(|(p, _, _)| *p == route.prefix) {
            Some(row) => (row.1, row.2) = (row.1 + keys, row.2 + evicted),
            None => by_prefix.push((&route.prefix, keys, evicted)),
        }
    }
    for (prefix, keys, evicted) in by_prefix {
        metrics.observe_quota(prefix, keys, evicted);
    }
}

/// A route's quota, keeping the previous generation's counts when the route and its key are the
/// same (a reload forgives no one).
fn route_quota(
    config: &Config,
    route_key: &str,
    l: &crate::config::RouteRateLimit,
    previous_routes: Option<&RouteTable<Arc<Route>>>,
) -> RouteQuota {
    let previous = previous_routes
        .and_then(|routes| routes.values().find(|old| old.key == route_key))
        .and_then(|old| old.quota.as_ref())
        .filter(|q| q.key == l.key);
    RouteQuota {
        key: l.key.clone(),
        rate: crate::quota::Rate {
            per_second: l.per_second,
            burst: crate::config::default_burst(l.per_second, l.burst),
        },
        table: previous.map_or_else(|| Arc::new(crate::quota::Table::new(l.max_keys)), |q| q.table.clone()),
        shared: l.shared && config.state.backend == crate::config::StateBackend::Redis,
        lease: l.lease,
        leases: previous.map_or_else(|| Arc::new(crate::quota::Leases::new(l.max_keys)), |q| q.leases.clone()),
        headers: l.headers,
    }
}

#[cfg(test)]
mod tests;
