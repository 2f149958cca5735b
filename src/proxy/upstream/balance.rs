//! Picking an endpoint of a group: round robin, least request, or rendezvous hashing. One atomic
//! add and a scan of the (few) endpoints per request: no lock, no allocation.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::health::Health;
use crate::config::BalanceKind;

/// What the balancer needs of an endpoint.
pub trait Slot {
    /// Its passive health and in-flight count.
    fn health(&self) -> &Health;
    /// Its rendezvous seed: a hash of its origin, so a caller's endpoint depends on no order.
    fn seed(&self) -> u64;
}

/// A group's balancer.
#[derive(Debug)]
pub struct Balancer {
    /// Which rule picks.
    kind: BalanceKind,
    /// Round robin's turn; least request's tie-break start; hash's fallback without a key.
    next: AtomicUsize,
}

/// The endpoint picked, and whether only ejected ones were left to pick from (panic mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index into the group's endpoints.
    pub index: usize,
    /// Every endpoint left was ejected: this one is tried anyway.
    pub panic: bool,
}

impl Balancer {
    /// A balancer of `kind`.
    pub fn new(kind: BalanceKind) -> Self {
        Balancer { kind, next: AtomicUsize::new(0) }
    }

    /// An endpoint other than `skip`, in the set at `now` when one is (else any: panic mode);
    /// `key` is the caller's hash for `hash`. None only when there is no other endpoint.
    pub fn pick<S: Slot>(&self, slots: &[S], key: Option<u64>, skip: Option<usize>, now: u64) -> Option<Pick> {
        let n = slots.len();
        if n == 0 || (n == 1 && skip == Some(0)) {
            return None;
        }
        // A retry takes no turn of its own: the rotation goes on as if the request had one try.
        let start = match skip {
            None => self.next.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.next.load(Ordering::Relaxed),
        };
        for panic in [false, true] {
            let ok = |i: usize| Some(i) != skip && (panic || slots[i].health().available(now));
            let found = match (self.kind, key) {
                (BalanceKind::Hash, Some(key)) => {
                    (0..n).filter(|&i| ok(i)).max_by_key(|&i| (mix(key ^ slots[i].seed()), i))
                }
                (BalanceKind::LeastRequest, _) => {
                    (0..n).map(|k| (start + k) % n).filter(|&i| ok(i)).min_by_key(|&i| slots[i].health().in_flight())
                }
                _ => (0..n).map(|k| (start + k) % n).find(|&i| ok(i)),
            };
            if let Some(index) = found {
                return Some(Pick { index, panic });
            }
        }
        None
    }
}

/// FNV-1a of `bytes`: a stable hash of a caller's key or an endpoint's origin.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64's finalizer: spreads a key-endpoint pair's score over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(Health, u64);

    impl Slot for S {
        fn health(&self) -> &Health {
            &self.0
        }
        fn seed(&self) -> u64 {
            self.1
        }
    }

    fn slots(names: &[&str]) -> Vec<S> {
        names.iter().map(|n| S(Health::default(), hash_bytes(n.as_bytes()))).collect()
    }

    fn eject(s: &S) {
        let policy = super::super::health::EjectPolicy { failures: 1, base_ms: 1000, max_ms: 1000 };
        assert!(s.0.failed(&policy, 1).is_some());
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_ejected() {
        let b = Balancer::new(BalanceKind::RoundRobin);
        let s = slots(&["a", "b", "c"]);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&s, None, None, 2).unwrap().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        eject(&s[1]);
        let picks: Vec<usize> = (0..4).map(|_| b.pick(&s, None, None, 2).unwrap().index).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(b.pick(&s, None, Some(0), 2).unwrap().index, 2, "a retry skips the endpoint that failed");
    }

    #[test]
    fn every_endpoint_ejected_is_panic_mode_not_nothing() {
        let b = Balancer::new(BalanceKind::RoundRobin);
        let s = slots(&["a", "b"]);
        s.iter().for_each(eject);
        let p = b.pick(&s, None, None, 2).unwrap();
        assert!(p.panic);
        assert!(b.pick(&s, None, Some(p.index), 2).unwrap().index != p.index);
        assert!(!b.pick(&s, None, None, 5000).unwrap().panic, "back once their time is up");
        assert_eq!(b.pick(&slots(&["a"]), None, Some(0), 2), None, "no other endpoint to retry on");
    }

    #[test]
    fn least_request_prefers_the_idle() {
        let b = Balancer::new(BalanceKind::LeastRequest);
        let s = slots(&["a", "b", "c"]);
        let _busy = [s[0].0.start(), s[0].0.start(), s[2].0.start()];
        for _ in 0..5 {
            assert_eq!(b.pick(&s, None, None, 2).unwrap().index, 1);
        }
    }

    #[test]
    fn hash_keeps_callers_and_moves_a_quarter_when_one_of_four_leaves() {
        let b = Balancer::new(BalanceKind::Hash);
        let four = slots(&["http://a:1", "http://b:1", "http://c:1", "http://d:1"]);
        let three = slots(&["http://a:1", "http://b:1", "http://d:1"]);
        let name = |s: &[S], i: usize| s[i].1;
        let (mut moved, mut spread) = (0, [0usize; 4]);
        let callers = 10_000;
        for c in 0..callers {
            let key = hash_bytes(format!("user-{c}").as_bytes());
            let before = b.pick(&four, Some(key), None, 2).unwrap().index;
            assert_eq!(b.pick(&four, Some(key), None, 2).unwrap().index, before, "one caller, one endpoint");
            spread[before] += 1;
            let after = b.pick(&three, Some(key), None, 2).unwrap().index;
            if name(&four, before) != name(&three, after) {
                moved += 1;
                assert_eq!(before, 2, "only the removed endpoint's callers move");
            }
        }
        let fraction = moved as f64 / callers as f64;
        assert!((0.2..0.3).contains(&fraction), "{fraction}");
        assert!(spread.iter().all(|&n| n > callers / 5), "{spread:?}");
    }
}
