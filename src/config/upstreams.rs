//! `[[upstreams]]`: named groups of endpoints that routes name in `upstream` instead of a URL.

use serde::Deserialize;

use super::error::ConfigError;
use crate::auth::claims::{ClaimPath, ClaimPathConfig};

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamGroupConfig {
    /// What routes write in `upstream`; letters, digits, `-` and `_` only, so it never reads as a URL.
    pub name: String,
    /// `http://host:port` or `https://host:port` of each instance; each gets its own pool.
    pub endpoints: Vec<String>,
    /// How a request picks its endpoint.
    #[serde(default)]
    pub balance: BalanceKind,
    /// With `balance = "hash"`: what keeps a caller on one endpoint (`sub` when unset); a
    /// keyword, `header:X`, or a claim path (dotted, or an array of segments).
    #[serde(default)]
    pub hash_on: Option<ClaimPathConfig>,
    /// Passive health: when an endpoint that keeps failing is left out, and for how long.
    #[serde(default)]
    pub eject: EjectConfig,
    /// The HTTP version spoken to the endpoints: unset, HTTP/1.1 to `http://` and ALPN to `https://`.
    #[serde(default)]
    pub protocol: Option<UpstreamProtocol>,
    /// How often an endpoint's host name is looked up again (sooner when its record's TTL is
    /// shorter): every address it has is an endpoint.
    #[serde(default = "default_dns_refresh_secs")]
    pub dns_refresh_secs: u64,
    /// Active health: probes that take an endpoint out while they fail and back once they pass.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Tries after the first on another endpoint (0: none): after a connect failure whatever the
    /// method, after a reset only for idempotent methods with a body kept whole.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Request bodies up to this many bytes are kept while sent, so that an idempotent request
    /// reset before its answer can be sent again; a longer body is not retried after a reset.
    #[serde(default = "default_retry_buffer_bytes")]
    pub retry_buffer_bytes: usize,
    /// How many retries the group may add to its load.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// CA file (PEM) that `https://` endpoints are verified against instead of the webpki roots.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

fn default_dns_refresh_secs() -> u64 {
    30
}

fn default_retries() -> u32 {
    1
}

fn default_retry_buffer_bytes() -> usize {
    64 * 1024
}

/// `[[upstreams]] retry_budget`: retries allowed per second are `min_retries_per_sec` plus
/// `ratio` times the requests of the last second (Finagle's and Linkerd's budget).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries as a share of requests: 0.2 lets a failing group grow its load by a fifth at most.
    pub ratio: f64,
    /// Retries allowed whatever the traffic, so a quiet group still retries its few failures.
    pub min_retries_per_sec: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig { ratio: 0.2, min_retries_per_sec: 10 }
    }
}

/// `[[upstreams]] health_check`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path of the `GET` each probe sends (with the endpoint's own `Host`).
    pub path: String,
    /// Time between two probes of an endpoint.
    pub interval_secs: u64,
    /// Time a probe gets to connect and receive its answer head.
    pub timeout_ms: u64,
    /// Passing probes in a row that bring a down endpoint back.
    pub healthy: u32,
    /// Failing probes in a row that take an endpoint out.
    pub unhealthy: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig { path: "/healthz".into(), interval_secs: 5, timeout_ms: 1000, healthy: 2, unhealthy: 3 }
    }
}

/// `[[upstreams]] protocol` (and `[[routes]] upstream_protocol`): how the gateway talks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only, also over TLS (ALPN offers only `http/1.1`).
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (`http://`): what cluster-internal gRPC speaks.
    H2c,
    /// ALPN over TLS (`https://`): h2 when the upstream offers it, else HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// What an upstream with `scheme` speaks when `set` (the key) is unset: HTTP/1.1 in plain,
    /// ALPN over TLS, as before the key existed.
    pub fn resolve(set: Option<UpstreamProtocol>, scheme: &str) -> UpstreamProtocol {
        match set {
            Some(p) => p,
            None if scheme == "https" => UpstreamProtocol::Auto,
            None => UpstreamProtocol::Http1,
        }
    }

    /// Refuses what cannot work: h2c needs plain TCP, ALPN needs TLS. `key` names the key.
    pub fn check(self, key: &str, url: &str, scheme: &str) -> Result<(), String> {
        match (self, scheme) {
            (UpstreamProtocol::H2c, "https") => Err(format!(
                "{key} = \"h2c\" is HTTP/2 over plain TCP, but {url:?} is https://; use \"auto\" (h2 by ALPN) for TLS"
            )),
            (UpstreamProtocol::Auto, "http") => Err(format!(
                "{key} = \"auto\" picks the version by ALPN, which needs TLS, but {url:?} is http://; use \"h2c\" or \"http1\""
            )),
            _ => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for UpstreamProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "http1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            "auto" => Ok(UpstreamProtocol::Auto),
            other => Err(serde::de::Error::custom(format!("protocol {other:?} is not \"http1\", \"h2c\" or \"auto\""))),
        }
    }
}

