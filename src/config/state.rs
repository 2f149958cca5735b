//! `[state]`: where refresh families, revocations, assertion jtis and lockout counters live, the
//! embedded redb file (one instance) or a Redis server shared by several instances.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;

/// `state.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// One redb file at `state.path`: nothing to run, but one gateway only.
    #[default]
    Redb,
    /// A Redis server at `state.url`, shared by every instance pointing at it.
    Redis,
}

/// `[state]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Which store holds the state; redb unless several instances must share it.
    pub backend: StateBackend,
    /// redb file for durable state; `:memory:` keeps it in memory (lost on restart).
    pub path: PathBuf,
    /// `redis://` or `rediss://` (TLS) URL, with `user:password@` when the server wants them.
    pub url: Option<String>,
    /// Prepended to every Redis key, so that several gateway fleets can share one server.
    pub key_prefix: String,
    /// Extra trust root (PEM) for a `rediss://` server whose certificate a private CA signed.
    pub ca: Option<PathBuf>,
    /// Bound on one store operation: past it the token endpoint answers 503 instead of hanging.
    pub timeout_ms: u64,
    /// Redis Sentinels (`host:port`) that name the primary, so that a failover needs no restart;
    /// empty: `url` names the server itself.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under (their `sentinel monitor <name> ...`).
    pub sentinel_master: Option<String>,
    /// Replicas that must confirm a state change (WAIT) before it is answered, so that a change
    /// answered 200 survives the primary's death; 0 answers once the primary has it.
    pub wait_replicas: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackend::Redb,
            path: "state/tokengate.redb".into(),
            url: None,
            key_prefix: "tokengate:".into(),
            ca: None,
            timeout_ms: 2000,
            sentinels: Vec::new(),
            sentinel_master: None,
            wait_replicas: 0,
        }
    }
}

/// Hand-written so that a password in `url` never reaches a log line.
impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(redacted_url))
            .field("key_prefix", &self.key_prefix)
            .field("ca", &self.ca)
            .field("timeout_ms", &self.timeout_ms)
            .field("sentinels", &self.sentinels)
            .field("sentinel_master", &self.sentinel_master)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// `url` without its `user:password@` part, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}://***@{}", &url[..scheme_end], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl StateConfig {
    /// Checks the keys that belong to the chosen backend; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(1..=60_000).contains(&self.timeout_ms) {
            return bad("state.timeout_ms: must be between 1 and 60000");
        }
        match self.backend {
            StateBackend::Redb => {
                if self.url.is_some() || self.ca.is_some() {
                    return bad("state.url / state.ca: only used with backend = \"redis\"");
                }
                if !self.sentinels.is_empty() || self.sentinel_master.is_some() || self.wait_replicas > 0 {
                    return bad("state.sentinels / state.sentinel_master / state.wait_replicas: only used with backend = \"redis\"");
                }
            }
            StateBackend::Redis => {
                let Some(url) = self.url.as_deref() else {
                    return bad("state.url: required with backend = \"redis\" (e.g. \"redis://127.0.0.1:6379/0\")");
                };
                let tls = url.starts_with("rediss://");
                if !tls && !url.starts_with("redis://") {
                    return bad("state.url: must start with redis:// or rediss://");
                }
                if self.ca.is_some() && !tls {
                    return bad("state.ca: only used with a rediss:// (TLS) state.url");
                }
                self.validate_sentinels(tls)?;
                // Braces would turn part of every key into a Redis Cluster hash tag.
                if self.key_prefix.contains(['{', '}']) {
                    return bad("state.key_prefix: must not contain '{' or '}'");
                }
            }
        }
        Ok(())
    }

    /// `sentinels` and `sentinel_master` come together; each sentinel is a `host:port`.
    fn validate_sentinels(&self, tls: bool) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        match (self.sentinels.is_empty(), self.sentinel_master.as_deref()) {
            (true, None) => return Ok(()),
            (true, Some(_)) => {
                return bad("state.sentinel_master: needs state.sentinels (the sentinels' host:port)".into())
            }
            (false, None) => {
                return bad("state.sentinels: needs state.sentinel_master (the name the sentinels monitor)".into())
            }
            (false, Some("")) => return bad("state.sentinel_master: must not be empty".into()),
            (false, Some(_)) => {}
        }
        if tls {
            return bad("state.sentinels: not supported with a rediss:// state.url yet (sentinels and data nodes are reached in plain TCP)".into());
        }
        for s in &self.sentinels {
            if split_host_port(s).is_none() {
                return bad(format!("state.sentinels: {s:?} is not a host:port (e.g. \"127.0.0.1:26379\")"));
            }
        }
        Ok(())
    }
}

