//! Per-caller request quotas: GCRA (the generic cell rate algorithm) per route, keyed on the
//! verified identity (`client_id`, `sub`, a claim) or the client address, with per-client
//! overrides. Checked after the token is verified: an unauthenticated flood is the per-IP
//! connection limits' job, before it.
//!
//! GCRA keeps one number per key, its theoretical arrival time (TAT): a request at `now` is
//! allowed when `max(TAT, now) + T - now <= burst * T` (`T = 1 / per_second`), and then moves the
//! TAT by `T`. A key whose TAT is in the past has a full bucket, the same as no entry at all, so
//! such entries are dropped whenever a table fills: memory is bounded by the keys active within
//! one burst window, and by `capacity` under a flood of distinct keys (past it, entries are
//! evicted and counted; an evicted key starts with a full bucket again).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

#[cfg(test)]
mod tests;

/// Shards of a table: requests of different keys rarely wait on one another's lock.
const SHARDS: usize = 16;

/// Microseconds since the first call in this process: a monotonic clock (wall-clock jumps must
/// neither free nor block anyone).
pub fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained (may be fractional: 0.5 is one every two seconds).
    pub per_second: f64,
    /// Requests allowed at once from a full bucket (at least 1).
    pub burst: u32,
}

impl Rate {
    /// The emission interval `T`, in microseconds (at least 1).
    fn interval(&self) -> u64 {
        ((1_000_000.0 / self.per_second).round() as u64).max(1)
    }

    /// The window a full quota spans, in whole seconds: what `RateLimit-Policy` calls `w`.
    pub fn window_secs(&self) -> u64 {
        ((self.burst as f64 / self.per_second).ceil() as u64).max(1)
    }
}

/// What one request was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether it may pass.
    pub allowed: bool,
    /// Requests the key may still send at once after this one.
    pub remaining: u32,
    /// Seconds until the key's bucket is full again.
    pub reset_secs: u64,
    /// When refused: seconds until one request would be allowed (`Retry-After`).
    pub retry_after_secs: u64,
}

/// The quota state of one route: TAT per key hash.
pub struct Table {
    /// TAT (microseconds, [`now_micros`]) by key hash.
    shards: [Mutex<HashMap<u64, u64, foldhash::fast::FixedState>>; SHARDS],
    /// Hashes keys; fixed per table so a key always lands on one shard.
    hasher: foldhash::fast::FixedState,
    /// Most keys held (across shards); past it, entries are evicted.
    capacity: usize,
    /// Entries evicted while their bucket was not yet full (each may admit up to a burst more).
    pub evicted: AtomicU64,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            hasher: foldhash::fast::FixedState::with_seed(0x746f_6b65_6e67_6174),
            capacity: capacity.max(SHARDS),
            evicted: AtomicU64::new(0),
        }
    }

    /// Spends one request of `key` at `now` (microseconds) under `rate`.
    pub fn check(&self, key: impl Hash, rate: Rate, now: u64) -> Decision {
        let hash = self.hasher.hash_one(key);
        let t = rate.interval();
        let tau = t.saturating_mul(rate.burst.max(1) as u64);
        let mut shard = self.shards[(hash as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        let tat = shard.get(&hash).copied().unwrap_or(now).max(now);
        let next = tat + t;
        if next - now > tau {
            // Refused: the TAT stays; one request fits once `next - tau` has come.
            let wait = next - tau - now;
            return Decision {
                allowed: false,
                remaining: 0,
                reset_secs: (tat - now).div_ceil(1_000_000),
                retry_after_secs: wait.div_ceil(1_000_000).max(1),
            };
        }
        if !shard.contains_key(&hash) && shard.len() >= self.capacity / SHARDS {
            self.make_room(&mut shard, now);
        }
        shard.insert(hash, next);
        Decision {
            allowed: true,
            remaining: ((tau - (next - now)) / t) as u32,
            reset_secs: (next - now).div_ceil(1_000_000),
            retry_after_secs: 0,
        }
    }

    /// Keys held now, for the metrics and tests.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries with full buckets (TAT passed: the same as no entry); if the shard is
    /// still full, evicts an eighth of it, in the map's arbitrary order, and counts them.
    fn make_room(&self, shard: &mut HashMap<u64, u64, foldhash::fast::FixedState>, now: u64) {
        shard.retain(|_, tat| *tat > now);
        let cap = self.capacity / SHARDS;
        if shard.len() >= cap {
            let drop: Vec<u64> = shard.keys().take((cap / 8).max(1)).copied().collect();
            for k in &drop {
                shard.remove(k);
            }
            self.evicted.fetch_add(drop.len() as u64, Ordering::Relaxed);
        }
    }
}
