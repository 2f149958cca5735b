//! Key sets of other identity providers, fetched by URL and kept current off the request path.
//!
//! Each remote issuer has one [`RemoteKeys`]: the key set the proxy reads (swapped whole through
//! an `ArcSwap`, one atomic load per validation) and one background task that refreshes it on
//! the provider's schedule. A token whose `kid` is unknown asks for a refetch: at most one fetch
//! is in flight per issuer (the task's), the request waits for it a bounded time, and within
//! `jwks_refetch_min_secs` of the last fetch it is refused at once, so forged `kid`s cannot
//! make us hammer the provider. A failed refresh keeps the last good keys until
//! `jwks_max_stale_secs`. A reload whose issuer settings did not change keeps the same
//! `RemoteKeys` (and its task); a dropped one ends its task.
//!
//! - [`fetch`]: the strict HTTPS client (JWKS and discovery documents).
//! - [`cache_control`]: refresh interval from `Cache-Control`, clamped; retry backoff.
//! - the `tokengate_jwks_*` series are defined with the others, in `crate::metrics`.

pub mod cache_control;
pub mod fetch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::auth::keys::{Alg, KeySet};
use crate::auth::unix_now;
use crate::config::{IssuerConfig, KeySource};
use crate::metrics::JwksMetrics;
use cache_control::{refresh_interval, retry_backoff};
use fetch::Fetcher;

/// Everything about a remote issuer that decides what is fetched and how; a reload with an equal
/// spec keeps the fetched keys.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpec {
    /// Exact `iss`; also the base URL of discovery.
    pub issuer: String,
    /// `Uri` or `Discovery` (never `File`).
    pub source: KeySource,
    /// Resolved path of the extra trust root, if any.
    pub ca: Option<PathBuf>,
    /// Its contents when the spec was made: an edited CA file makes a new client.
    pub ca_pem: Option<Vec<u8>>,
    /// Keys serving none of these are skipped.
    pub algorithms: Vec<Alg>,
    /// `jwks_refresh_secs` (None: from `Cache-Control`).
    pub refresh: Option<u64>,
    /// `jwks_refetch_min_secs`.
    pub refetch_min: Duration,
    /// `jwks_max_stale_secs`.
    pub max_stale: Duration,
    /// `jwks_timeout_secs`.
    pub timeout: Duration,
    /// `jwks_unknown_kid_wait_ms`.
    pub unknown_kid_wait: Duration,
    /// `jwks_start_timeout_secs`.
    pub start_timeout: Duration,
}

impl RemoteSpec {
    /// The spec of a remote `[[issuers]]` entry; `ca` already resolved against the config folder.
    pub fn new(cfg: &IssuerConfig, algorithms: Vec<Alg>, ca: Option<PathBuf>) -> RemoteSpec {
        let ca_pem = ca.as_ref().and_then(|p| std::fs::read(p).ok());
        RemoteSpec {
            issuer: cfg.issuer.clone(),
            source: cfg.source(),
            ca,
            ca_pem,
            algorithms,
            refresh: cfg.jwks_refresh_secs,
            refetch_min: Duration::from_secs(cfg.jwks_refetch_min_secs),
            max_stale: Duration::from_secs(cfg.jwks_max_stale_secs),
            timeout: Duration::from_secs(cfg.jwks_timeout_secs),
            unknown_kid_wait: Duration::from_millis(cfg.jwks_unknown_kid_wait_ms),
            start_timeout: Duration::from_secs(cfg.jwks_start_timeout_secs),
        }
    }
}

/// What the task and the requests know about the fetches (for single flight, rate limiting and
/// the admin status page).
#[derive(Default)]
struct Status {
    /// A fetch is running or has been asked for; an unknown kid then waits for it.
    in_flight: bool,
    /// Start of the last fetch (or of the refetch a request asked for): the rate limit's clock.
    last_attempt: Option<Instant>,
    /// Unix time of the same, for the status page.
    last_attempt_unix: Option<u64>,
    /// When keys were last fetched successfully: the staleness clock.
    last_success: Option<Instant>,
    /// Unix time of the same.
    last_success_unix: Option<u64>,
    /// Unix time of the next scheduled fetch.
    next_fetch_unix: Option<u64>,
    /// Why the last fetch failed; cleared by a success.
    last_error: Option<String>,
    /// Failed fetches since the last success (the retry backoff's exponent).
    failures: u32,
    /// The JWKS URL in use: configured, or found by discovery (rediscovered after a failure).
    jwks_uri: Option<Uri>,
    /// Keys of the last fetched set that were skipped, with why.
    skipped: Vec<String>,
    /// Body of the last fetched set: a different one swaps the keys and bumps the generation.
    last_body: Option<Bytes>,
    /// Refresh interval of the last success (before any: the configured or default one), the cap
    /// of the retry backoff.
    refresh: Duration,
}

