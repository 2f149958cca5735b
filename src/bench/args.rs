//! Command-line arguments of `tokengate bench` and their validation into a [`Plan`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use http::uri::{Scheme, Uri};

use crate::config::RsaAlg;

/// The latency axis of `--plot` (here, not in `plot`: the command line is read before any
/// chart is drawn, and `plot` depends on the reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlotScale {
    /// Decades equally spaced: a p50 of 100 µs and a p99.99 of 50 ms both readable.
    Log,
    /// Proportional, from zero.
    Linear,
}

/// Command-line arguments of `tokengate bench`.
///
/// By default the load is closed-loop: each connection sends its next request as soon as the
/// previous answer arrives, and latency is the time from send to full response. With `--rate` it
/// is open-loop; see [`Plan::rate`].
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Target URL (http:// or https://); the path and query are sent as given. Repeat it to
    /// measure several targets one after another: a report each, and a curve each with --plot.
    #[arg(long, required_unless_present_any = ["print_tokens", "issue", "compare"])]
    pub url: Vec<String>,
    /// What B costs over A (e.g. a gateway over going direct): --rounds rounds of A then B, each
    /// run -d seconds after --warmup; prints each one's median req/s, p50 and p99, and B/A with its
    /// range over the rounds.
    #[arg(long, num_args = 2, value_names = ["URL_A", "URL_B"], conflicts_with_all = ["url", "issue"])]
    pub compare: Vec<String>,
    /// Rounds of --compare, each running A then B [default: 5].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Write the latency distribution of the run as an SVG chart (HDR percentile curve, one curve
    /// per target).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The latency axis of --plot [default: log].
    #[arg(long, value_enum)]
    pub plot_scale: Option<PlotScale>,
    /// Skip certificate verification of an https target.
    #[arg(long, conflicts_with = "cacert")]
    pub insecure: bool,
    /// Trust the CA certificate(s) in this PEM file instead of the webpki roots.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// HTTP/2: prior knowledge on http://, ALPN on https:// (default HTTP/1.1 keep-alive).
    #[arg(long)]
    pub h2: bool,
    /// Concurrent connections, each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Measured duration in seconds (after the warm-up).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up in seconds: load is sent but not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Tokio worker threads of the load generator (1 keeps it off the target's other core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Total requests per second, open loop (latency counted from each request's intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Per-request timeout in seconds (also the connect timeout).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Send no Authorization header at all.
    #[arg(long)]
    pub no_token: bool,
    /// Bearer tokens, one a line ('#' comments and blank lines skipped); requests cycle through them.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Mint tokens locally with this private key PEM (as `tokengate keygen` writes).
    #[arg(long, value_name = "PEM")]
    pub mint_key: Option<PathBuf>,
    /// `iss` of minted tokens.
    #[arg(long, default_value = "https://tokengate.local")]
    pub iss: String,
    /// `aud` of minted tokens.
    #[arg(long, default_value = "api")]
    pub aud: String,
    /// `sub` of minted tokens.
    #[arg(long, default_value = "bench")]
    pub sub: String,
    /// Bind minted tokens to this DPoP key thumbprint (`cnf.jkt`, as `tokengate dpop-proof` prints).
    #[arg(long)]
    pub jkt: Option<String>,
    /// Scopes of minted tokens, or asked of the token endpoint / issue target.
    #[arg(long)]
    pub scope: Option<String>,
    /// `kid` of minted tokens (default: the key file's stem).
    #[arg(long)]
    pub kid: Option<String>,
    /// Lifetime of minted tokens in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Number of distinct minted tokens, each with its own jti (1: one token reused).
    #[arg(long, default_value_t = 1)]
    pub distinct: usize,
    /// Signature scheme for an RSA --mint-key: RS256 or PS256.
    #[arg(long, default_value = "RS256", value_parser = parse_rsa_alg)]
    pub rsa_alg: RsaAlg,
    /// Fetch one token from this OAuth2 token endpoint (client credentials) before the run.
    #[arg(long, value_name = "URL")]
    pub token_endpoint: Option<String>,
    /// OAuth2 client id (HTTP Basic) for --token-endpoint and --issue.
    #[arg(long)]
    pub client_id: Option<String>,
    /// OAuth2 client secret (HTTP Basic) for --token-endpoint and --issue.
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Issuance mode: every request is a token request (POST) to this URL instead of a GET of --url.
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    pub issue: Option<String>,
    /// With --issue: use the password grant with this username.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// With --issue: the password-grant password.
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// With --issue and --username/--password: measure refresh grants. Each connection logs in
    /// once with the password grant (not counted), then sends `grant_type=refresh_token` with the
    /// refresh token of its previous answer (rotation: each token is used once).
    #[arg(long, requires = "username")]
    pub refresh: bool,
    /// Print one JSON object with every figure to stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Print the tokens the run would use, one a line, and exit (e.g. for wrk scripts).
    #[arg(long)]
    pub print_tokens: bool,
}