/// `[[upstreams]] balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BalanceKind {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests waiting for their response head.
    LeastRequest,
    /// Consistent (rendezvous) hashing of `hash_on`: one caller, one endpoint.
    Hash,
}

impl<'de> Deserialize<'de> for BalanceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "round_robin" => Ok(BalanceKind::RoundRobin),
            "least_request" => Ok(BalanceKind::LeastRequest),
            "hash" => Ok(BalanceKind::Hash),
            other => Err(serde::de::Error::custom(format!(
                "balance {other:?} is not \"round_robin\", \"least_request\" or \"hash\""
            ))),
        }
    }
}

/// `[[upstreams]] hash_on`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The token's `sub`.
    Sub,
    /// The token's `client_id`.
    ClientId,
    /// The client's IP address.
    Ip,
    /// A request header's value (lowercase name).
    Header(String),
    /// A claim of the token, at this path.
    Claim(ClaimPath),
}

/// `[[upstreams]] eject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectConfig {
    /// Connect errors, resets, 5xx or time-outs in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection's length; each repeat doubles it.
    pub base_secs: u64,
    /// Longest ejection.
    pub max_secs: u64,
}

impl Default for EjectConfig {
    fn default() -> Self {
        EjectConfig { consecutive_failures: 5, base_secs: 10, max_secs: 300 }
    }
}

