//! The memory of DPoP proofs already used (RFC 9449 11.1), in this process: two generations of
//! proof ids, each spanning the proof acceptance window, so that an id is kept at least as long
//! as a proof with it could be accepted, and memory is bounded by the proofs of two windows.
//! Several instances share theirs through the state store (`Store::remember_proof`); this one
//! is the single instance's, and the fallback while Redis is unreachable.

use std::collections::HashSet;
use std::sync::Mutex;

/// What [`ReplayMemory::first_use`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: remembered now.
    First,
    /// Seen before: a replay.
    Again,
    /// The memory is at its bound: the proof cannot be checked, so it is refused.
    Full,
}

/// The 128-bit id of a proof: SHA-256 of its key thumbprint and `jti`, so that clients cannot
/// collide with each other's ids and the memory holds no client-chosen strings.
pub fn proof_id(jkt: &str, jti: &str) -> [u8; 16] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(jkt.as_bytes());
    ctx.update(&[0]);
    ctx.update(jti.as_bytes());
    let d = ctx.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d.as_ref()[..16]);
    id
}

/// Proof ids seen recently. Window and bound come with each call, from the current snapshot,
/// so a reload that changes them needs no new memory (and forgets nothing).
#[derive(Default)]
pub struct ReplayMemory {
    /// The two generations; short critical sections (one hash insert).
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    /// Ids first seen since `started`.
    current: HashSet<u128>,
    /// Ids of the generation before; dropped when `current` rolls over.
    previous: HashSet<u128>,
    /// When `current` began, unix seconds.
    started: u64,
}

impl ReplayMemory {
    pub fn new() -> ReplayMemory {
        ReplayMemory::default()
    }

    /// Records `id` at `now`; [`Seen::First`] only the first time within `span` seconds (the
    /// proof acceptance window), with at most `capacity` ids held.
    pub fn first_use(&self, id: &[u8; 16], now: u64, span: u64, capacity: usize) -> Seen {
        let id = u128::from_le_bytes(*id);
        let span = span.max(1);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if now >= g.started.saturating_add(span) {
            // Two spans without a proof: nothing in either generation can matter any more.
            g.previous =
                if now >= g.started.saturating_add(2 * span) { HashSet::new() } else { std::mem::take(&mut g.current) };
            g.current.clear();
            g.started = now;
        }
        if g.current.contains(&id) || g.previous.contains(&id) {
            return Seen::Again;
        }
        if g.current.len() + g.previous.len() >= capacity {
            return Seen::Full;
        }
        g.current.insert(id);
        Seen::First
    }

    /// Ids held now, for the metrics.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.len() + g.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_refused_for_at_least_one_span_then_forgotten() {
        let m = ReplayMemory::new();
        let seen = |id: &[u8; 16], now| m.first_use(id, now, 65, 100);
        let id = proof_id("k", "j1");
        assert_eq!(seen(&id, 1000), Seen::First);
        assert_eq!(seen(&id, 1000), Seen::Again);
        assert_eq!(seen(&id, 1064), Seen::Again);
        // A rollover keeps the previous generation.
        assert_eq!(seen(&proof_id("k", "j2"), 1065), Seen::First);
        assert_eq!(seen(&id, 1100), Seen::Again);
        // Two spans later the first id is gone (no proof with its iat could pass any more).
        assert_eq!(seen(&proof_id("k", "j3"), 1130), Seen::First);
        assert_eq!(seen(&id, 1131), Seen::First);
        assert_ne!(proof_id("k", "j1"), proof_id("k2", "j1"), "ids are per key");
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let m = ReplayMemory::new();
        for j in ["a", "b", "c"] {
            assert_eq!(m.first_use(&proof_id("k", j), 100, 60, 3), Seen::First);
        }
        assert_eq!(m.first_use(&proof_id("k", "d"), 100, 60, 3), Seen::Full);
        assert_eq!(m.first_use(&proof_id("k", "a"), 100, 60, 3), Seen::Again);
        assert_eq!(m.len(), 3);
    }
}
