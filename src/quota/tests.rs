//! GCRA arithmetic and the table's bounds.

use super::*;

const S: u64 = 1_000_000;

#[test]
fn a_full_bucket_gives_burst_then_the_rate() {
    let t = Table::new(1000);
    let rate = Rate { per_second: 10.0, burst: 5 };
    let now = 100 * S;
    let got: Vec<bool> = (0..7).map(|_| t.check("k", rate, now).allowed).collect();
    assert_eq!(got, [true, true, true, true, true, false, false]);
    let refused = t.check("k", rate, now);
    assert_eq!(refused.retry_after_secs, 1, "100 ms to the next slot, rounded up");
    assert_eq!(refused.reset_secs, 1);
    // 100 ms later one more fits, not two.
    assert!(t.check("k", rate, now + S / 10).allowed);
    assert!(!t.check("k", rate, now + S / 10).allowed);
    // Over 10 s: 10 per second.
    let mut allowed = 0;
    for ms in (0..10_000).step_by(10) {
        allowed += t.check("k2", rate, now + ms * 1000).allowed as u32;
    }
    assert_eq!(allowed, 5 + 100 - 1, "burst, then one per 100 ms (the burst's last slot overlaps)");
}

#[test]
fn remaining_and_reset_follow_the_bucket() {
    let t = Table::new(1000);
    let rate = Rate { per_second: 1.0, burst: 3 };
    let d: Vec<u32> = (0..3).map(|_| t.check("k", rate, 50 * S).remaining).collect();
    assert_eq!(d, [2, 1, 0]);
    let last = t.check("k", rate, 50 * S);
    assert!(!last.allowed);
    assert_eq!(last.retry_after_secs, 1);
    assert_eq!(last.reset_secs, 3);
    assert_eq!(rate.window_secs(), 3);
    assert_eq!(Rate { per_second: 0.5, burst: 1 }.window_secs(), 2);
}

#[test]
fn keys_do_not_share_a_bucket() {
    let t = Table::new(1000);
    let rate = Rate { per_second: 1.0, burst: 1 };
    assert!(t.check("alice", rate, S).allowed);
    assert!(!t.check("alice", rate, S).allowed);
    assert!(t.check("bob", rate, S).allowed);
}

#[test]
fn exact_under_concurrency() {
    let t = std::sync::Arc::new(Table::new(1000));
    let rate = Rate { per_second: 0.001, burst: 100 };
    let now = 10 * S;
    let allowed = std::sync::Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (t, allowed) = (t.clone(), allowed.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if t.check("shared", rate, now).allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(allowed.load(Ordering::Relaxed), 100, "exactly the burst of 800 attempts");
}

#[test]
fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
    let t = Table::new(1600);
    let rate = Rate { per_second: 1.0, burst: 2 };
    for i in 0..100_000u32 {
        assert!(t.check(i, rate, 5 * S).allowed);
    }
    assert!(t.len() <= 1600, "{}", t.len());
    assert!(t.evicted.load(Ordering::Relaxed) > 0);
    // Full buckets are dropped first, without counting as evictions.
    // Half the capacity at a time (a shard holds at most a sixteenth of it, and keys spread
    // unevenly): the second half finds the first's buckets full again and drops them.
    let t = Table::new(1600);
    for i in 0..800u32 {
        t.check(i, rate, 5 * S);
    }
    for i in 0..800u32 {
        t.check(10_000 + i, rate, 60 * S);
    }
    assert_eq!(t.evicted.load(Ordering::Relaxed), 0);
    assert!(t.len() <= 1600);
}
