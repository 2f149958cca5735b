//! The calls the request path awaits on its own task (the proxy's DPoP replay check, the shared
//! quota's allowance), rather than on the store's runtime through a blocking thread like the
//! token endpoint's: each is one round trip, and a request must not hold a thread while it waits.

use std::future::Future;
use std::pin::Pin;

use redis::RedisError;

use super::{bounded, redis_err, scripts, RedisStore};
use crate::quota::{Ask, Grant};
use crate::store::{ProofCheck, QuotaCall, StoreError};

impl RedisStore {
    /// A call for an async caller: sent on the caller's runtime (the connection manager's own
    /// task does the I/O, so no blocking thread waits), bounded by `state.timeout_ms`, with its
    /// reachability recorded like [`RedisStore::run`]'s.
    pub(super) fn on_caller<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, RedisError>> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>> {
        let (timeout, health) = (self.timeout, self.health.clone());
        Box::pin(async move { bounded(timeout, &health, async { call.await.map_err(redis_err) }).await })
    }

    /// [`Store::remember_proof`](crate::store::Store::remember_proof).
    pub(super) fn proof_call(&self, id: &[u8; 16], ttl_secs: u64) -> ProofCheck {
        // One SET NX EX: atomic, one round trip, gone by itself when no proof could pass again.
        let (mut con, key) = (self.conn.clone(), self.keys.proof(id));
        self.on_caller(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(1).arg("NX").arg("EX").arg(ttl_secs.max(1));
            Ok(Option::<String>::is_some(&cmd.query_async(&mut con).await?))
        })
    }

    /// [`Store::take_quota`](crate::store::Store::take_quota).
    pub(super) fn quota_call(&self, key: String, ask: Ask) -> QuotaCall {
        let (mut con, key) = (self.conn.clone(), self.keys.quota(&key));
        self.on_caller(async move {
            let (granted, remaining, reset_us, retry_us): (u64, u64, u64, u64) = scripts::QUOTA
                .key(key)
                .arg(ask.interval_us)
                .arg(ask.tau_us)
                .arg(ask.want.max(1))
                .invoke_async(&mut con)
                .await?;
            Ok(Grant {
                granted: granted.min(u32::MAX as u64) as u32,
                remaining: remaining.min(u32::MAX as u64) as u32,
                reset_us,
                retry_us,
            })
        })
    }
}
