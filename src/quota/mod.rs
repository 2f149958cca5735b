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
//!
//! With a shared state store (`[state] backend = "redis"`) the TAT lives in the store instead, and
//! each instance spends requests from a small local allowance the store grants in one round trip
//! ([`lease`]); the local [`Table`] is then the fallback while the store cannot be reached.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

pub mod lease;
#[cfg(test)]
mod tests;

pub use lease::{Ask, Grant, Leases, Local};

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
    pub fn interval(&self) -> u64 {
        ((1_000_000.0 / self.per_second).round() as u64).max(1)
    }

    /// The bucket's depth `tau = burst * T`, in microseconds.
    pub fn tau(&self) -> u64 {
        self.interval().saturating_mul(self.burst.max(1) as u64)
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

/// Hashes a caller's key; one fixed seed, so the local [`Table`] and the [`Leases`] of a route
/// agree on a key's hash.
pub fn key_hash(key: impl Hash) -> u64 {
    foldhash::fast::FixedState::with_seed(0x746f_6b65_6e67_6174).hash_one(key)
}

/// An entry that carries no information past some instant, and may then be dropped.
trait Expiring {
    fn dead(&self, now: u64) -> bool;
}

impl Expiring for u64 {
    /// A TAT in the past: the bucket is full, the same as no entry.
    fn dead(&self, now: u64) -> bool {
        *self <= now
    }
}

/// Entries by key hash, in [`SHARDS`] locks, bounded to `capacity` entries.
struct Shards<V> {
    /// The entries; a key always lands on the shard its hash names.
    shards: [Mutex<HashMap<u64, V, foldhash::fast::FixedState>>; SHARDS],
    /// Most keys held (across shards); past it, entries are evicted.
    capacity: usize,
    /// Entries evicted while they still carried information.
    evicted: AtomicU64,
}

type Shard<V> = HashMap<u64, V, foldhash::fast::FixedState>;

impl<V: Expiring> Shards<V> {
    fn new(capacity: usize) -> Shards<V> {
        Shards {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            capacity: capacity.max(SHARDS),
            evicted: AtomicU64::new(0),
        }
    }

    /// The shard of `hash`, locked (a poisoned lock still holds valid numbers).
    fn lock(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[(hash as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts into a locked shard, making room first when a new key would overfill it.
    fn insert(&self, shard: &mut Shard<V>, hash: u64, value: V, now: u64) {
        if !shard.contains_key(&hash) && shard.len() >= self.capacity / SHARDS {
            self.make_room(shard, now);
        }
        shard.insert(hash, value);
    }

    /// Drops the dead entries; if the shard is still full, evicts an eighth of it, in the map's
    /// arbitrary order, and counts them.
    fn make_room(&self, shard: &mut Shard<V>, now: u64) {
        shard.retain(|_, v| !v.dead(now));
        let cap = self.capacity / SHARDS;
        if shard.len() >= cap {
            let drop: Vec<u64> = shard.keys().take((cap / 8).max(1)).copied().collect();
            for k in &drop {
                shard.remove(k);
            }
            self.evicted.fetch_add(drop.len() as u64, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}

/// The quota state of one route: TAT per key hash.
pub struct Table {
    /// TAT (microseconds, [`now_micros`]) by key hash.
    entries: Shards<u64>,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table { entries: Shards::new(capacity) }
    }

    /// Spends one request of `key` at `now` (microseconds) under `rate`.
    pub fn check(&self, key: impl Hash, rate: Rate, now: u64) -> Decision {
        self.check_hash(key_hash(key), rate, now)
    }

    /// [`Table::check`] of a key already hashed with [`key_hash`].
    pub fn check_hash(&self, hash: u64, rate: Rate, now: u64) -> Decision {
        let t = rate.interval();
        let tau = rate.tau();
        let mut shard = self.entries.lock(hash);
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
        self.entries.insert(&mut shard, hash, next, now);
        Decision {
            allowed: true,
            remaining: ((tau - (next - now)) / t) as u32,
            reset_secs: (next - now).div_ceil(1_000_000),
            retry_after_secs: 0,
        }
    }

    /// Keys held now, for the metrics and tests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted while their bucket was not yet full (each may admit up to a burst more).
    pub fn evicted(&self) -> u64 {
        self.entries.evicted.load(Ordering::Relaxed)
    }
}