/// Whether `s` may name a group: never a URL, never `echo`.
pub fn is_group_name(s: &str) -> bool {
    !s.is_empty() && s != "echo" && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl UpstreamGroupConfig {
    /// `hash_on`, parsed (`sub` when unset).
    pub fn hash_on(&self) -> Result<HashOn, String> {
        let path = match &self.hash_on {
            None => return Ok(HashOn::Sub),
            Some(ClaimPathConfig::Dotted(h)) => match h.as_str() {
                "sub" => return Ok(HashOn::Sub),
                "client_id" => return Ok(HashOn::ClientId),
                "ip" => return Ok(HashOn::Ip),
                _ => match h.strip_prefix("header:") {
                    Some(name) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                        return Ok(HashOn::Header(name.to_ascii_lowercase()))
                    }
                    Some(_) => return Err(format!("hash_on {h:?} does not name a header after \"header:\"")),
                    None => self.hash_on.as_ref(),
                },
            },
            Some(ClaimPathConfig::Segments(_)) => self.hash_on.as_ref(),
        };
        let path = path.map(ClaimPathConfig::compile).transpose();
        match path {
            Ok(Some(p)) => Ok(HashOn::Claim(p)),
            Ok(None) => Ok(HashOn::Sub),
            Err(e) => Err(format!(
                "hash_on: {e} (want \"sub\", \"client_id\", \"ip\", \"header:<a header name>\" or a claim path)"
            )),
        }
    }

    /// The endpoints as URIs (checked by [`validate`]).
    pub fn endpoint_uris(&self) -> Vec<http::Uri> {
        self.endpoints.iter().filter_map(|e| e.parse().ok()).collect()
    }

    fn check(&self) -> Result<(), String> {
        if !is_group_name(&self.name) {
            return Err(format!("name {:?} must be letters, digits, '-' or '_' (not a URL, not \"echo\")", self.name));
        }
        if self.endpoints.is_empty() {
            return Err("endpoints must list at least one http:// or https:// URL".into());
        }
        for (n, e) in self.endpoints.iter().enumerate() {
            let uri: http::Uri = e.parse().map_err(|_| format!("endpoints {e:?} is not a URL"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(format!("endpoints {e:?} must be http://host:port or https://host:port"));
            }
            if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                return Err(format!("endpoints {e:?} must carry no path or query (a route's prefix is its path)"));
            }
            if let Some(p) = self.protocol {
                p.check("protocol", e, uri.scheme_str().unwrap_or_default())?;
            }
            if self.endpoints[..n].iter().any(|o| o.trim_end_matches('/') == e.trim_end_matches('/')) {
                return Err(format!("endpoints {e:?} is listed twice"));
            }
        }
        if self.hash_on.is_some() && self.balance != BalanceKind::Hash {
            return Err("hash_on is only read with balance = \"hash\"".into());
        }
        self.hash_on()?;
        let e = &self.eject;
        if e.consecutive_failures == 0 {
            return Err("eject.consecutive_failures must be at least 1".into());
        }
        if e.base_secs == 0 {
            return Err("eject.base_secs must be at least 1".into());
        }
        if e.max_secs < e.base_secs {
            return Err("eject.max_secs must be at least eject.base_secs".into());
        }
        let b = &self.retry_budget;
        if !(0.0..=1.0).contains(&b.ratio) {
            return Err("retry_budget.ratio must be between 0 and 1".into());
        }
        if self.retries > 10 {
            return Err("retries must be at most 10".into());
        }
        if self.dns_refresh_secs == 0 {
            return Err("dns_refresh_secs must be at least 1".into());
        }
        if let Some(h) = &self.health_check {
            if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(format!("health_check.path {:?} must be a path starting with '/'", h.path));
            }
            if h.interval_secs == 0 {
                return Err("health_check.interval_secs must be at least 1".into());
            }
            if h.timeout_ms == 0 {
                return Err("health_check.timeout_ms must be at least 1".into());
            }
            if h.healthy == 0 || h.unhealthy == 0 {
                return Err("health_check.healthy and health_check.unhealthy must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Every `[[upstreams]]` entry checked, names unique.
pub fn validate(groups: &[UpstreamGroupConfig]) -> Result<(), ConfigError> {
    for (n, g) in groups.iter().enumerate() {
        let name = &g.name;
        g.check().map_err(|m| ConfigError::Invalid(format!("[[upstreams]] {name:?}: {m}")))?;
        if groups[..n].iter().any(|o| o.name == g.name) {
            return Err(ConfigError::Invalid(format!("[[upstreams]] name {name:?} is listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(extra: &str) -> Result<(), String> {
        let text = format!("name = \"orders\"\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n{extra}");
        let g: UpstreamGroupConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        validate(&[g]).map_err(|e| e.to_string())
    }

    #[test]
    fn names_never_read_as_urls() {
        assert!(is_group_name("orders-v2_eu"));
        for bad in ["", "echo", "http://x", "localhost:8080", "a b", "a/b"] {
            assert!(!is_group_name(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_name_the_key() {
        assert!(group("").is_ok());
        assert!(group("balance = \"hash\"\nhash_on = \"header:X-Tenant\"").is_ok());
        assert!(group("balance = \"hash\"\nhash_on = \"realm.tenant\"").is_ok());
        assert!(group("balance = \"hash\"\nhash_on = [\"https://example.com/tenant\"]").is_ok());
        let cases = [
            ("hash_on = \"sub\"", "hash_on is only read with balance = \"hash\""),
            ("eject = { consecutive_failures = 0 }", "eject.consecutive_failures"),
            ("eject = { base_secs = 20, max_secs = 10 }", "eject.max_secs"),
            ("balance = \"hash\"\nhash_on = \"header:\"", "hash_on \"header:\" does not name a header"),
            ("balance = \"hash\"\nhash_on = \"a..b\"", "hash_on: claim a..b has an empty segment"),
            ("retry_budget = { ratio = 1.5 }", "retry_budget.ratio"),
            ("retries = 11", "retries must be at most 10"),
            ("protocol = \"auto\"", "protocol = \"auto\" picks the version by ALPN, which needs TLS"),
            ("dns_refresh_secs = 0", "dns_refresh_secs"),
            ("health_check = { path = \"healthz\" }", "health_check.path \"healthz\""),
            ("health_check = { interval_secs = 0 }", "health_check.interval_secs"),
            ("health_check = { unhealthy = 0 }", "health_check.unhealthy"),
        ];
        for (extra, want) in cases {
            let e = group(extra).unwrap_err();
            assert!(e.contains("[[upstreams]] \"orders\"") && e.contains(want), "{extra}: {e}");
        }
        let g: UpstreamGroupConfig = toml::from_str("name = \"o\"\nendpoints = [\"http://a:1/base\"]").expect("parses");
        assert!(validate(&[g]).unwrap_err().to_string().contains("endpoints \"http://a:1/base\" must carry no path"));
    }

    #[test]
    fn protocol_fits_the_scheme() {
        assert!(group("protocol = \"h2c\"").is_ok());
        assert!(group("protocol = \"http1\"").is_ok());
        let g: UpstreamGroupConfig =
            toml::from_str("name = \"o\"\nendpoints = [\"https://a:1\"]\nprotocol = \"h2c\"").expect("parses");
        let e = validate(&[g]).unwrap_err().to_string();
        assert!(e.contains("protocol = \"h2c\" is HTTP/2 over plain TCP, but \"https://a:1\" is https://"), "{e}");
        let e = toml::from_str::<UpstreamGroupConfig>("name = \"o\"\nendpoints = []\nprotocol = \"h3\"").unwrap_err();
        assert!(e.to_string().contains("protocol \"h3\" is not \"http1\", \"h2c\" or \"auto\""), "{e}");
        assert_eq!(UpstreamProtocol::resolve(None, "https"), UpstreamProtocol::Auto);
        assert_eq!(UpstreamProtocol::resolve(None, "http"), UpstreamProtocol::Http1);
    }
}