fn parse_rsa_alg(s: &str) -> Result<RsaAlg, String> {
    match s {
        "RS256" => Ok(RsaAlg::RS256),
        "PS256" => Ok(RsaAlg::PS256),
        _ => Err(format!("{s:?}: want RS256 or PS256")),
    }
}

/// Where the bearer tokens come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// No Authorization header.
    None,
    /// A file of tokens, one a line.
    File(PathBuf),
    /// Minted locally.
    Mint(MintSpec),
    /// One token fetched with client credentials.
    Endpoint { url: Uri, client_id: String, client_secret: String, scope: Option<String> },
}

/// What to put in minted tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct MintSpec {
    pub key: PathBuf,
    pub kid: String,
    pub rsa_alg: RsaAlg,
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub scope: String,
    pub ttl: u64,
    pub distinct: usize,
    /// `cnf.jkt` of DPoP-bound tokens.
    pub jkt: Option<String>,
}

/// The token request sent in issuance mode.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueSpec {
    /// `Authorization: Basic ...` value, when a client id was given.
    pub basic: Option<String>,
    /// The form body.
    pub body: String,
    /// Refresh grants: `body` only logs in; then each request presents the last refresh token.
    pub refresh: bool,
}

/// What each request is.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// GET the target with a bearer token from this source.
    Validate(TokenSource),
    /// POST token requests; a 200 with an `access_token` counts as success.
    Issue(IssueSpec),
}

/// Validated, ready-to-run settings.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The URLs measured, one after another (with `compare_rounds`: A and B, interleaved).
    pub targets: Vec<Uri>,
    /// `--compare`: the rounds of A then B.
    pub compare_rounds: Option<u32>,
    /// Where to draw the latency chart.
    pub plot: Option<PathBuf>,
    /// Its latency axis.
    pub plot_scale: PlotScale,
    /// Verify nothing about the server certificate.
    pub insecure: bool,
    /// Extra CA file.
    pub cacert: Option<PathBuf>,
    /// HTTP/2 instead of HTTP/1.1.
    pub h2: bool,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub threads: usize,
    /// Open loop at this many requests/s in total. Request `i` of connection `k` (of `c`) is due at
    /// `start + (i*c + k)/rate`, whether or not the previous answer arrived, and its latency is
    /// measured from that due time, not from when it actually left. A closed-loop generator (no
    /// `--rate`) waits for each answer before sending again, so when the target stalls it simply
    /// stops sending: the requests it *would* have sent during the stall are never timed, and one
    /// slow answer counts once instead of for every user it delayed ("coordinated omission").
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub mode: Mode,
    pub json: bool,
    pub print_tokens: bool,
}

