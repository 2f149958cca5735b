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
                // Braces would turn part of every key into a Redis Cluster hash tag.
                if self.key_prefix.contains(['{', '}']) {
                    return bad("state.key_prefix: must not contain '{' or '}'");
                }
            }
        }
        Ok(())
    }
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
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text:?}: {err}");
        }
        assert!(parse("backend = \"memcached\"").unwrap_err().contains("unknown variant"));
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
