//! `[[routes]] rate_limit` and `[[clients]] rate_limit`: per-caller quotas (see `crate::quota`).

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::error::ConfigError;

/// What a route's quota is counted per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The token's `client_id` (RFC 9068): one bucket per OAuth client.
    ClientId,
    /// The token's `sub`: one bucket per user (or per client, for client credentials).
    Sub,
    /// The client connection's address.
    Ip,
    /// Any other claim of the token, as its text (arrays joined by spaces).
    Claim(String),
}

impl LimitKey {
    /// The metric label: `client_id`, `sub`, `ip` or `claim`.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitKey::ClientId => "client_id",
            LimitKey::Sub => "sub",
            LimitKey::Ip => "ip",
            LimitKey::Claim(_) => "claim",
        }
    }
}

impl<'de> Deserialize<'de> for LimitKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LimitKey, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "client_id" => LimitKey::ClientId,
            "sub" => LimitKey::Sub,
            "ip" => LimitKey::Ip,
            "" => return Err(de::Error::custom("rate_limit.key must not be empty")),
            _ => LimitKey::Claim(s),
        })
    }
}

/// `[[routes]] rate_limit = { key = "client_id", per_second = 50, burst = 100 }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    /// What the quota is counted per.
    pub key: LimitKey,
    /// Sustained requests per second per key (fractions allowed: 0.5 is one every 2 s).
    pub per_second: f64,
    /// Requests a key may send at once (default: `per_second`, rounded up).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Most keys remembered at once; past it, keys are evicted (and start with a full bucket).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// With `[state] backend = "redis"`: count this route across every instance on the store
    /// (true), or per instance (false).
    #[serde(default = "default_true")]
    pub shared: bool,
    /// With a shared count: requests an instance takes from the store in one round trip (default:
    /// a tenth of the burst, at least 1). 1 is exact; more waits on the store less often.
    #[serde(default)]
    pub lease: Option<u32>,
    /// `RateLimit-Policy` and `RateLimit` on every answer of the route (true), or only on a 429
    /// (false: two header lines fewer per response for clients that never read them).
    #[serde(default = "default_true")]
    pub headers: bool,
}

fn default_true() -> bool {
    true
}

fn default_max_keys() -> usize {
    100_000
}

/// `[[clients]] rate_limit = { per_second = 500 }`: this client's own rate on every limited route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests at once (default: `per_second`, rounded up).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A rate's checks, for `what` (the key's place in the config, named in the error).
pub(super) fn check_rate(what: &str, per_second: f64, burst: Option<u32>) -> Result<(), ConfigError> {
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1_000_000.0) {
        return Err(ConfigError::Invalid(format!("{what}.per_second must be above 0 and at most 1000000")));
    }
    if burst == Some(0) {
        return Err(ConfigError::Invalid(format!("{what}.burst must be at least 1")));
    }
    Ok(())
}

/// A route's `rate_limit`, on route `prefix` (public or not).
pub(super) fn check_route(prefix: &str, public: bool, l: &RouteRateLimit) -> Result<(), ConfigError> {
    check_rate(&format!("route {prefix:?}: rate_limit"), l.per_second, l.burst)?;
    if public && l.key != LimitKey::Ip {
        return Err(ConfigError::Invalid(format!(
            "route {prefix:?} is public: its rate_limit.key can only be \"ip\" (there is no token to read)"
        )));
    }
    if l.lease == Some(0) {
        return Err(ConfigError::Invalid(format!("route {prefix:?}: rate_limit.lease must be at least 1")));
    }
    Ok(())
}

/// The burst of a rate whose `burst` was left out: one second's worth.
pub fn default_burst(per_second: f64, burst: Option<u32>) -> u32 {
    burst.unwrap_or_else(|| (per_second.ceil() as u32).max(1))
}

/// The allowance of a shared count under `burst`: `lease` if set, else a tenth of the burst; never
/// more than the burst, never less than 1.
pub fn lease_size(lease: Option<u32>, burst: u32) -> u32 {
    lease.unwrap_or(burst / 10).clamp(1, burst.max(1))
}
