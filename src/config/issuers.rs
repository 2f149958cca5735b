//! `[[issuers]]`: other identity providers whose tokens the proxy accepts, with their keys from a
//! JWKS file, a JWKS URL, or the provider's discovery document.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;

/// `require_typ` accepts `true` (meaning `at+jwt`), `false`, or the exact `typ` string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RequireTyp {
    /// `true` requires `at+jwt`; `false` checks nothing.
    Flag(bool),
    /// The exact `typ` value required (compared case-insensitively, `application/` prefix allowed).
    Value(String),
}

/// `[[issuers]]`: an external identity provider whose tokens are trusted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value of that provider's tokens.
    pub issuer: String,
    /// Path to a JWKS JSON file holding its public keys (hot-reloaded like the config).
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// URL of the provider's JWKS, fetched in the background and on an unknown `kid`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration` (then RFC 8414's document).
    #[serde(default)]
    pub discovery: bool,
    /// Extra trust root (PEM) for the provider's HTTPS certificate; webpki roots otherwise.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Audiences accepted from this issuer when the route names none.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer (allow-list; `none` is never accepted).
    #[serde(default = "default_external_algs")]
    pub algorithms: Vec<String>,
    /// Header `typ` the tokens must carry; absent: not checked.
    #[serde(default)]
    pub require_typ: Option<RequireTyp>,
    /// Claim holding the granted scopes: `scope` (a space-separated string) or e.g. `scp` (Okta,
    /// Entra ID: a string or an array of strings).
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Fixed refresh interval of a remote key set; absent: the answer's `Cache-Control: max-age`
    /// clamped to [60, 86400] s, 300 s when it sends none.
    #[serde(default)]
    pub jwks_refresh_secs: Option<u64>,
    /// An unknown `kid` refetches at most once per this many seconds (protects the provider).
    #[serde(default = "default_refetch_min")]
    pub jwks_refetch_min_secs: u64,
    /// How long the last good keys keep working while every fetch fails.
    #[serde(default = "default_max_stale")]
    pub jwks_max_stale_secs: u64,
    /// Bound on one fetch: connect, and then the whole answer.
    #[serde(default = "default_fetch_timeout")]
    pub jwks_timeout_secs: u64,
    /// At start, `/readyz` waits this long for the first fetch, then is ready without this issuer.
    #[serde(default = "default_start_timeout")]
    pub jwks_start_timeout_secs: u64,
    /// A request with an unknown `kid` waits at most this long for the refetch it triggered.
    #[serde(default = "default_unknown_kid_wait")]
    pub jwks_unknown_kid_wait_ms: u64,
}

fn default_external_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_scope_claim() -> String {
    "scope".into()
}
fn default_refetch_min() -> u64 {
    10
}
fn default_max_stale() -> u64 {
    86_400
}
fn default_fetch_timeout() -> u64 {
    5
}
fn default_start_timeout() -> u64 {
    10
}
fn default_unknown_kid_wait() -> u64 {
    1000
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file (path as written; resolve against the config folder).
    File(PathBuf),
    /// A JWKS URL.
    Uri(http::Uri),
    /// The `jwks_uri` of the issuer's discovery document.
    Discovery,
}

impl IssuerConfig {
    /// Where the keys come from (valid after [`IssuerConfig::validate`]).
    pub fn source(&self) -> KeySource {
        match (&self.jwks, &self.jwks_uri) {
            (Some(path), _) => KeySource::File(path.clone()),
            (None, Some(uri)) => KeySource::Uri(uri.parse().unwrap_or_default()),
            (None, None) => KeySource::Discovery,
        }
    }

