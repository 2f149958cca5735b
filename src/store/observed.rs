//! [`Observed`]: any [`Store`] with each call timed and its failures counted on the metrics
//! (`tokengate_store_duration_seconds{op}`, `tokengate_store_errors_total{op}`). The proxy's
//! denylist lookup is not timed: it is an in-memory read on every request.

use std::sync::Arc;
use std::time::Instant;

use super::{Family, Grace, LockState, LockoutPolicy, Rotation, Store, StoreError, StoreStatus, TokenHash};
use crate::metrics::Metrics;

/// Every timed operation, as the metric's `op` label.
pub const OPS: [&str; 14] = [
    "create_family",
    "rotate",
    "current_family",
    "revoke_family",
    "revoke_client",
    "deny_jti",
    "use_jti_once",
    "record_failure",
    "lock_state",
    "clear_failures",
    "purge_expired",
    "remember_proof",
    "take_quota",
    "announce_keys",
];

/// A store whose calls feed the metrics.
pub struct Observed {
    /// The backend.
    inner: Arc<dyn Store>,
    /// Where the timings go.
    metrics: Arc<Metrics>,
}

impl Observed {
    /// Wraps `inner`; every operation's series starts at 0.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Observed {
        metrics.declare_store_ops(OPS);
        Observed { inner, metrics }
    }

    fn timed<T>(
        &self,
        op: &'static str,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = call(self.inner.as_ref());
        self.metrics.observe_store(op, start.elapsed().as_secs_f64(), result.is_ok());
        if let Err(StoreError::NotReplicated { .. }) = &result {
            self.metrics.observe_unreplicated(op);
        }
        result
    }

    /// [`Observed::timed`] for a call that is a future: timed from its first poll to its answer.
    fn timed_async<T: Send + 'static>(
        &self,
        op: &'static str,
        call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>> {
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let start = Instant::now();
            let result = call.await;
            metrics.observe_store(op, start.elapsed().as_secs_f64(), result.is_ok());
            result
        })
    }
}

impl Store for Observed {
    fn available(&self) -> bool {
        self.inner.available()
    }

    fn status(&self) -> StoreStatus {
        self.inner.status()
    }

    fn create_family(&self, family: &Family, token: &TokenHash) -> Result<(), StoreError> {
        self.timed("create_family", |s| s.create_family(family, token))
    }

    fn rotate_with_grace(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        client_id: &str,
        grace: &Grace<'_>,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.timed("rotate", |s| s.rotate_with_grace(presented, next, client_id, grace, now))
    }

    fn current_family(&self, presented: &TokenHash, now: u64) -> Result<Option<Family>, StoreError> {
        self.timed("current_family", |s| s.current_family(presented, now))
    }

    fn revoke_family(&self, presented: &TokenHash, client_id: Option<&str>) -> Result<bool, StoreError> {
        self.timed("revoke_family", |s| s.revoke_family(presented, client_id))
    }

    fn revoke_client(&self, client_id: &str, sub: Option<&str>) -> Result<usize, StoreError> {
        self.timed("revoke_client", |s| s.revoke_client(client_id, sub))
    }

    fn deny_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.timed("deny_jti", |s| s.deny_jti(jti, exp))
    }

    fn is_jti_denied(&self, jti: &str, now: u64) -> bool {
        self.inner.is_jti_denied(jti, now)
    }

    fn use_jti_once(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> Result<bool, StoreError> {
        self.timed("use_jti_once", |s| s.use_jti_once(client_id, jti, exp, now))
    }

    fn record_failure(&self, key: &str, now: u64, policy: &LockoutPolicy) -> Result<LockState, StoreError> {
        self.timed("record_failure", |s| s.record_failure(key, now, policy))
    }

    fn lock_state(&self, key: &str, now: u64) -> Result<LockState, StoreError> {
        self.timed("lock_state", |s| s.lock_state(key, now))
    }

    fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.timed("clear_failures", |s| s.clear_failures(key))
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.timed("purge_expired", |s| s.purge_expired(now))
    }

    fn remember_proof(&self, id: &[u8; 16], ttl_secs: u64) -> Option<super::ProofCheck> {
        Some(self.timed_async("remember_proof", self.inner.remember_proof(id, ttl_secs)?))
    }

    fn take_quota(&self, key: String, ask: crate::quota::Ask) -> Option<super::QuotaCall> {
        Some(self.timed_async("take_quota", self.inner.take_quota(key, ask)?))
    }

    fn announce_keys(&self, news: &super::KeyNews, only_if_new: bool) -> Option<super::AnnounceCall> {
        Some(self.timed_async("announce_keys", self.inner.announce_keys(news, only_if_new)?))
    }

    fn follow_key_announcements(&self, on: super::KeyEventHandler) -> bool {
        self.inner.follow_key_announcements(on)
    }
}
