//! GCRA arithmetic and the table's bounds.

use super::*;
use std::sync::Arc;

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
    assert!(t.evicted() > 0);
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
    assert_eq!(t.evicted(), 0);
    assert!(t.len() <= 1600);
}

const ASK: Ask = Ask { interval_us: S, tau_us: 10 * S, want: 4 };

fn grant(granted: u32, remaining: u32) -> Grant {
    Grant { granted, remaining, reset_us: 4 * S, retry_us: if granted == 0 { S / 2 } else { 0 } }
}

/// Asks for `k` at `now` (nobody else may be asking) and records `g`: the asker's decision.
fn asked(l: &Arc<Leases>, k: u64, now: u64, g: Grant) -> Decision {
    match l.spend(k, now, 0) {
        Local::Ask(asking) => asking.record(ASK, g, now),
        other => panic!("expected to ask, got {other:?}"),
    }
}

#[test]
fn an_allowance_is_spent_locally_then_the_store_is_asked_again() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    let d = asked(&l, k, now, grant(4, 6));
    assert!(d.allowed);
    assert_eq!((d.remaining, d.reset_secs), (9, 4), "the bucket's 6 and the 3 held here");
    for left in [8, 7, 6] {
        match l.spend(k, now + 1000, 0) {
            Local::Pass(d) => assert_eq!(d.remaining, left),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(l.spend(k, now + 1000, 0), Local::Ask(_)), "four granted, four spent");
    assert!(matches!(l.spend(key_hash("other"), now, 0), Local::Ask(_)), "keys never share an allowance");
}

#[test]
fn an_allowance_expires_after_the_time_the_bucket_needs_to_earn_it_back() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    asked(&l, k, now, grant(4, 6));
    assert!(matches!(l.spend(k, now + 4 * S - 1, 0), Local::Pass(_)));
    assert!(matches!(l.spend(k, now + 4 * S, 0), Local::Ask(_)), "held past 4 intervals: dropped, not spent");
}

#[test]
fn a_refusal_is_answered_locally_until_the_bucket_can_have_refilled() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    let d = asked(&l, k, now, grant(0, 0));
    assert!(!d.allowed);
    assert_eq!((d.retry_after_secs, d.reset_secs), (1, 4));
    match l.spend(k, now + S / 4, 0) {
        Local::Refuse(d) => assert_eq!(d.retry_after_secs, 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(l.spend(k, now + S / 2, 0), Local::Ask(_)), "once a request could fit, the store is asked");
}

#[tokio::test]
async fn one_request_per_key_asks_and_the_others_spend_its_grant() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    let Local::Ask(asking) = l.spend(k, now, 0) else { panic!("the first asks") };
    let waiters: Vec<_> = (0..3)
        .map(|_| match l.spend(k, now, 0) {
            Local::Wait(w) => w,
            other => panic!("the others wait, got {other:?}"),
        })
        .collect();
    assert!(matches!(l.spend(key_hash("other"), now, 0), Local::Ask(_)), "another key does not wait");
    assert!(asking.record(ASK, grant(4, 6), now).allowed);
    for w in waiters {
        w.await;
        assert!(matches!(l.spend(k, now, 0), Local::Pass(_)), "a waiter spends the grant");
    }
    assert!(matches!(l.spend(k, now, 0), Local::Ask(_)), "4 granted: the asker and three waiters");
}

#[tokio::test]
async fn an_asker_dropped_without_an_answer_releases_the_waiters() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    let Local::Ask(asking) = l.spend(k, now, 0) else { panic!("the first asks") };
    let Local::Wait(w) = l.spend(k, now, 0) else { panic!("the second waits") };
    drop(asking);
    tokio::time::timeout(std::time::Duration::from_secs(5), w).await.expect("woken by the drop");
    assert!(matches!(l.spend(k, now, 0), Local::Ask(_)), "and may ask itself");
}

#[test]
fn leases_stay_bounded_under_distinct_keys() {
    let l = Arc::new(Leases::new(1600));
    let now = 100 * S;
    for i in 0..100_000u32 {
        asked(&l, key_hash(i), now, grant(4, 6));
    }
    assert!(l.len() <= 1600, "{}", l.len());
    assert!(l.evicted() > 0);
    // A grant spent whole by its asker leaves an entry that is dropped, not evicted.
    let l = Arc::new(Leases::new(1600));
    for i in 0..100_000u32 {
        asked(&l, key_hash(i), now, grant(1, 6));
    }
    assert!(l.len() <= 1600, "{}", l.len());
    assert_eq!(l.evicted(), 0);
}

#[test]
fn spending_an_allowance_below_half_sends_for_the_next_once() {
    let l = Arc::new(Leases::new(1000));
    let (k, now) = (key_hash("app"), 100 * S);
    let Local::Ask(asking) = l.spend(k, now, 2) else { panic!("the first asks") };
    asking.record(ASK, grant(4, 6), now);
    assert!(matches!(l.spend(k, now, 2), Local::Pass(_)), "3 held, 2 left: not yet low");
    let Local::Refill(d, refill) = l.spend(k, now, 2) else { panic!("1 left, under half: refill") };
    assert!(d.allowed, "the request that sends for more passes at once");
    assert!(matches!(l.spend(k, now, 2), Local::Pass(_)), "the last held one, no second refill");
    assert!(matches!(l.spend(k, now, 2), Local::Wait(_)), "nothing held: wait for the refill in flight");
    refill.record(ASK, grant(4, 2), now);
    let passed = (0..10).filter(|_| matches!(l.spend(k, now, 0), Local::Pass(_))).count();
    assert_eq!(passed, 4, "a refill keeps its whole grant");

    // A refused refill: what is held is still spent, with no refill sent meanwhile.
    let k = key_hash("refused");
    let Local::Ask(asking) = l.spend(k, now, 2) else { panic!("the first asks") };
    asking.record(ASK, grant(3, 0), now);
    let Local::Refill(_, refill) = l.spend(k, now, 2) else { panic!("1 left: refill") };
    refill.record(ASK, grant(0, 0), now);
    assert!(matches!(l.spend(k, now, 2), Local::Pass(_)), "the held one, and no refill after a no");
    assert!(matches!(l.spend(k, now, 2), Local::Refuse(_)));
}
