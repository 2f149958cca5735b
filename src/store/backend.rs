//! Choosing the backend: the one place that knows every implementation of [`Store`], kept out
//! of `store/mod.rs` because the implementations use the trait defined there.

use std::sync::Arc;

use super::redb::RedbStore;
use super::redis::{RedisOptions, RedisStore};
use super::{Store, StoreError};
use crate::config::{Config, StateBackend};

/// Opens the backend `[state]` names: the redb file (`:memory:` for a volatile one) or Redis.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let state = &config.state;
    Ok(match state.backend {
        StateBackend::Redb if state.path.as_os_str() == ":memory:" => Arc::new(RedbStore::in_memory()?),
        StateBackend::Redb => Arc::new(RedbStore::open(&config.resolve(&state.path))?),
        StateBackend::Redis => Arc::new(RedisStore::open(RedisOptions {
            url: state.url.clone().unwrap_or_default(),
            key_prefix: state.key_prefix.clone(),
            ca: state.ca.as_ref().map(|ca| config.resolve(ca)),
            timeout: std::time::Duration::from_millis(state.timeout_ms),
            sentinels: state
                .sentinel_master
                .clone()
                .filter(|_| !state.sentinels.is_empty())
                .map(|m| (state.sentinels.clone(), m)),
            wait_replicas: state.wait_replicas,
        })?),
    })
}
