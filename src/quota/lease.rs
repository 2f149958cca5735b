//! Local allowances of a shared quota. With a shared store the GCRA state of a key lives in the
//! store, and one round trip ([`Ask`] -> [`Grant`]) moves the key's TAT by up to `want` intervals
//! at once: this instance may then pass that many requests of the key without asking again. So
//! the hot path waits on the store once per allowance, not once per request.
//!
//! # Accuracy
//! The store never grants more than its bucket holds, so instances together never pass more than
//! the quota's requests *granted*; what moves is *when* they are spent. A request an instance
//! holds was taken from the bucket earlier, so in any window the fleet passes at most what its
//! instances held at the window's start more than one exact GCRA would: up to one and a half
//! allowances each (half left when the next arrives). A held allowance unspent for the time the
//! bucket takes to earn it back (`granted * T` after its latest grant) is dropped. The other way,
//! an allowance an instance does not spend is not available to the others: with N instances, up
//! to N allowances may be refused that an exact limiter would pass. `lease = 1` is exact, at one
//! round trip per request.
//!
//! Before an allowance runs out, the request that spends it below half its size sends for the
//! next one in the background (`Local::Refill`): under steady load of one key no request waits on
//! the store at all, as long as a round trip is shorter than spending half an allowance.
//!
//! One request per key asks at a time: others of the same key that find the allowance empty
//! wait for its answer and spend from it, so a burst of concurrent requests makes one round trip,
//! and no grant is stranded beside a request refused for lack of it.
//!
//! A refusal is remembered too: the store says when the next request of the key could pass, and
//! until then this instance refuses the key without asking (GCRA only refills with time, so no
//! other instance can make room sooner). A flood over its quota costs the store nothing.

use std::sync::Arc;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::{Decision, Expiring, Shards};

/// What one round trip asks the store: up to `want` requests of a key, under a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The emission interval `T`, microseconds.
    pub interval_us: u64,
    /// The bucket depth `burst * T`, microseconds.
    pub tau_us: u64,
    /// Most requests to take at once (the allowance), at least 1.
    pub want: u32,
}

/// The store's answer, in durations from its own clock (instances' clocks never meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests granted (0: refused); the first is for the request that asked.
    pub granted: u32,
    /// Requests the bucket still holds after this grant.
    pub remaining: u32,
    /// Microseconds until the bucket is full again.
    pub reset_us: u64,
    /// When refused: microseconds until one request would be granted.
    pub retry_us: u64,
}

/// What this instance knows of one key of a shared quota.
#[derive(Debug, Clone, Default)]
struct Lease {
    /// Requests granted by the store and not spent yet.
    left: u32,
    /// Until when (local microseconds) `left` may be spent: later, spending them would pass
    /// more than the quota in the window of the spend.
    spend_by: u64,
    /// The bucket's remaining requests as the store reported with the grant (not counting `left`).
    remaining: u32,
    /// When the shared bucket will be full again (local microseconds), as reported.
    full_at: u64,
    /// No request of the key passes before this instant (local microseconds): the store said so.
    refused_until: u64,
    /// Set while one request asks the store for this key; the others wait on it.
    asking: Option<Arc<Notify>>,
}

impl Lease {
    /// Requests held and still spendable at `now`.
    fn held(&self, now: u64) -> u32 {
        if self.spend_by > now {
            self.left
        } else {
            0
        }
    }
}

impl Expiring for Lease {
    fn dead(&self, now: u64) -> bool {
        self.held(now) == 0 && self.refused_until <= now && self.asking.is_none()
    }
}

/// What the local allowance says about one request.
pub enum Local {
    /// Spent from the allowance: passes, no round trip.
    Pass(Decision),
    /// The store refused the key recently and it cannot have refilled yet.
    Refuse(Decision),
    /// Nothing held and nobody asking: this request asks the store.
    Ask(Asking),
    /// Another request of this key is asking: wait for its answer, then spend again.
    Wait(OwnedNotified),
    /// Spent from the allowance, which is now low: the request passes, and sends for the next
    /// allowance without waiting for it.
    Refill(Decision, Asking),
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Pass(d) => f.debug_tuple("Pass").field(d).finish(),
            Local::Refuse(d) => f.debug_tuple("Refuse").field(d).finish(),
            Local::Ask(_) => f.write_str("Ask"),
            Local::Wait(_) => f.write_str("Wait"),
            Local::Refill(d, _) => f.debug_tuple("Refill").field(d).finish(),
        }
    }
}

