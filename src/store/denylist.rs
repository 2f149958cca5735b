//! [`DenyList`]: the denied access-token `jti`s a shared backend keeps in memory, so that the
//! proxy's check on every request is a lookup and never waits on the network.

use std::collections::HashMap;

use arc_swap::ArcSwap;

/// Denied jti -> exp, swapped whole on every change so that readers never lock.
type DeniedMap = HashMap<Box<str>, u64>;

/// Denied jtis with the `exp` of their token. An entry stays until that `exp` has passed, even if
/// the backend forgets it sooner (e.g. a Redis restart without persistence): memory only grows
/// stricter until the token could not pass anyway.
#[derive(Default)]
pub struct DenyList {
    /// The current map; writers clone, change and swap it (denials are rare, reads are not).
    map: ArcSwap<DeniedMap>,
}

impl std::fmt::Debug for DenyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyList").field("len", &self.len()).finish()
    }
}

impl DenyList {
    /// Whether `jti` is denied at `now` (denied up to and including its `exp`).
    pub fn contains(&self, jti: &str, now: u64) -> bool {
        self.map.load().get(jti).is_some_and(|&exp| now <= exp)
    }

    /// Adds denials (a later `exp` for a jti already present wins); one swap for the whole batch.
    pub fn extend<'a>(&self, entries: impl IntoIterator<Item = (&'a str, u64)> + Clone) {
        self.map.rcu(|map| {
            let mut map = DeniedMap::clone(map);
            for (jti, exp) in entries.clone() {
                let entry = map.entry(jti.into()).or_insert(exp);
                *entry = (*entry).max(exp);
            }
            map
        });
    }

    /// Drops the entries whose token expired before `now`; returns how many went.
    pub fn retain_live(&self, now: u64) -> usize {
        let before = self.len();
        if self.map.load().values().all(|&exp| now <= exp) {
            return 0;
        }
        self.map.rcu(|map| {
            let mut map = DeniedMap::clone(map);
            map.retain(|_, exp| now <= *exp);
            map
        });
        before.saturating_sub(self.len())
    }

    /// Entries held, live or not yet pruned.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_exp_wins_and_entries_end_at_exp() {
        let d = DenyList::default();
        d.extend([("a", 200), ("b", 100)]);
        d.extend([("a", 150)]);
        assert!(d.contains("a", 200) && !d.contains("a", 201));
        assert!(d.contains("b", 100) && !d.contains("b", 101));
        assert!(!d.contains("c", 0));
        assert_eq!(d.retain_live(150), 1);
        assert_eq!(d.len(), 1);
        assert_eq!(d.retain_live(150), 0);
    }
}