fn secs(name: &str, v: f64, min: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v < min || v > 86_400.0 {
        bail!("--{name} must be between {min} and 86400 seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses and checks an http(s) URL with a host.
pub fn parse_url(what: &str, s: &str) -> anyhow::Result<Uri> {
    let uri: Uri = s.parse().with_context(|| format!("{what}: {s:?} is not a URL"))?;
    match uri.scheme() {
        Some(sc) if *sc == Scheme::HTTP || *sc == Scheme::HTTPS => {}
        _ => bail!("{what}: {s:?} must start with http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("{what}: {s:?} has no host");
    }
    Ok(uri)
}

/// `Basic` credentials of an OAuth2 client.
pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    // RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

impl BenchArgs {
    /// Checks every combination and resolves defaults.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let sources =
            [self.no_token, self.token_file.is_some(), self.mint_key.is_some(), self.token_endpoint.is_some()];
        let n_sources = sources.iter().filter(|s| **s).count();
        if self.connections == 0 || self.connections > 100_000 {
            bail!("--connections must be between 1 and 100000");
        }
        if self.threads == 0 || self.threads > 1024 {
            bail!("--threads must be between 1 and 1024");
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
        if self.distinct == 0 {
            bail!("--distinct must be at least 1");
        }
        if self.distinct > 1 && self.mint_key.is_none() {
            bail!("--distinct needs --mint-key");
        }
        let source = if let Some(issue) = &self.issue {
            if n_sources > 0 {
                bail!("--issue sends token requests: give no token source (--token-file, --mint-key, --token-endpoint, --no-token)");
            }
            let url = parse_url("--issue", issue)?;
            let basic = match (&self.client_id, &self.client_secret) {
                (Some(id), Some(s)) => Some(basic(id, s)),
                (Some(_), None) | (None, Some(_)) => bail!("--client-id and --client-secret go together"),
                (None, None) if self.username.is_none() => {
                    bail!("--issue needs --client-id/--client-secret or --username/--password")
                }
                (None, None) => None,
            };
            let mut form = form_urlencoded::Serializer::new(String::new());
            match (&self.username, &self.password) {
                (Some(u), Some(p)) => {
                    form.append_pair("grant_type", "password").append_pair("username", u).append_pair("password", p)
                }
                _ => form.append_pair("grant_type", "client_credentials"),
            };
            if let Some(s) = &self.scope {
                form.append_pair("scope", s);
            }
            let refresh = self.refresh;
            return self.finish(vec![url], Mode::Issue(IssueSpec { basic, body: form.finish(), refresh }));
        } else {
            if self.username.is_some() {
                bail!("--username/--password are for --issue");
            }
            if n_sources != 1 {
                bail!("give exactly one token source: --token-file, --mint-key, --token-endpoint, or --no-token");
            }
            if let Some(f) = &self.token_file {
                TokenSource::File(f.clone())
            } else if let Some(key) = &self.mint_key {
                let kid = match &self.kid {
                    Some(k) => k.clone(),
                    None => key
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .context("--mint-key has no file stem for a kid: give --kid")?
                        .to_owned(),
                };
                if self.ttl == 0 {
                    bail!("--ttl must be positive");
                }
                TokenSource::Mint(MintSpec {
                    key: key.clone(),
                    kid,
                    rsa_alg: self.rsa_alg,
                    iss: self.iss.clone(),
                    aud: self.aud.clone(),
                    sub: self.sub.clone(),
                    scope: self.scope.clone().unwrap_or_default(),
                    ttl: self.ttl,
                    distinct: self.distinct,
                    jkt: self.jkt.clone(),
                })
            } else if let Some(ep) = &self.token_endpoint {
                let (Some(client_id), Some(client_secret)) = (&self.client_id, &self.client_secret) else {
                    bail!("--token-endpoint needs --client-id and --client-secret");
                };
                TokenSource::Endpoint {
                    url: parse_url("--token-endpoint", ep)?,
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scope: self.scope.clone(),
                }
            } else {
                TokenSource::None
            }
        };
        let mut urls = Vec::with_capacity(self.url.len().max(2));
        for u in &self.url {
            urls.push(parse_url("--url", u)?);
        }
        for u in &self.compare {
            urls.push(parse_url("--compare", u)?);
        }
        if urls.is_empty() {
            urls.push(Uri::from_static("http://127.0.0.1/")); // only with --print-tokens
        }
        self.finish(urls, Mode::Validate(source))
    }

    fn finish(&self, targets: Vec<Uri>, mode: Mode) -> anyhow::Result<Plan> {
        let https = targets.iter().any(|u| u.scheme() == Some(&Scheme::HTTPS));
        if !https && (self.insecure || self.cacert.is_some()) {
            bail!("--insecure and --cacert apply to https:// targets only");
        }
        let compare_rounds = match (self.compare.is_empty(), self.rounds) {
            (true, Some(_)) => bail!("--rounds counts the rounds of --compare: give --compare URL_A URL_B"),
            (true, None) => None,
            (false, Some(n)) if !(1..=1000).contains(&n) => bail!("--rounds must be between 1 and 1000"),
            (false, n) => Some(n.unwrap_or(5)),
        };
        match (&self.plot, self.plot_scale) {
            (None, Some(_)) => bail!("--plot-scale is the latency axis of --plot: give --plot FILE.svg"),
            (Some(p), _) if p.file_name().is_none() => {
                bail!("--plot {}: want a file name, e.g. latency.svg", p.display())
            }
            _ => {}
        }
        let mut headers = Vec::new();
        for h in &self.headers {
            let (name, value) = h.split_once(':').with_context(|| format!("--header {h:?}: want \"Name: value\""))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header {h:?}: bad name"))?;
            let value =
                http::HeaderValue::from_str(value.trim()).with_context(|| format!("--header {h:?}: bad value"))?;
            headers.push((name, value));
        }
        Ok(Plan {
            targets,
            compare_rounds,
            plot: self.plot.clone(),
            plot_scale: self.plot_scale.unwrap_or(PlotScale::Log),
            insecure: self.insecure,
            cacert: self.cacert.clone(),
            h2: self.h2,
            connections: self.connections,
            duration: secs("duration", self.duration, 0.05)?,
            warmup: secs("warmup", self.warmup, 0.0)?,
            threads: self.threads,
            rate: self.rate,
            timeout: secs("timeout", self.timeout, 0.001)?,
            headers,
            mode,
            json: self.json,
            print_tokens: self.print_tokens,
        })
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
