//! `cors`, under `[server]` or on a `[[routes]]` entry: which browser origins may call through
//! the gateway. Only the schema lives here; `proxy::cors` checks it and compiles it once per
//! snapshot into the header values the request path sends.

use serde::Deserialize;

/// `cors = { origins = [...], ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) whose scripts may read answers; `["*"]`: any, without credentials.
    pub origins: Vec<String>,
    /// Methods a preflight may ask for: what browsers need listed before they send anything else.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for; `authorization` by default: protected routes need the token.
    #[serde(default = "default_headers")]
    pub headers: Vec<String>,
    /// Response headers scripts may read besides the CORS-safelisted ones (`WWW-Authenticate`...).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may reuse a preflight's answer; absent: the browser's default (5 s).
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Let scripts send cookies or client certificates and read the answer (`credentials: 'include'`).
    #[serde(default)]
    pub credentials: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).into()
}

fn default_headers() -> Vec<String> {
    vec!["authorization".into()]
}