/// One remote issuer's keys, kept current by its background task.
pub struct RemoteKeys {
    /// What to fetch and the timing rules.
    pub spec: RemoteSpec,
    /// The HTTPS client (its own trust roots).
    fetcher: Fetcher,
    /// The keys validation reads; empty until the first fetch succeeds.
    keys: ArcSwap<KeySet>,
    /// Bumped whenever the key set changes: cached validations of older generations are redone,
    /// so a key the provider removed stops working at once, cache or not.
    generation: AtomicU64,
    /// Wakes the task: a requested refetch, or this set being dropped.
    wake: Arc<Notify>,
    /// Completed fetch attempts; requests waiting for a refetch watch it.
    attempts: watch::Sender<u64>,
    /// Fetch bookkeeping.
    status: Mutex<Status>,
    /// The task runs once per set, however many snapshots share it.
    started: AtomicBool,
    /// Series to record into, set when the task starts.
    metrics: OnceLock<JwksMetrics>,
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        // The task holds only a weak reference while it sleeps: wake it so it sees it is done.
        self.wake.notify_one();
    }
}

/// What a successful fetch brought.
struct Fetched {
    keys: KeySet,
    skipped: Vec<String>,
    body: Bytes,
    max_age: Option<u64>,
}

/// A cached validation's claim to be current: the generation of the remote set that verified it.
#[derive(Clone)]
pub struct KeyEpoch {
    /// The set whose keys verified the token.
    keys: Arc<RemoteKeys>,
    /// Its generation then.
    generation: u64,
}

impl KeyEpoch {
    /// Whether the set is still the one that verified the token.
    pub fn is_current(&self) -> bool {
        self.keys.generation.load(Ordering::Acquire) == self.generation
    }
}

impl std::fmt::Debug for KeyEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEpoch({} #{})", self.keys.spec.issuer, self.generation)
    }
}

impl RemoteKeys {
    /// A set with no keys yet; nothing is fetched until [`RemoteKeys::start`].
    pub fn new(spec: RemoteSpec) -> Result<Arc<RemoteKeys>, crate::tls::TlsError> {
        let fetcher = Fetcher::new(spec.ca.as_deref(), spec.timeout)?;
        let jwks_uri = match &spec.source {
            KeySource::Uri(u) => Some(u.clone()),
            _ => None,
        };
        let refresh = refresh_interval(spec.refresh, None);
        Ok(Arc::new(RemoteKeys {
            spec,
            fetcher,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            attempts: watch::Sender::new(0),
            status: Mutex::new(Status { jwks_uri, refresh, ..Status::default() }),
            started: AtomicBool::new(false),
            metrics: OnceLock::new(),
        }))
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current keys and the generation to record with a validation made with them (read in
    /// that order: a swap in between only makes the cached entry look older than it is).
    pub fn current(self: &Arc<Self>) -> (arc_swap::Guard<Arc<KeySet>>, KeyEpoch) {
        let generation = self.generation.load(Ordering::Acquire);
        (self.keys.load(), KeyEpoch { keys: self.clone(), generation })
    }

    /// Starts the background task on the current tokio runtime, once.
    pub fn start(self: &Arc<Self>, metrics: &JwksMetrics) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics.declare(&self.spec.issuer);
        let _ = self.metrics.set(metrics.clone());
        let (weak, wake) = (Arc::downgrade(self), self.wake.clone());
        tokio::spawn(run(weak, wake));
    }

    /// Waits until the set holds keys (the first fetch succeeded, possibly after retries).
    pub async fn wait_for_keys(&self) {
        let mut rx = self.attempts.subscribe();
        while self.keys.load().is_empty() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Called for a token whose `kid` this set lacks: asks for a refetch unless one ran within
    /// `jwks_refetch_min_secs`, joins the one in flight if any, and waits for it at most
    /// `jwks_unknown_kid_wait_ms`. True when a fetch completed meanwhile (validate again).
    pub async fn refetch_unknown_kid(&self) -> bool {
        let mut done = self.attempts.subscribe();
        {
            let mut st = self.status();
            if !st.in_flight {
                let recent = st.last_attempt.is_some_and(|t| t.elapsed() < self.spec.refetch_min);
                if let Some(m) = self.metrics.get() {
                    m.refetch(&self.spec.issuer, !recent);
                }
                if recent || !self.started.load(Ordering::Acquire) {
                    return false;
                }
                st.in_flight = true;
                st.last_attempt = Some(Instant::now());
                self.wake.notify_one();
            }
        }
        matches!(tokio::time::timeout(self.spec.unknown_kid_wait, done.changed()).await, Ok(Ok(())))
    }

    /// Called when the issuer announced a new key set on the shared store: fetches at once,
    /// whatever `jwks_refetch_min_secs` says (the announcement came through the store every
    /// instance trusts, not from a token anyone can forge). Announcements during a fetch are
    /// coalesced into one more fetch after it, since that fetch may have read the old set; a
    /// token with an unknown kid meanwhile waits for this fetch instead of being refused.
    pub fn refetch_announced(&self) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.refetch_announced(&self.spec.issuer);
        }
        let mut st = self.status();
        st.in_flight = true;
        st.last_attempt = Some(Instant::now());
        // A stored permit when the task is fetching: it fetches again right after.
        self.wake.notify_one();
    }

