//! What only the Redis backend has: several handles (gateway instances) on one server, TTL
//! expiry, the denial stream, and the failure policy with the server killed, paused and
//! restarted. The shared contract runs in `store::tests` against every backend.

use std::time::{Duration, Instant};

use super::*;
use crate::store::tests::redis_server::RedisServer;

/// A handle on `server` under `prefix`, with operations bounded by `timeout_ms`.
fn open(server: &RedisServer, prefix: &str, timeout_ms: u64) -> RedisStore {
    RedisStore::open(RedisOptions {
        url: server.url(),
        key_prefix: prefix.into(),
        ca: None,
        timeout: Duration::from_millis(timeout_ms),
        sentinels: None,
        wait_replicas: 0,
    })
    .unwrap()
}

/// A family granted at `now`, for `secs`, no idle limit.
fn family(id: &str, now: u64, secs: u64) -> Family {
    Family {
        family_id: id.into(),
        client_id: "c1".into(),
        sub: "alice".into(),
        scope: "read".into(),
        created: now,
        expires: now + secs,
        idle_secs: 0,
        last_used: now,
        jkt: None,
    }
}

fn h(n: u8) -> TokenHash {
    [n; 32]
}

/// Polls `cond` every 2 ms for up to `limit`; how long it took, None if it never held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Every key under `prefix`, with its TTL in seconds (-1: none).
fn keys_and_ttls(server: &RedisServer, prefix: &str) -> Vec<(String, i64)> {
    let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con).unwrap();
    keys.into_iter().map(|k| (k.clone(), redis::cmd("TTL").arg(&k).query(&mut con).unwrap())).collect()
}

#[test]
fn every_key_carries_a_ttl_and_is_gone_after_it() {
    let server = RedisServer::start(false);
    let s = open(&server, "ttl:", 2000);
    let now = wall_now();
    let policy = LockoutPolicy { max_failures: 3, window_secs: 1, base_wait_secs: 1, max_wait_secs: 1 };
    s.create_family(&family("f1", now, 2), &h(1)).unwrap();
    assert!(matches!(s.rotate(&h(1), &h(2), "c1", now).unwrap(), Rotation::Rotated(_)));
    assert_eq!(s.rotate(&h(1), &h(3), "c1", now).unwrap(), Rotation::Reused);
    s.deny_jti("j1", now + 1).unwrap();
    assert!(s.use_jti_once("c1", "a1", now + 1, now).unwrap());
    s.record_failure("user:alice", now, &policy).unwrap();

    let keys = keys_and_ttls(&server, "ttl:");
    assert!(keys.len() >= 8, "families, lookups, index, denials, assertion, lockout: {keys:?}");
    for (k, ttl) in &keys {
        assert!((1..=3).contains(ttl), "{k} has TTL {ttl}");
    }
    assert!(
        !keys.iter().any(|(k, _)| k.contains(&hex(&h(1))[..8]) && !k.contains("t:")),
        "hashes appear only in lookup keys: {keys:?}"
    );
    assert!(wait_for(Duration::from_secs(6), || keys_and_ttls(&server, "ttl:").is_empty()).is_some(), "{:?}", {
        keys_and_ttls(&server, "ttl:")
    });
    // Redis forgot the denial; memory keeps it until the token's own exp.
    assert!(s.is_jti_denied("j1", now + 1));
}

#[test]
fn a_denial_reaches_every_instance_within_a_second() {
    let server = RedisServer::start(false);
    let (a, b) = (open(&server, "p:", 2000), open(&server, "p:", 2000));
    let exp = wall_now() + 600;
    let mut took = Vec::new();
    for i in 0..50 {
        let jti = format!("j{i}");
        a.deny_jti(&jti, exp).unwrap();
        assert!(a.is_jti_denied(&jti, exp), "the instance that denied knows at once");
        took.push(wait_for(Duration::from_secs(1), || b.is_jti_denied(&jti, exp)).expect("not seen at B within 1 s"));
    }
    took.sort();
    eprintln!("denial propagation over 50: p50 {:?}, max {:?}", took[25], took[49]);
    // A third instance started later loads them all at open.
    let c = open(&server, "p:", 2000);
    assert!((0..50).all(|i| c.is_jti_denied(&format!("j{i}"), exp)));
    // Another prefix is another fleet.
    assert!(!open(&server, "other:", 2000).is_jti_denied("j0", exp));
}

