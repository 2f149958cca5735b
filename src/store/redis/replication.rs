//! `state.wait_replicas`: a change is answered only once that many replicas confirmed it (WAIT),
//! so that a grant or revocation answered as done outlives the primary's death.

use std::time::Instant;

use redis::aio::ConnectionManager;

use super::{redis_err, RedisStore};
use crate::store::StoreError;

impl RedisStore {
    /// After a change sent on `con` since `started`: with `state.wait_replicas`, WAIT until that
    /// many replicas have it, within what is left of `state.timeout_ms`. WAIT covers every write
    /// this connection sent before it, ours included. A WAIT cannot land on a reconnected
    /// connection that never saw the write: a lost connection fails the WAIT itself, and a new one
    /// (to a promoted replica) takes a failover, far longer than from the write's answer to here.
    pub(super) async fn replicated(
        &self,
        con: &mut ConnectionManager,
        op: &'static str,
        started: Instant,
    ) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        // A tenth of the bound kept for WAIT's answer: past it `run` would call it a timeout,
        // losing the count.
        let left = self.timeout.saturating_sub(started.elapsed());
        let wait_ms = (left.as_millis() as u64 * 9 / 10).max(1);
        let acked: u64 =
            redis::cmd("WAIT").arg(self.wait_replicas).arg(wait_ms).query_async(con).await.map_err(redis_err)?;
        if acked < u64::from(self.wait_replicas) {
            tracing::warn!(
                op,
                acked,
                wanted = self.wait_replicas,
                "state store: a change not confirmed by state.wait_replicas replicas in time; answered 503, it may be lost with the primary"
            );
            return Err(StoreError::NotReplicated { op, acked, wanted: self.wait_replicas });
        }
        Ok(())
    }
}
