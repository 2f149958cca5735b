//! `[[routes]]`: what a route serves (prefix, hosts, methods), where it forwards, and what a
//! request must show to pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::cors::CorsConfig;
use super::dpop::DpopMode;
use super::quota::RouteRateLimit;
use super::upstreams::{is_group_name, UpstreamProtocol};

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on segment boundaries; the longest match wins. Whole segments may
    /// be placeholders, `/tenants/{tenant}/orders`, each matching one non-empty segment.
    pub prefix: String,
    /// Host names the route serves (`Host` / `:authority`, any case, port ignored; `*.` is one
    /// label); empty: any host. See `proxy::routes::table` for precedence.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Methods the route serves (written in any case, compared uppercased); empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `http://` or `https://` base URL, `echo` for the built-in demo upstream, or the name of
    /// an `[[upstreams]]` group.
    pub upstream: UpstreamTarget,
    /// Every one of these must be in the token's `scope` claim.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audience the token must name; defaults to `tokens.audience` (or the issuer's `audiences`).
    #[serde(default)]
    pub audience: Option<String>,
    /// No token needed at all.
    #[serde(default)]
    pub public: bool,
    /// Extra identity headers: header name -> claim path (`"realm_access.roles"`, or an array of
    /// segments for names that hold dots).
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, crate::auth::claims::ClaimPathConfig>,
    /// Conditions on the token's claims that must all hold (403 `insufficient_scope` otherwise).
    #[serde(default)]
    pub require: Vec<crate::auth::claims::RuleConfig>,
    /// Pass the `Authorization` header on to the upstream (false for legacy upstreams).
    #[serde(default = "yes")]
    pub forward_token: bool,
    /// Remove the route prefix from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// PEM file of CA certificates trusted for an `https://` upstream instead of webpki roots.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// The HTTP version spoken to a URL upstream (`h2c` for plaintext gRPC); a group has its own
    /// `protocol`. Unset: HTTP/1.1 to `http://`, ALPN to `https://`.
    #[serde(default)]
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Per-route override of `server.upstream_timeout_secs`.
    #[serde(default)]
    pub upstream_timeout_secs: Option<u64>,
    /// `allow`: a DPoP-bound token needs its proof, a bearer token passes; `require`: only
    /// DPoP-bound tokens with a proof pass.
    #[serde(default)]
    pub dpop: DpopMode,
    /// A quota per caller (GCRA), checked after the token: 429 past it.
    #[serde(default)]
    pub rate_limit: Option<RouteRateLimit>,
    /// Which browser origins may call this route (replaces `server.cors`), answered by the gateway.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

impl RouteConfig {
    /// `upstream_protocol` fits the upstream: only a URL takes it, h2c only `http://`, auto only `https://`.
    pub fn check_upstream_protocol(&self) -> Result<(), String> {
        let Some(p) = self.upstream_protocol else { return Ok(()) };
        match &self.upstream {
            UpstreamTarget::Url(uri) => {
                p.check("upstream_protocol", &uri.to_string(), uri.scheme_str().unwrap_or_default())
            }
            UpstreamTarget::Group(name) => {
                Err(format!("upstream_protocol is for a URL upstream; the group {name:?} sets its own `protocol`"))
            }
            UpstreamTarget::Echo => Err("upstream_protocol is for a URL upstream, not echo".into()),
        }
    }
}

/// `[[routes]] upstream`: the built-in echo service, or a base URL, told apart once at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// `echo`: the built-in demo service.
    Echo,
    /// `http://host[:port][/base]` or `https://...`: scheme and host checked, no query.
    Url(http::Uri),
    /// The name of an `[[upstreams]]` group (letters, digits, `-`, `_`: never a URL).
    Group(String),
}

impl std::str::FromStr for UpstreamTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "echo" {
            return Ok(UpstreamTarget::Echo);
        }
        if is_group_name(s) {
            return Ok(UpstreamTarget::Group(s.to_owned()));
        }
        let bad = |why: &str| {
            format!("upstream {s:?}: {why}; expected `echo`, an http:// or https:// URL, or an [[upstreams]] name")
        };
        let uri: http::Uri = s.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("unsupported or missing scheme")),
        }
        if uri.authority().is_none() {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL carries no query"));
        }
        Ok(UpstreamTarget::Url(uri))
    }
}

impl<'de> Deserialize<'de> for UpstreamTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `#[serde(default = "yes")]`: a boolean key that is on unless turned off.
pub(crate) fn yes() -> bool {
    true
}