    /// The kids held now, sorted: compared with an announcement to see whether it was missed.
    pub fn kids(&self) -> Vec<String> {
        self.keys.load().kids().into_iter().map(str::to_owned).collect()
    }

    /// One fetch, applied: swaps in a changed key set, or on failure keeps the last good one
    /// until it is older than `jwks_max_stale_secs`. Returns the wait before the next fetch.
    async fn fetch_and_apply(&self) -> Duration {
        {
            let mut st = self.status();
            st.in_flight = true;
            st.last_attempt = Some(Instant::now());
            st.last_attempt_unix = Some(unix_now());
        }
        let result = self.fetch().await;
        let now = unix_now();
        let issuer = self.spec.issuer.as_str();
        let mut st = self.status();
        let ok = result.is_ok();
        let delay = match result {
            Ok(f) => {
                if st.last_body.as_ref() != Some(&f.body) {
                    tracing::info!(
                        issuer,
                        kids = %f.keys.kids().join(","),
                        skipped = %f.skipped.join("; "),
                        "jwks: key set fetched"
                    );
                    self.keys.store(Arc::new(f.keys));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    st.last_body = Some(f.body);
                }
                if st.failures > 0 {
                    tracing::info!(issuer, after = st.failures, "jwks: fetching works again");
                }
                st.last_success = Some(Instant::now());
                st.last_success_unix = Some(now);
                st.last_error = None;
                st.failures = 0;
                st.skipped = f.skipped;
                st.refresh = refresh_interval(self.spec.refresh, f.max_age);
                st.refresh
            }
            Err(e) => {
                st.failures += 1;
                let stale = st.last_success.is_some_and(|t| t.elapsed() > self.spec.max_stale);
                if stale && !self.keys.load().is_empty() {
                    tracing::error!(
                        issuer,
                        error = %e,
                        "jwks: no successful fetch for jwks_max_stale_secs; its keys are dropped and its tokens refused until a fetch succeeds"
                    );
                    self.keys.store(Arc::new(KeySet::default()));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    st.last_body = None;
                } else {
                    let keeping = self.keys.load().len();
                    tracing::warn!(issuer, error = %e, failures = st.failures, keeping, "jwks: fetch failed; the last good keys stay in use");
                }
                st.last_error = Some(e);
                retry_backoff(st.failures, st.refresh)
            }
        };
        st.next_fetch_unix = Some(now + delay.as_secs());
        st.in_flight = false;
        drop(st);
        if let Some(m) = self.metrics.get() {
            m.fetched(issuer, ok, self.keys.load().len(), now);
        }
        self.attempts.send_modify(|n| *n += 1);
        delay
    }

    /// Fetches and parses the set (discovering the JWKS URL first when needed).
    async fn fetch(&self) -> Result<Fetched, String> {
        let known = {
            let st = self.status();
            // After a failure, discovery runs again: the provider may have moved its keys.
            st.jwks_uri.clone().filter(|_| st.failures == 0 || !matches!(self.spec.source, KeySource::Discovery))
        };
        let uri = match known {
            Some(u) => u,
            None => {
                let u = self.fetcher.discover(&self.spec.issuer).await.map_err(|e| format!("discovery: {e}"))?;
                self.status().jwks_uri = Some(u.clone());
                u
            }
        };
        let got = self.fetcher.get(&uri).await.map_err(|e| format!("{uri}: {e}"))?;
        let (keys, skipped) =
            KeySet::from_remote_jwks(&got.body, &self.spec.algorithms).map_err(|e| format!("{uri}: {e}"))?;
        if keys.is_empty() {
            return Err(format!("{uri}: no usable signing key ({})", skipped.join("; ")));
        }
        Ok(Fetched { keys, skipped, body: got.body, max_age: got.max_age })
    }

    /// The status page entry: kids and fetch times, never key material.
    pub fn status_json(&self) -> Value {
        let st = self.status();
        let keys = self.keys.load();
        json!({
            "issuer": self.spec.issuer,
            "source": match self.spec.source { KeySource::Discovery => "discovery", _ => "jwks_uri" },
            "jwks_uri": st.jwks_uri.as_ref().map(Uri::to_string),
            "kids": keys.kids(),
            "skipped": st.skipped,
            "last_fetch": st.last_attempt_unix,
            "last_success": st.last_success_unix,
            "next_fetch": st.next_fetch_unix,
            "last_error": st.last_error,
            "consecutive_failures": st.failures,
        })
    }
}

/// The background task: fetch, sleep until the next refresh or a wake-up, again; ends when the
/// set is dropped (no snapshot uses it any more).
async fn run(weak: Weak<RemoteKeys>, wake: Arc<Notify>) {
    loop {
        let delay = match weak.upgrade() {
            Some(keys) => keys.fetch_and_apply().await,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests;
