//! Local allowances of a shared quota. With a shared store the GCRA state of a key lives in the
//! store, and one round trip ([`Ask`] -> [`Grant`]) moves the key's TAT by up to `want` intervals
//! at once: this instance may then pass that many requests of the key without asking again. So
//! the hot path waits on the store once per allowance, not once per request.
//!
//! # Accuracy
//! The store never grants more than its bucket holds, so instances together never pass more than
//! the quota's requests *granted*; what moves is *when* they are spent. An allowance may be spent
//! only within `granted * T` of its grant (the time the bucket takes to earn it back), so in any
//! window the fleet passes at most `lease` requests more than one exact GCRA would. The other
//! way, an allowance an instance does not spend in time is lost: with N instances, up to N times
//! `lease` requests may be refused that an exact limiter would have passed. `lease = 1` is exact,
//! at one round trip per request.
//!
//! A refusal is remembered too: the store says when the next request of the key could pass, and
//! until then this instance refuses the key without asking (GCRA only refills with time, so no
//! other instance can make room sooner). A flood over its quota costs the store nothing.

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
#[derive(Debug, Clone, Copy, Default)]
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
}

impl Expiring for Lease {
    fn dead(&self, now: u64) -> bool {
        (self.left == 0 || self.spend_by <= now) && self.refused_until <= now
    }
}

/// What the local allowance says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Spent from the allowance: passes, no round trip.
    Pass(Decision),
    /// The store refused the key recently and it cannot have refilled yet.
    Refuse(Decision),
    /// Nothing held: ask the store.
    Ask,
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

    /// Spends one request of `hash` at `now` from what this instance holds, if it can.
    pub fn spend(&self, hash: u64, now: u64) -> Local {
        let mut shard = self.entries.lock(hash);
        let Some(l) = shard.get_mut(&hash) else { return Local::Ask };
        if l.left > 0 && l.spend_by > now {
            l.left -= 1;
            return Local::Pass(Decision {
                allowed: true,
                remaining: l.remaining.saturating_add(l.left),
                reset_secs: secs(l.full_at.saturating_sub(now)),
                retry_after_secs: 0,
            });
        }
        if l.refused_until > now {
            return Local::Refuse(refusal(l, now));
        }
        Local::Ask
    }

    /// Records the store's `grant` for `hash`, asked under `ask` and answered at `now`: the
    /// first granted request is the asker's, the rest are kept. The asker's decision.
    pub fn record(&self, hash: u64, ask: Ask, grant: Grant, now: u64) -> Decision {
        let mut shard = self.entries.lock(hash);
        let mut l = shard.get(&hash).copied().unwrap_or_default();
        if l.spend_by <= now {
            l.left = 0;
        }
        l.full_at = now.saturating_add(grant.reset_us);
        l.remaining = grant.remaining;
        if grant.granted == 0 {
            l.refused_until = now.saturating_add(grant.retry_us.max(1));
            let decision = refusal(&l, now);
            self.entries.insert(&mut shard, hash, l, now);
            return decision;
        }
        // Concurrent askers of one key each bring a grant: they add up.
        l.left = l.left.saturating_add(grant.granted - 1);
        l.spend_by = now.saturating_add(ask.interval_us.saturating_mul(grant.granted.max(1) as u64));
        l.refused_until = 0;
        let decision = Decision {
            allowed: true,
            remaining: l.remaining.saturating_add(l.left),
            reset_secs: secs(grant.reset_us),
            retry_after_secs: 0,
        };
        if l.left > 0 || shard.contains_key(&hash) {
            self.entries.insert(&mut shard, hash, l, now);
        }
        decision
    }

    /// Keys held now, for the tests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