#[test]
fn denials_made_while_an_instance_was_cut_off_arrive_when_it_reconnects() {
    let mut server = RedisServer::start(true);
    let (a, b) = (open(&server, "p:", 500), open(&server, "p:", 500));
    let exp = wall_now() + 600;
    a.deny_jti("before", exp).unwrap();
    assert!(wait_for(Duration::from_secs(1), || b.is_jti_denied("before", exp)).is_some());

    server.kill9();
    // Both keep answering the proxy from memory while Redis is gone; store calls fail, quickly.
    assert!(b.is_jti_denied("before", exp));
    let t = Instant::now();
    assert!(a.deny_jti("during", exp).is_err());
    assert!(t.elapsed() < Duration::from_millis(1500), "failed in {:?}", t.elapsed());
    assert!(!a.is_jti_denied("during", exp), "memory never claims what Redis did not take");

    server.restart();
    // A reconnects on its next call; B's follower resynchronizes on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.deny_jti("during", exp).is_err() {
        assert!(Instant::now() < deadline, "A never reconnected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = wait_for(Duration::from_secs(10), || b.is_jti_denied("during", exp)).expect("B never caught up");
    eprintln!("B caught up {took:?} after A's denial");
    assert!(b.is_jti_denied("before", exp), "the AOF kept the older denial");
}

#[test]
fn the_proxy_side_keeps_its_denylist_when_redis_loses_everything() {
    let mut server = RedisServer::start(false);
    let (a, b) = (open(&server, "p:", 500), open(&server, "p:", 500));
    let exp = wall_now() + 600;
    a.deny_jti("j", exp).unwrap();
    assert!(wait_for(Duration::from_secs(1), || b.is_jti_denied("j", exp)).is_some());
    server.restart(); // no AOF, no RDB: an empty server
    assert!(wait_for(Duration::from_secs(10), || a.deny_jti("k", exp).is_ok()).is_some(), "no reconnect");
    assert!(wait_for(Duration::from_secs(10), || b.is_jti_denied("k", exp)).is_some(), "B never resynced");
    assert!(a.is_jti_denied("j", exp) && b.is_jti_denied("j", exp), "a denial was forgotten before its exp");
}

#[test]
fn a_paused_server_fails_calls_within_the_timeout_and_changes_nothing() {
    let server = RedisServer::start(false);
    let s = open(&server, "p:", 300);
    let now = wall_now();
    s.create_family(&family("f1", now, 600), &h(1)).unwrap();
    s.deny_jti("j", now + 600).unwrap();

    server.pause(true);
    let t = Instant::now();
    let err = s.rotate(&h(1), &h(2), "c1", now).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, StoreError::Timeout(300) | StoreError::Redis(_)), "{err:?}");
    assert!(took < Duration::from_millis(900), "took {took:?} with timeout_ms = 300");
    assert!(s
        .record_failure(
            "user:x",
            now,
            &LockoutPolicy { max_failures: 1, window_secs: 60, base_wait_secs: 60, max_wait_secs: 60 }
        )
        .is_err());
    assert!(s.is_jti_denied("j", now), "memory answers while Redis hangs");
    server.pause(false);

    // The timed-out rotation may or may not have reached Redis; either way no family is revoked
    // by an error, and h(2) is a lookup key at most, never current unless the script ran.
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match s.rotate(&h(1), &h(3), "c1", now) {
            Ok(o) => break o,
            Err(_) => assert!(Instant::now() < deadline, "no recovery after SIGCONT"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(matches!(outcome, Rotation::Rotated(_)), "the paused rotation never ran, so h(1) is still current");
    assert_eq!(s.lock_state("user:x", now).unwrap(), LockState::default(), "failed record_failure wrote nothing");
}

#[test]
fn lockout_failures_split_across_instances_lock_at_both() {
    let server = RedisServer::start(false);
    let (a, b) = (open(&server, "p:", 2000), open(&server, "p:", 2000));
    let p = LockoutPolicy { max_failures: 4, window_secs: 300, base_wait_secs: 60, max_wait_secs: 600 };
    let now = 10_000;
    assert_eq!(a.record_failure("user:alice", now, &p).unwrap().failures, 1);
    assert_eq!(b.record_failure("user:alice", now, &p).unwrap().failures, 2);
    assert_eq!(a.record_failure("user:alice", now, &p).unwrap().failures, 3);
    assert_eq!(b.record_failure("user:alice", now, &p).unwrap().locked_until, Some(now + 60));
    assert_eq!(a.lock_state("user:alice", now + 1).unwrap().locked_until, Some(now + 60));

    // Eight failures at once from both sides: none is lost (compare-and-set), so the fourth
    // locks; the rest, counted while locked, change nothing. A lost update would leave it open.
    let k = "user:bob";
    std::thread::scope(|scope| {
        for i in 0..8 {
            let s = if i % 2 == 0 { &a } else { &b };
            scope.spawn(move || s.record_failure(k, now, &p).unwrap());
        }
    });
    let st = a.lock_state(k, now).unwrap();
    assert_eq!(st.locked_until, Some(now + 60), "8 concurrent failures with max 4 lock once: {st:?}");
}

#[test]
fn revoke_client_at_one_instance_ends_the_families_at_the_other() {
    let server = RedisServer::start(false);
    let (a, b) = (open(&server, "p:", 2000), open(&server, "p:", 2000));
    let now = wall_now();
    for i in 0..5 {
        a.create_family(&family(&format!("f{i}"), now, 600), &h(i)).unwrap();
    }
    assert_eq!(b.revoke_client("c1", Some("alice")).unwrap(), 5);
    for i in 0..5 {
        assert_eq!(a.current_family(&h(i), now).unwrap(), None);
        assert_eq!(a.rotate(&h(i), &h(100 + i), "c1", now).unwrap(), Rotation::Invalid);
    }
    assert_eq!(a.revoke_client("c1", None).unwrap(), 0);
}

#[test]
fn open_fails_clearly_and_never_shows_the_password() {
    let server = RedisServer::start(false);
    let port = server.port;
    drop(server);
    let t = Instant::now();
    let err = RedisStore::open(RedisOptions {
        url: format!("redis://user:s3cret@127.0.0.1:{port}/0"),
        key_prefix: "p:".into(),
        ca: None,
        timeout: Duration::from_millis(500),
        sentinels: None,
        wait_replicas: 0,
    })
    .unwrap_err()
    .to_string();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(err.starts_with("state.url: redis at redis://***@127.0.0.1:"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn a_shared_quota_grants_allowances_from_one_bucket_on_the_servers_clock() {
    let server = RedisServer::start(false);
    let (a, b) = (open(&server, "q:", 1000), open(&server, "q:", 1000));
    // One request per second, ten at once, up to four per round trip.
    let ask = crate::quota::Ask { interval_us: 1_000_000, tau_us: 10_000_000, want: 4 };
    let take = |s: &RedisStore| s.run(s.take_quota("4:/api:client_id:app".into(), ask).unwrap()).unwrap();
    let first = take(&a);
    assert_eq!((first.granted, first.remaining, first.retry_us), (4, 6, 0));
    assert!((3_999_000..=4_000_000).contains(&first.reset_us), "{first:?}");
    let second = take(&b);
    assert_eq!((second.granted, second.remaining), (4, 2), "the other instance takes from the same bucket");
    let third = take(&a);
    assert_eq!((third.granted, third.remaining), (2, 0), "no more than the bucket holds");
    let refused = take(&b);
    assert_eq!(refused.granted, 0);
    // The next request fits one interval after the TAT left the bucket's depth.
    assert!((1..=1_000_000).contains(&refused.retry_us), "{refused:?}");
    assert!((9_900_000..=10_000_000).contains(&refused.reset_us), "{refused:?}");
    // Another key is another bucket; the TAT is stored as whole microseconds (Lua's tostring
    // would write 1.8e+15 and lose them) and expires once the bucket is full again.
    assert_eq!(s_take_other(&a, ask).granted, 4);
    let stored = keys_and_ttls(&server, "q:q:");
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (key, ttl) in stored {
        assert!((1..=11).contains(&ttl), "{key} ttl {ttl}");
        let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
        let tat: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert!(tat.len() >= 16 && tat.bytes().all(|c| c.is_ascii_digit()), "{key} = {tat}");
    }
}

fn s_take_other(s: &RedisStore, ask: crate::quota::Ask) -> crate::quota::Grant {
    s.run(s.take_quota("4:/api:client_id:other".into(), ask).unwrap()).unwrap()
}

#[test]
fn key_announcements_reach_followers_and_a_returning_follower_finds_the_latest() {
    use crate::store::{KeyEvent, KeyNews};
    let mut server = RedisServer::start(true);
    // The latest word must survive the kill below.
    assert!(server.command("CONFIG SET appendfsync always").contains("OK"));
    let (central, sidecar) = (open(&server, "ka:", 1000), open(&server, "ka:", 1000));
    let other_fleet = open(&server, "other:", 1000);
    let (tx, rx) = std::sync::mpsc::channel();
    assert!(sidecar.follow_key_announcements(Arc::new(move |e| drop(tx.send(e)))));
    let (tx_other, rx_other) = std::sync::mpsc::channel();
    assert!(other_fleet.follow_key_announcements(Arc::new(move |e| drop(tx_other.send(e)))));
    let next = |rx: &std::sync::mpsc::Receiver<KeyEvent>| rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(next(&rx), KeyEvent::Resync(Vec::new()), "subscribed, nothing announced yet");
    assert_eq!(next(&rx_other), KeyEvent::Resync(Vec::new()));

    let news = KeyNews { iss: "https://central".into(), kids: vec!["k1".into(), "k2".into()], version: "v2".into() };
    let send = |n: &KeyNews, only_if_new| central.handle.block_on(central.announce_keys(n, only_if_new).unwrap());
    assert!(send(&news, true).unwrap(), "a first announcement is published");
    assert_eq!(next(&rx), KeyEvent::Announced(news.clone()));
    assert!(!send(&news, true).unwrap(), "a restart with the same set announces nothing");
    assert!(send(&news, false).unwrap(), "a reload always announces");
    assert_eq!(next(&rx), KeyEvent::Announced(news.clone()));
    assert!(rx.try_recv().is_err(), "one event per announcement");
    assert!(rx_other.recv_timeout(Duration::from_millis(200)).is_err(), "another key_prefix hears nothing");

    // Redis restarted: the follower subscribes again and is handed what it may have missed.
    server.restart();
    assert_eq!(next(&rx), KeyEvent::Resync(vec![news]));
}