    /// Checks one entry; errors name the issuer and the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.issuer;
        let bad = |m: String| Err(ConfigError::Invalid(format!("[[issuers]] {name:?}: {m}")));
        let given = [self.jwks.is_some(), self.jwks_uri.is_some(), self.discovery].iter().filter(|b| **b).count();
        if given != 1 {
            return bad("give exactly one of jwks (a file), jwks_uri, or discovery = true".into());
        }
        if let Some(uri) = &self.jwks_uri {
            if let Err(m) = fetchable_url(uri) {
                return bad(format!("jwks_uri {uri:?}: {m}"));
            }
        }
        if self.discovery {
            if let Err(m) = fetchable_url(&self.issuer) {
                return bad(format!("discovery needs the issuer to be a URL: {m}"));
            }
        }
        if self.ca.is_some() && self.jwks.is_some() {
            return bad("ca is for jwks_uri or discovery (a JWKS file is not fetched)".into());
        }
        if self.scope_claim.is_empty() {
            return bad("scope_claim must not be empty".into());
        }
        if self.jwks_refresh_secs == Some(0) {
            return bad("jwks_refresh_secs must be at least 1".into());
        }
        if self.jwks_timeout_secs == 0 || self.jwks_timeout_secs > 300 {
            return bad("jwks_timeout_secs must be between 1 and 300".into());
        }
        if self.jwks_unknown_kid_wait_ms > 30_000 {
            return bad("jwks_unknown_kid_wait_ms must be at most 30000".into());
        }
        Ok(())
    }
}

/// Whether tokengate fetches from `url`: `https://`, or plain `http://` to a loopback address
/// only (a key set fetched in clear over a network could be swapped by anyone on the path).
pub fn fetchable_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    let host = uri.host().ok_or("no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err("plain http is only allowed to a loopback address; use https".into()),
        _ => Err("must start with https://".into()),
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<IssuerConfig, String> {
        let c: IssuerConfig =
            toml::from_str(&format!("issuer = \"https://idp.example\"\n{extra}")).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn exactly_one_key_source() {
        assert_eq!(parse("jwks = \"k.json\"").unwrap().source(), KeySource::File("k.json".into()));
        assert!(matches!(parse("jwks_uri = \"https://idp.example/certs\"").unwrap().source(), KeySource::Uri(_)));
        assert_eq!(parse("discovery = true").unwrap().source(), KeySource::Discovery);
        for both in ["", "jwks = \"k\"\njwks_uri = \"https://i/c\"", "jwks_uri = \"https://i/c\"\ndiscovery = true"] {
            assert!(parse(both).unwrap_err().contains("exactly one"), "{both:?}");
        }
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        for ok in ["https://idp.example/c", "http://127.0.0.1:8080/c", "http://localhost/c", "http://[::1]:9/c"] {
            assert!(fetchable_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://idp.example/c", "loopback"),
            ("http://10.0.0.1/c", "loopback"),
            ("ftp://idp.example/c", "https://"),
            ("/certs", "no host"),
            ("not a url at all", "not a URL"),
        ] {
            assert!(fetchable_url(bad).unwrap_err().contains(why), "{bad}");
        }
        let e = parse("jwks_uri = \"http://idp.example/certs\"").unwrap_err();
        assert!(e.contains("[[issuers]] \"https://idp.example\": jwks_uri"), "{e}");
    }

    #[test]
    fn bounds_and_defaults() {
        let c = parse("discovery = true").unwrap();
        assert_eq!((c.jwks_refetch_min_secs, c.jwks_max_stale_secs, c.jwks_refresh_secs), (10, 86_400, None));
        assert_eq!((c.scope_claim.as_str(), c.jwks_unknown_kid_wait_ms), ("scope", 1000));
        assert!(parse("discovery = true\njwks_refresh_secs = 0").is_err());
        assert!(parse("discovery = true\njwks_timeout_secs = 0").is_err());
        assert!(parse("discovery = true\nscope_claim = \"\"").is_err());
        assert!(parse("jwks = \"k\"\nca = \"ca.pem\"").unwrap_err().contains("ca is for"));
        assert!(parse("discovery = true\nbogus = 1").unwrap_err().contains("bogus"));
    }
}