/// `host:port` (or `[v6]:port`) as host and port; None when it is not one.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && !host.contains([':', '/', '@']) || host.parse::<std::net::Ipv6Addr>().is_ok())
        .then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StateConfig, String> {
        let c: StateConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_redb_with_redis_defaults_ready() {
        let c = parse("").unwrap();
        assert_eq!(c.backend, StateBackend::Redb);
        assert_eq!(c.key_prefix, "tokengate:");
        assert_eq!(c.timeout_ms, 2000);
        let c =
            parse("backend = \"redis\"\nurl = \"rediss://u:p@h:6380/1\"\nca = \"ca.pem\"\ntimeout_ms = 50").unwrap();
        assert_eq!(c.backend, StateBackend::Redis);
        assert_eq!(c.timeout_ms, 50);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("backend = \"redis\"", "state.url"),
            ("backend = \"redis\"\nurl = \"http://h\"", "state.url"),
            ("backend = \"redis\"\nurl = \"redis://h\"\nca = \"x.pem\"", "state.ca"),
            ("backend = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"{x}\"", "state.key_prefix"),
            ("url = \"redis://h\"", "state.url"),
            ("timeout_ms = 0", "state.timeout_ms"),
            ("backend = \"redis\"\nurl = \"redis://h\"\nsentinels = [\"h:1\"]", "state.sentinels"),
            ("backend = \"redis\"\nurl = \"redis://h\"\nsentinel_master = \"m\"", "state.sentinel_master"),
            (
                "backend = \"redis\"\nurl = \"redis://h\"\nsentinels = [\"h\"]\nsentinel_master = \"m\"",
                "state.sentinels",
            ),
            (
                "backend = \"redis\"\nurl = \"rediss://h\"\nsentinels = [\"h:1\"]\nsentinel_master = \"m\"",
                "state.sentinels",
            ),
            ("wait_replicas = 1", "state.sentinels / state.sentinel_master / state.wait_replicas"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text:?}: {err}");
        }
        assert!(parse("backend = \"memcached\"").unwrap_err().contains("unknown variant"));
    }

    #[test]
    fn sentinels_parse_as_host_port() {
        let c = parse(
            "backend = \"redis\"\nurl = \"redis://:pw@mymaster/0\"\nsentinels = [\"127.0.0.1:26379\", \"[::1]:26380\", \"s3.internal:26381\"]\nsentinel_master = \"mymaster\"\nwait_replicas = 1",
        )
        .unwrap();
        assert_eq!(c.wait_replicas, 1);
        let parsed: Vec<_> = c.sentinels.iter().filter_map(|s| split_host_port(s)).collect();
        assert_eq!(parsed, [("127.0.0.1".into(), 26379), ("::1".into(), 26380), ("s3.internal".into(), 26381)]);
        assert_eq!(split_host_port("h:0"), None);
        assert_eq!(split_host_port(":1"), None);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = parse("backend = \"redis\"\nurl = \"redis://user:s3cret@h:6379/0\"").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://***@h:6379/0"), "{shown}");
        assert_eq!(redacted_url("redis://h:1"), "redis://h:1");
    }
}