/// The one request of a key asking the store. Dropped, with or without an answer (a request
/// cancelled mid-call included), it lets the waiting requests go on.
pub struct Asking {
    /// Where the answer goes (owned: a refill is recorded by a task of its own).
    leases: Arc<Leases>,
    /// The key asked for.
    hash: u64,
    /// What the waiting requests wait on.
    notify: Arc<Notify>,
    /// Whether a request waits for this answer to pass (else it is a refill: the request that
    /// sent it has passed already).
    for_request: bool,
}

impl Asking {
    /// Records the store's `grant`, asked under `ask` and answered at `now`. A request that
    /// asked takes one of the grant and gets its decision; a refill keeps the whole grant.
    pub fn record(self, ask: Ask, grant: Grant, now: u64) -> Decision {
        let mut shard = self.leases.entries.lock(self.hash);
        let mut l = shard.get(&self.hash).cloned().unwrap_or_default();
        let held = l.held(now);
        l.full_at = now.saturating_add(grant.reset_us);
        l.remaining = grant.remaining;
        if grant.granted > 0 {
            l.spend_by = now.saturating_add(ask.interval_us.saturating_mul(grant.granted as u64));
            l.refused_until = 0;
        } else {
            l.refused_until = now.saturating_add(grant.retry_us.max(1));
        }
        let total = held.saturating_add(grant.granted);
        let decision = if total == 0 {
            l.left = 0;
            refusal(&l, now)
        } else {
            l.left = total - u32::from(self.for_request);
            Decision {
                allowed: true,
                remaining: l.remaining.saturating_add(l.left),
                reset_secs: secs(grant.reset_us),
                retry_after_secs: 0,
            }
        };
        self.leases.entries.insert(&mut shard, self.hash, l, now);
        decision
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        {
            let mut shard = self.leases.entries.lock(self.hash);
            if let Some(l) = shard.get_mut(&self.hash) {
                if l.asking.as_ref().is_some_and(|n| Arc::ptr_eq(n, &self.notify)) {
                    l.asking = None;
                }
            }
        }
        self.notify.notify_waiters();
    }
}

/// The local allowances of one route, by key hash (see [`super::key_hash`]).
pub struct Leases {
    entries: Shards<Lease>,
}

fn secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl Leases {
    /// Holds at most `capacity` keys: one per key with an allowance or a refusal pending.
    pub fn new(capacity: usize) -> Leases {
        Leases { entries: Shards::new(capacity) }
    }

    /// Spends one request of `hash` at `now` from what this instance holds, if it can. When that
    /// leaves fewer than `refill_below` held and nobody is asking, the request also sends for
    /// the next allowance ([`Local::Refill`]).
    pub fn spend(self: &Arc<Self>, hash: u64, now: u64, refill_below: u32) -> Local {
        let mut shard = self.entries.lock(hash);
        if let Some(l) = shard.get_mut(&hash) {
            if l.held(now) > 0 {
                l.left -= 1;
                let decision = Decision {
                    allowed: true,
                    remaining: l.remaining.saturating_add(l.left),
                    reset_secs: secs(l.full_at.saturating_sub(now)),
                    retry_after_secs: 0,
                };
                // No refill while one is on its way, or while the store has just said no.
                if l.left >= refill_below || l.asking.is_some() || l.refused_until > now {
                    return Local::Pass(decision);
                }
                let notify = Arc::new(Notify::new());
                l.asking = Some(notify.clone());
                return Local::Refill(decision, self.asking(hash, notify, false));
            }
            if l.refused_until > now {
                return Local::Refuse(refusal(l, now));
            }
            if let Some(n) = &l.asking {
                // Made under the lock: it sees the asker's wake-up even if that comes first.
                return Local::Wait(n.clone().notified_owned());
            }
        }
        let notify = Arc::new(Notify::new());
        let mut l = shard.get(&hash).cloned().unwrap_or_default();
        l.asking = Some(notify.clone());
        self.entries.insert(&mut shard, hash, l, now);
        Local::Ask(self.asking(hash, notify, true))
    }

    fn asking(self: &Arc<Self>, hash: u64, notify: Arc<Notify>, for_request: bool) -> Asking {
        Asking { leases: self.clone(), hash, notify, for_request }
    }

    /// Keys held now, for the tests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted while they still held requests or a refusal.
    pub fn evicted(&self) -> u64 {
        self.entries.evicted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The answer to a request of a key the store refused.
fn refusal(l: &Lease, now: u64) -> Decision {
    Decision {
        allowed: false,
        remaining: 0,
        reset_secs: secs(l.full_at.saturating_sub(now)),
        retry_after_secs: secs(l.refused_until.saturating_sub(now)).max(1),
    }
}
