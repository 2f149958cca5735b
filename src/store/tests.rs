//! Tests of the store contract, run against every backend: real redb files, redb's in-memory
//! backend, and a real `redis-server` started per test on a free port (each test its own server,
//! so tests run in parallel and nothing outlives them).

use std::path::Path;
use std::sync::{Arc, Barrier};

use super::*;

#[path = "../../tests/support/redis_server.rs"]
#[allow(dead_code)]
pub(super) mod redis_server;
use redis_server::RedisServer;

/// A distinct token hash per byte.
fn h(n: u8) -> TokenHash {
    [n; 32]
}

/// A family of `client` for `sub`: created at 1000, absolute expiry 10_000, idle 600.
fn family(id: &str, client: &str, sub: &str) -> Family {
    Family {
        family_id: id.into(),
        client_id: client.into(),
        sub: sub.into(),
        scope: "read write".into(),
        created: 1000,
        expires: 10_000,
        idle_secs: 600,
        last_used: 1000,
        jkt: None,
    }
}

/// A store in a fresh temporary folder (kept alive by the returned guard).
fn file_store() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state").join("tokengate.redb")).unwrap();
    (dir, store)
}

fn reopen(dir: &Path) -> RedbStore {
    RedbStore::open(&dir.join("state").join("tokengate.redb")).unwrap()
}

/// A Redis store on `server` under `prefix`.
fn redis_store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::open(RedisOptions {
        url: server.url(),
        key_prefix: prefix.into(),
        ca: None,
        timeout: std::time::Duration::from_secs(2),
        sentinels: None,
        wait_replicas: 0,
    })
    .unwrap()
}

/// One backend under test, able to open its state again (what a restart, or another gateway
/// instance on the same state, sees).
enum Backend {
    /// A redb file in this folder.
    RedbFile(tempfile::TempDir),
    /// redb's in-memory backend: cannot be opened twice.
    RedbMemory,
    /// A Redis server of this test alone.
    Redis(RedisServer),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::RedbFile(_) => "redb file",
            Backend::RedbMemory => "redb in memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// A new handle on this backend's state (the first one for RedbMemory).
    fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::RedbFile(dir) => Arc::new(reopen(dir.path())),
            Backend::RedbMemory => Arc::new(RedbStore::in_memory().unwrap()),
            Backend::Redis(server) => Arc::new(redis_store(server, "test:")),
        }
    }
}

/// Every backend, each fresh; the name is printed so a failure says which one.
fn backends() -> Vec<Backend> {
    vec![
        Backend::RedbFile(tempfile::tempdir().unwrap()),
        Backend::RedbMemory,
        Backend::Redis(RedisServer::start(false)),
    ]
}

/// The backends whose state outlives a handle (all but redb in memory).
fn durable_backends() -> Vec<Backend> {
    backends().into_iter().filter(|b| !matches!(b, Backend::RedbMemory)).collect()
}

/// Every backend, opened: `for (b, s) in stores()`.
fn stores() -> Vec<(Backend, Arc<dyn Store>)> {
    backends()
        .into_iter()
        .map(|b| {
            eprintln!("backend: {}", b.name());
            let s = b.open();
            (b, s)
        })
        .collect()
}

/// Unix seconds now: denials expire on the wall clock in Redis (deny_jti is not told the time).
use crate::auth::unix_now as wall_now;

#[test]
fn create_then_rotate_then_reuse_revokes_the_family() {
    for (_b, s) in stores() {
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        let Rotation::Rotated(f) = s.rotate(&h(1), &h(2), "c1", 1100).unwrap() else { panic!("not rotated") };
        assert_eq!(f.last_used, 1100);
        assert_eq!(f.family_id, "f1");
        assert_eq!(s.current_family(&h(2), 1100).unwrap(), Some(f));
        assert_eq!(s.current_family(&h(1), 1100).unwrap(), None, "an old token is not current");

        assert_eq!(s.rotate(&h(1), &h(3), "c1", 1200).unwrap(), Rotation::Reused);
        assert_eq!(s.rotate(&h(2), &h(4), "c1", 1200).unwrap(), Rotation::Invalid, "family revoked on reuse");
        assert_eq!(s.current_family(&h(2), 1200).unwrap(), None);
        assert_eq!(s.rotate(&h(1), &h(5), "c1", 1200).unwrap(), Rotation::Reused, "reuse after revocation");
        assert_eq!(s.current_family(&h(5), 1200).unwrap(), None);
        assert_eq!(s.rotate(&h(2), &h(4), "c1", 1300).unwrap(), Rotation::Invalid, "still revoked");
    }
}

#[test]
fn unknown_token_is_invalid() {
    for (_b, s) in stores() {
        assert_eq!(s.rotate(&h(9), &h(10), "c1", 1000).unwrap(), Rotation::Invalid);
        assert_eq!(s.current_family(&h(9), 1000).unwrap(), None);
        assert!(!s.revoke_family(&h(9), None).unwrap());
    }
}

#[test]
fn wrong_client_is_invalid_and_changes_nothing() {
    for (_b, s) in stores() {
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate(&h(1), &h(2), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        // Another client presenting the current token, or an old one, changes nothing.
        assert_eq!(s.rotate(&h(2), &h(3), "c2", 1200).unwrap(), Rotation::Invalid);
        assert_eq!(s.rotate(&h(1), &h(3), "c2", 1200).unwrap(), Rotation::Invalid);
        assert!(!s.revoke_family(&h(2), Some("c2")).unwrap());
        let Rotation::Rotated(f) = s.rotate(&h(2), &h(3), "c1", 1300).unwrap() else { panic!("family unusable") };
        assert_eq!(f.last_used, 1300);
    }
}

#[test]
fn absolute_expiry() {
    for (_b, s) in stores() {
        let mut f = family("f1", "c1", "alice");
        f.idle_secs = 0; // no idle limit: only the absolute one applies
        s.create_family(&f, &h(1)).unwrap();
        assert!(s.current_family(&h(1), 9_999).unwrap().is_some());
        assert_eq!(s.current_family(&h(1), 10_000).unwrap(), None);
        assert_eq!(s.rotate(&h(1), &h(2), "c1", 10_000).unwrap(), Rotation::Invalid);
        // Still current and usable before the end.
        assert!(matches!(s.rotate(&h(1), &h(2), "c1", 9_999).unwrap(), Rotation::Rotated(_)));
    }
}

#[test]
fn idle_expiry_and_rotation_renews_it() {
    for (_b, s) in stores() {
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        // Used at 1500: idle deadline moves from 1600 to 2100.
        assert!(matches!(s.rotate(&h(1), &h(2), "c1", 1500).unwrap(), Rotation::Rotated(_)));
        assert!(s.current_family(&h(2), 2099).unwrap().is_some());
        assert_eq!(s.current_family(&h(2), 2100).unwrap(), None);
        assert_eq!(s.rotate(&h(2), &h(3), "c1", 2100).unwrap(), Rotation::Invalid);
        // An idle-dead family's old token is not "reuse": nothing changes.
        assert_eq!(s.rotate(&h(1), &h(3), "c1", 2100).unwrap(), Rotation::Invalid);
    }
}

#[test]
fn concurrent_rotation_has_exactly_one_winner() {
    let (_dir, file) = file_store();
    concurrent_rotation_on(&[Arc::new(file)]);
    // Two handles on one Redis: two gateway instances.
    let server = RedisServer::start(false);
    concurrent_rotation_on(&[Arc::new(redis_store(&server, "a:")), Arc::new(redis_store(&server, "a:"))]);
}

/// Eight threads present the same token at once, spread over `handles`.
fn concurrent_rotation_on(handles: &[Arc<dyn Store>]) {
    let s = Arc::clone(&handles[0]);
    s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let outcomes: Vec<Rotation> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let (s, barrier) = (Arc::clone(&handles[usize::from(i) % handles.len()]), Arc::clone(&barrier));
                scope.spawn(move || {
                    barrier.wait();
                    s.rotate(&h(1), &h(100 + i), "c1", 1100).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let winners: Vec<_> = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated(_))).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Rotation::Reused).count(), 7, "{outcomes:?}");
    // The losers revoked the family, the winner's new token included.
    for i in 0..8 {
        assert_eq!(s.current_family(&h(100 + i), 1100).unwrap(), None);
    }
}

/// A reuse grace of `secs` for a retry without a DPoP proof.
fn grace(secs: u64) -> Grace<'static> {
    Grace { secs, jkt: None }
}

/// The family id of `token` if it is a current token at `now`.
fn current_id(s: &dyn Store, token: &TokenHash, now: u64) -> Option<String> {
    s.current_family(token, now).unwrap().map(|f| f.family_id)
}

#[test]
fn reuse_grace_answers_retries_of_the_token_just_rotated() {
    for (_b, s) in stores() {
        let g = grace(30);
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &g, 1100).unwrap(), Rotation::Rotated(_)));
        // The answer carrying h(2) was lost: the client retries h(1).
        let Rotation::Retried(f) = s.rotate_with_grace(&h(1), &h(3), "c1", &g, 1110).unwrap() else {
            panic!("a retry within the window is answered")
        };
        assert_eq!((f.family_id.as_str(), f.last_used), ("f1", 1110));
        assert_eq!(current_id(&*s, &h(3), 1110).as_deref(), Some("f1"));
        assert_eq!(current_id(&*s, &h(2), 1110), None, "the pair the retried rotation issued is dead");
        // A second retry, still within 30 s of the rotation at 1100: h(3) dies in turn.
        assert!(matches!(s.rotate_with_grace(&h(1), &h(4), "c1", &g, 1129).unwrap(), Rotation::Retried(_)));
        assert_eq!(current_id(&*s, &h(3), 1129), None);
        assert_eq!(current_id(&*s, &h(4), 1129).as_deref(), Some("f1"));
        // The window runs from the rotation, not from the retries: at 1130 h(1) is reuse.
        assert_eq!(s.rotate_with_grace(&h(1), &h(5), "c1", &g, 1130).unwrap(), Rotation::Reused);
        assert_eq!(current_id(&*s, &h(4), 1130), None, "reuse past the window revokes the family");
        assert_eq!(s.rotate_with_grace(&h(4), &h(6), "c1", &g, 1131).unwrap(), Rotation::Invalid);
    }
}

#[test]
fn reuse_grace_then_normal_rotation_and_an_off_grace() {
    for (_b, s) in stores() {
        let g = grace(30);
        // The retry's token rotates as usual; then the retried token is older than the one just
        // rotated (h(3)), and is reuse.
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &g, 1100).unwrap(), Rotation::Rotated(_)));
        assert!(matches!(s.rotate_with_grace(&h(1), &h(3), "c1", &g, 1101).unwrap(), Rotation::Retried(_)));
        assert!(matches!(s.rotate_with_grace(&h(3), &h(4), "c1", &g, 1102).unwrap(), Rotation::Rotated(_)));
        assert_eq!(s.rotate_with_grace(&h(1), &h(5), "c1", &g, 1103).unwrap(), Rotation::Reused);
        assert_eq!(current_id(&*s, &h(4), 1103), None);
        // Reuse of a revoked family stays reuse, grace or not.
        assert_eq!(s.rotate_with_grace(&h(3), &h(5), "c1", &g, 1103).unwrap(), Rotation::Reused);

        // Grace 0 (and plain `rotate`) is the strict rule: any retry is reuse.
        s.create_family(&family("f2", "c1", "alice"), &h(11)).unwrap();
        assert!(matches!(s.rotate(&h(11), &h(12), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        assert_eq!(s.rotate_with_grace(&h(11), &h(13), "c1", &grace(0), 1101).unwrap(), Rotation::Reused);
        assert_eq!(current_id(&*s, &h(12), 1101), None);
        s.create_family(&family("f3", "c1", "alice"), &h(21)).unwrap();
        assert!(matches!(s.rotate(&h(21), &h(22), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        assert_eq!(s.rotate(&h(21), &h(23), "c1", 1101).unwrap(), Rotation::Reused);
    }
}

#[test]
fn reuse_grace_an_older_token_and_the_killed_one_are_reuse() {
    for (_b, s) in stores() {
        let g = grace(30);
        // h(1) was rotated two rotations ago: only the latest rotation's token has a grace.
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &g, 1100).unwrap(), Rotation::Rotated(_)));
        assert!(matches!(s.rotate_with_grace(&h(2), &h(3), "c1", &g, 1105).unwrap(), Rotation::Rotated(_)));
        assert_eq!(s.rotate_with_grace(&h(1), &h(4), "c1", &g, 1106).unwrap(), Rotation::Reused);
        assert_eq!(current_id(&*s, &h(3), 1106), None);

        // The token a retry killed (the lost answer's), presented after all: reuse.
        s.create_family(&family("f2", "c1", "alice"), &h(11)).unwrap();
        assert!(matches!(s.rotate_with_grace(&h(11), &h(12), "c1", &g, 1100).unwrap(), Rotation::Rotated(_)));
        assert!(matches!(s.rotate_with_grace(&h(11), &h(13), "c1", &g, 1101).unwrap(), Rotation::Retried(_)));
        assert_eq!(s.rotate_with_grace(&h(12), &h(14), "c1", &g, 1102).unwrap(), Rotation::Reused);
        assert_eq!(current_id(&*s, &h(13), 1102), None);
    }
}

#[test]
fn reuse_grace_is_not_for_another_client_or_another_dpop_key() {
    for (_b, s) in stores() {
        let g = grace(30);
        // Another client: invalid, nothing changes (as for any token of another client's family).
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &g, 1100).unwrap(), Rotation::Rotated(_)));
        assert_eq!(s.rotate_with_grace(&h(1), &h(3), "c2", &g, 1101).unwrap(), Rotation::Invalid);
        assert_eq!(current_id(&*s, &h(2), 1101).as_deref(), Some("f1"), "the owner's pair still works");

        // A family bound to DPoP key "key-a": the retry must prove that key.
        let bound = |id: &str| Family { jkt: Some("key-a".into()), ..family(id, "c1", "alice") };
        let with = |jkt: Option<&'static str>| Grace { secs: 30, jkt };
        for (i, (id, retry_key)) in [("f2", Some("key-b")), ("f3", None)].into_iter().enumerate() {
            let base = 10 * (i as u8 + 1);
            s.create_family(&bound(id), &h(base + 1)).unwrap();
            let r = s.rotate_with_grace(&h(base + 1), &h(base + 2), "c1", &with(Some("key-a")), 1100).unwrap();
            assert!(matches!(r, Rotation::Rotated(_)));
            let r = s.rotate_with_grace(&h(base + 1), &h(base + 3), "c1", &with(retry_key), 1101).unwrap();
            assert_eq!(r, Rotation::Reused, "{id}: a retry with key {retry_key:?}");
            assert_eq!(current_id(&*s, &h(base + 2), 1101), None, "{id}: the family is revoked");
        }
        s.create_family(&bound("f4"), &h(41)).unwrap();
        let r = s.rotate_with_grace(&h(41), &h(42), "c1", &with(Some("key-a")), 1100).unwrap();
        assert!(matches!(r, Rotation::Rotated(_)));
        let r = s.rotate_with_grace(&h(41), &h(43), "c1", &with(Some("key-a")), 1101).unwrap();
        let Rotation::Retried(f) = r else { panic!("the same key gets the grace: {r:?}") };
        assert_eq!(f.jkt.as_deref(), Some("key-a"));
        assert_eq!(current_id(&*s, &h(43), 1101).as_deref(), Some("f4"));
    }
}

#[test]
fn concurrent_grace_retries_leave_exactly_one_current_token() {
    let (_dir, file) = file_store();
    concurrent_retries_on(&[Arc::new(file)]);
    // Two handles on one Redis: two gateway instances.
    let server = RedisServer::start(false);
    concurrent_retries_on(&[Arc::new(redis_store(&server, "g:")), Arc::new(redis_store(&server, "g:"))]);
}

/// Sixteen threads retry the same just-rotated token at once, spread over `handles`.
fn concurrent_retries_on(handles: &[Arc<dyn Store>]) {
    let s = Arc::clone(&handles[0]);
    s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
    assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &grace(30), 1100).unwrap(), Rotation::Rotated(_)));
    let barrier = Arc::new(Barrier::new(16));
    let outcomes: Vec<Rotation> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..16u8)
            .map(|i| {
                let (s, barrier) = (Arc::clone(&handles[usize::from(i) % handles.len()]), Arc::clone(&barrier));
                scope.spawn(move || {
                    barrier.wait();
                    s.rotate_with_grace(&h(1), &h(100 + i), "c1", &grace(30), 1101).unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(outcomes.iter().all(|o| matches!(o, Rotation::Retried(_))), "{outcomes:?}");
    let live: Vec<u8> = (0..16).filter(|i| current_id(&*s, &h(100 + i), 1101).is_some()).collect();
    assert_eq!(live.len(), 1, "exactly one of the 16 new tokens is current: {live:?}");
    assert_eq!(current_id(&*s, &h(2), 1101), None);
    // The family is not revoked: the one current token rotates.
    let r = s.rotate_with_grace(&h(100 + live[0]), &h(200), "c1", &grace(30), 1102).unwrap();
    assert!(matches!(r, Rotation::Rotated(_)), "{r:?}");
}

#[test]
fn reuse_grace_survives_reopen() {
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open();
            s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
            assert!(matches!(s.rotate_with_grace(&h(1), &h(2), "c1", &grace(30), 1100).unwrap(), Rotation::Rotated(_)));
        }
        // Another handle (a restart, or another instance) knows which token the rotation replaced.
        let s = b.open();
        assert!(matches!(s.rotate_with_grace(&h(1), &h(3), "c1", &grace(30), 1101).unwrap(), Rotation::Retried(_)));
        assert_eq!(current_id(&*s, &h(2), 1101), None);
        assert_eq!(current_id(&*s, &h(3), 1101).as_deref(), Some("f1"));
    }
}

#[test]
fn revoke_family_via_current_or_old_token() {
    for (_b, s) in stores() {
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.rotate(&h(1), &h(2), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        s.create_family(&family("f2", "c1", "alice"), &h(11)).unwrap();
        assert!(matches!(s.rotate(&h(11), &h(12), "c1", 1100).unwrap(), Rotation::Rotated(_)));

        // Via the old token, with the client check.
        assert!(!s.revoke_family(&h(1), Some("c2")).unwrap());
        assert!(s.current_family(&h(2), 1200).unwrap().is_some());
        assert!(s.revoke_family(&h(1), Some("c1")).unwrap());
        assert_eq!(s.current_family(&h(2), 1200).unwrap(), None);
        assert_eq!(s.rotate(&h(2), &h(3), "c1", 1200).unwrap(), Rotation::Invalid);
        assert!(!s.revoke_family(&h(2), None).unwrap(), "already revoked");

        // Via the current token; the other family is untouched until then.
        assert!(s.current_family(&h(12), 1200).unwrap().is_some());
        assert!(s.revoke_family(&h(12), None).unwrap());
        assert_eq!(s.current_family(&h(12), 1200).unwrap(), None);
    }
}

#[test]
fn revoke_client_with_and_without_sub() {
    for (_b, s) in stores() {
        s.create_family(&family("a1", "c1", "alice"), &h(1)).unwrap();
        s.create_family(&family("a2", "c1", "alice"), &h(2)).unwrap();
        s.create_family(&family("b1", "c1", "bob"), &h(3)).unwrap();
        s.create_family(&family("o1", "c10", "alice"), &h(4)).unwrap(); // a client whose id extends "c1"
        s.create_family(&family("o2", "c0", "alice"), &h(5)).unwrap();

        assert_eq!(s.revoke_client("c1", Some("alice")).unwrap(), 2);
        assert_eq!(s.current_family(&h(1), 1100).unwrap(), None);
        assert_eq!(s.current_family(&h(2), 1100).unwrap(), None);
        assert!(s.current_family(&h(3), 1100).unwrap().is_some(), "bob's family stays");

        assert_eq!(s.revoke_client("c1", None).unwrap(), 1, "only bob's was still live");
        assert_eq!(s.current_family(&h(3), 1100).unwrap(), None);
        assert!(s.current_family(&h(4), 1100).unwrap().is_some(), "other clients untouched");
        assert!(s.current_family(&h(5), 1100).unwrap().is_some(), "other clients untouched");
        assert_eq!(s.revoke_client("nobody", None).unwrap(), 0);
    }
}

#[test]
fn create_refuses_duplicates() {
    for (_b, s) in stores() {
        s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
        assert!(matches!(s.create_family(&family("f1", "c1", "alice"), &h(2)), Err(StoreError::Conflict(_))));
        assert!(matches!(s.create_family(&family("f2", "c1", "alice"), &h(1)), Err(StoreError::Conflict(_))));
        // Rotating onto a hash already in use is refused and changes nothing.
        s.create_family(&family("f3", "c1", "alice"), &h(3)).unwrap();
        let err = s.rotate(&h(3), &h(1), "c1", 1100).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        assert!(!err.to_string().contains("1, 1, 1"), "no hash in messages: {err}");
        assert!(s.current_family(&h(3), 1100).unwrap().is_some());
        assert!(s.current_family(&h(2), 1100).unwrap().is_none());
    }
}

#[test]
fn denied_jti_until_exp_and_after_reopen() {
    // Times near the wall clock: Redis expires denials on it.
    let t = wall_now();
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open();
            assert!(!s.is_jti_denied("j1", t + 100));
            s.deny_jti("j1", t + 200).unwrap();
            assert!(s.is_jti_denied("j1", t + 100));
            assert!(s.is_jti_denied("j1", t + 200));
            assert!(!s.is_jti_denied("j1", t + 201));
            assert!(!s.is_jti_denied("j2", t + 100));
            // An earlier exp does not shorten a denial.
            s.deny_jti("j1", t + 150).unwrap();
            assert!(s.is_jti_denied("j1", t + 200));
        }
        let s = b.open();
        assert!(s.is_jti_denied("j1", t + 200), "denial lost on reopen");
        assert!(!s.is_jti_denied("j1", t + 201));
        assert!(!s.is_jti_denied("j2", t + 100));
    }
}

#[test]
fn jti_once_then_replay_and_after_reopen() {
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open();
            assert!(s.use_jti_once("c1", "a1", 500, 100).unwrap());
            assert!(!s.use_jti_once("c1", "a1", 500, 101).unwrap());
            assert!(s.use_jti_once("c2", "a1", 500, 101).unwrap(), "jtis are per client");
            assert!(s.use_jti_once("c1:a1", "x", 500, 101).unwrap(), "no collision through separators");
            assert!(s.use_jti_once("c1", "a1:x", 500, 101).unwrap(), "no collision through separators");
        }
        let s = b.open();
        assert!(!s.use_jti_once("c1", "a1", 500, 102).unwrap(), "replay accepted after reopen");
        assert!(!s.use_jti_once("c2", "a1", 500, 102).unwrap());
        // Past the recorded lifetime, the jti is free again (the assertion's own exp check is the
        // caller's job).
        assert!(s.use_jti_once("c1", "a1", 900, 501).unwrap());
    }
}

#[test]
fn jti_once_is_atomic_across_threads() {
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        jti_once_atomic_on(b.open().as_ref());
        if let Backend::Redis(server) = &b {
            // Across two instances too.
            let (one, two) = (redis_store(server, "b:"), redis_store(server, "b:"));
            let barrier = Barrier::new(2);
            let run = |s: &RedisStore| {
                barrier.wait();
                s.use_jti_once("c1", "same", 500, 100).unwrap()
            };
            let firsts = std::thread::scope(|scope| {
                let (run, one, two) = (&run, &one, &two);
                let a = scope.spawn(move || run(one));
                let b = scope.spawn(move || run(two));
                [a.join().unwrap(), b.join().unwrap()]
            });
            assert_eq!(firsts.iter().filter(|&&f| f).count(), 1, "{firsts:?}");
        }
    }
}

fn jti_once_atomic_on(s: &dyn Store) {
    let barrier = Barrier::new(6);
    let firsts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    s.use_jti_once("c1", "same", 500, 100).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).filter(|&first| first).count()
    });
    assert_eq!(firsts, 1);
}

const POLICY: LockoutPolicy =
    LockoutPolicy { max_failures: 3, window_secs: 300, base_wait_secs: 60, max_wait_secs: 200 };

#[test]
fn lockout_locks_doubles_and_caps() {
    for (_b, s) in stores() {
        let k = "user:alice";
        assert_eq!(s.lock_state(k, 1000).unwrap(), LockState::default());
        assert_eq!(s.record_failure(k, 1000, &POLICY).unwrap(), LockState { locked_until: None, failures: 1 });
        assert_eq!(s.record_failure(k, 1001, &POLICY).unwrap(), LockState { locked_until: None, failures: 2 });
        assert_eq!(s.lock_state(k, 1001).unwrap(), LockState { locked_until: None, failures: 2 });
        // The max-th locks for base.
        let st = s.record_failure(k, 1002, &POLICY).unwrap();
        assert_eq!(st.locked_until, Some(1062));
        assert_eq!(s.lock_state(k, 1061).unwrap().locked_until, Some(1062));
        // Failures while locked change nothing.
        assert_eq!(s.record_failure(k, 1010, &POLICY).unwrap().locked_until, Some(1062));
        assert_eq!(s.lock_state(k, 1062).unwrap().locked_until, None, "lock over");

        // Next lockout doubles: 120.
        s.record_failure(k, 1100, &POLICY).unwrap();
        s.record_failure(k, 1101, &POLICY).unwrap();
        assert_eq!(s.record_failure(k, 1102, &POLICY).unwrap().locked_until, Some(1222));
        // Third would be 240, capped at 200.
        for t in 1300..1303 {
            s.record_failure(k, t, &POLICY).unwrap();
        }
        assert_eq!(s.lock_state(k, 1302).unwrap().locked_until, Some(1502));

        // Other keys are independent.
        assert_eq!(s.lock_state("client:c1", 1302).unwrap(), LockState::default());
    }
}

#[test]
fn lockout_window_and_decay() {
    for (_b, s) in stores() {
        let k = "client:c1";
        // Failures spread over more than the window never lock.
        for t in [1000, 1001, 1300, 1301, 1600, 1601] {
            assert_eq!(s.record_failure(k, t, &POLICY).unwrap().locked_until, None, "at {t}");
        }
        // Lock (60), then wait max_wait past its end: the doubling resets to base.
        for t in 2000..2003 {
            s.record_failure(k, t, &POLICY).unwrap();
        }
        assert_eq!(s.lock_state(k, 2002).unwrap().locked_until, Some(2062));
        for t in 2262..2265 {
            s.record_failure(k, t, &POLICY).unwrap();
        }
        assert_eq!(s.lock_state(k, 2264).unwrap().locked_until, Some(2324), "lockout count not decayed");
        // Without waiting that long it doubles.
        for t in 2400..2403 {
            s.record_failure(k, t, &POLICY).unwrap();
        }
        assert_eq!(s.lock_state(k, 2402).unwrap().locked_until, Some(2522));
    }
}

#[test]
fn clear_failures_keeps_an_ongoing_lock() {
    for (_b, s) in stores() {
        let k = "user:bob";
        s.record_failure(k, 1000, &POLICY).unwrap();
        s.record_failure(k, 1001, &POLICY).unwrap();
        s.clear_failures(k).unwrap();
        assert_eq!(s.lock_state(k, 1002).unwrap(), LockState::default());
        // Needs a full run again.
        s.record_failure(k, 1003, &POLICY).unwrap();
        assert_eq!(s.record_failure(k, 1004, &POLICY).unwrap(), LockState { locked_until: None, failures: 2 });
        assert_eq!(s.record_failure(k, 1005, &POLICY).unwrap().locked_until, Some(1065));
        s.clear_failures(k).unwrap();
        assert_eq!(s.lock_state(k, 1010).unwrap().locked_until, Some(1065), "clear must not lift a lock");
        // And the lockout count survives a success: the next lock doubles.
        s.record_failure(k, 1070, &POLICY).unwrap();
        s.record_failure(k, 1071, &POLICY).unwrap();
        s.clear_failures(k).unwrap();
        for t in 1072..1075 {
            s.record_failure(k, t, &POLICY).unwrap();
        }
        assert_eq!(s.lock_state(k, 1074).unwrap().locked_until, Some(1194));
        s.clear_failures("user:nobody").unwrap();
    }
}

#[test]
fn lockout_survives_reopen() {
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open();
            for t in 1000..1003 {
                s.record_failure("user:alice", t, &POLICY).unwrap();
            }
        }
        assert_eq!(b.open().lock_state("user:alice", 1010).unwrap().locked_until, Some(1062));
    }
}

#[test]
fn family_survives_reopen() {
    for b in durable_backends() {
        eprintln!("backend: {}", b.name());
        {
            let s = b.open();
            s.create_family(&family("f1", "c1", "alice"), &h(1)).unwrap();
            s.create_family(&family("f2", "c1", "alice"), &h(11)).unwrap();
            assert!(matches!(s.rotate(&h(11), &h(12), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        }
        let s = b.open();
        let Rotation::Rotated(f) = s.rotate(&h(1), &h(2), "c1", 1100).unwrap() else { panic!("family lost") };
        assert_eq!(f, Family { last_used: 1100, ..family("f1", "c1", "alice") });
        // The rotation before the restart stuck: the old token is reuse.
        assert_eq!(s.rotate(&h(11), &h(13), "c1", 1200).unwrap(), Rotation::Reused);
    }
}

/// redb only: it keeps rows until purged. Redis expires them by TTL on its own clock (see
/// `store::redis::tests`).
#[test]
fn purge_drops_the_dead_and_keeps_the_live() {
    let (dir, file) = file_store();
    let stores: Vec<(Option<tempfile::TempDir>, RedbStore)> =
        vec![(Some(dir), file), (None, RedbStore::in_memory().unwrap())];
    for (dir, s) in stores {
        // f1: live; f2: absolute-expired at 5000; f3: revoked but not expired; f4: idle-dead.
        s.create_family(&Family { last_used: 4400, ..family("f1", "c1", "alice") }, &h(1)).unwrap();
        assert!(matches!(s.rotate(&h(1), &h(2), "c1", 4500).unwrap(), Rotation::Rotated(_)));
        s.create_family(&Family { expires: 5000, idle_secs: 0, ..family("f2", "c1", "alice") }, &h(20)).unwrap();
        assert!(matches!(s.rotate(&h(20), &h(21), "c1", 4600).unwrap(), Rotation::Rotated(_)));
        s.create_family(&Family { idle_secs: 0, ..family("f3", "c1", "alice") }, &h(30)).unwrap();
        assert!(matches!(s.rotate(&h(30), &h(31), "c1", 4700).unwrap(), Rotation::Rotated(_)));
        assert!(s.revoke_family(&h(31), None).unwrap());
        s.create_family(&Family { last_used: 4000, ..family("f4", "c1", "bob") }, &h(40)).unwrap();
        s.deny_jti("old", 4000).unwrap();
        s.deny_jti("new", 6000).unwrap();
        assert!(s.use_jti_once("c1", "old", 4000, 1000).unwrap());
        assert!(s.use_jti_once("c1", "new", 6000, 1000).unwrap());
        for t in 4900..4903 {
            s.record_failure("user:locked", t, &POLICY).unwrap(); // locked till 4962, remembered till 5162
        }
        s.record_failure("user:stale", 4000, &POLICY).unwrap(); // window over at 4300

        // families f2,f4 + their index rows (4) + their 3 token hashes, 1 denied jti, 1 used
        // jti, 1 lockout row.
        assert_eq!(s.purge_expired(5000).unwrap(), 10);
        assert_eq!(s.purge_expired(5000).unwrap(), 0, "second purge finds nothing");

        assert!(!s.is_jti_denied("old", 3000), "purged from memory too");
        assert!(s.is_jti_denied("new", 5000));
        assert!(!s.use_jti_once("c1", "new", 6000, 5000).unwrap());
        assert!(s.use_jti_once("c1", "old", 9000, 3000).unwrap(), "purged row no longer blocks");
        assert_eq!(s.lock_state("user:locked", 4950).unwrap().locked_until, Some(4962));
        assert!(s.current_family(&h(2), 5000).unwrap().is_some());
        assert_eq!(s.rotate(&h(1), &h(3), "c1", 5000).unwrap(), Rotation::Reused, "old tokens of live families kept");
        assert_eq!(s.rotate(&h(30), &h(32), "c1", 5000).unwrap(), Rotation::Reused, "revoked, unexpired family kept");
        assert_eq!(s.rotate(&h(40), &h(41), "c1", 5000).unwrap(), Rotation::Invalid);
        // The purged families' tokens are unknown now: their hashes may be used again.
        s.create_family(&family("f5", "c1", "alice"), &h(20)).unwrap();
        s.create_family(&family("f6", "c1", "alice"), &h(21)).unwrap();

        if let Some(dir) = dir {
            drop(s);
            let s = reopen(dir.path());
            assert!(!s.is_jti_denied("old", 3000), "purge persisted");
            assert!(s.is_jti_denied("new", 5000));
        }
    }
}

#[test]
fn second_open_of_the_same_file_is_refused() {
    let (dir, _s) = file_store();
    let path = dir.path().join("state").join("tokengate.redb");
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::InUse(_)), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn unwritable_locations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The parent "folder" is a regular file.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = RedbStore::open(&file.join("tokengate.redb")).unwrap_err();
    assert!(matches!(err, StoreError::Unwritable { .. }), "{err:?}");
    assert!(err.to_string().contains("plain"), "names the path: {err}");
    // sysfs refuses new files and folders even to root.
    let err = RedbStore::open(Path::new("/sys/tokengate-test/tokengate.redb")).unwrap_err();
    assert!(matches!(err, StoreError::Unwritable { .. }), "{err:?}");
    let err = RedbStore::open(Path::new("/sys/tokengate.redb")).unwrap_err();
    assert!(matches!(err, StoreError::Unwritable { .. }), "{err:?}");
}

#[test]
fn corrupt_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("garbage.redb"), "names the path: {err}");
}

#[test]
fn lock_row_rules() {
    // Pure rules, shared by all backends: a zero max_failures locks on the first failure, and
    // huge lockout counts saturate at max_wait instead of overflowing.
    let p = LockoutPolicy { max_failures: 0, window_secs: 10, base_wait_secs: 5, max_wait_secs: 1000 };
    let r = LockRow::default().fail(100, &p);
    assert_eq!(r.state(100).locked_until, Some(105));
    let r = LockRow { lockouts: 200, locked_until: 100, ..LockRow::default() }.fail(101, &p);
    assert_eq!(r.state(101).locked_until, Some(1101));
    assert_eq!(r.state(u64::MAX), LockState::default());
}

#[test]
fn damaged_file_is_an_error_not_a_panic() {
    // Magic, header, first pages, later pages: each damage must be refused, never trusted.
    for (start, len) in [(0usize, 64usize), (64, 512), (4096, 4096), (8192, 16384)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("tokengate.redb");
        {
            let s = reopen(dir.path());
            for i in 0..50u8 {
                s.create_family(&family(&format!("f{i}"), "c1", "alice"), &h(i)).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[start..start + len] {
            *b ^= 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let opened = std::panic::catch_unwind(|| RedbStore::open(&path).map(|_| ()));
        let err = opened.expect("panicked on a damaged file").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "damage at {start}: {err:?}");
    }
}

/// Token hash of the i-th family of the crash test.
fn crash_hash(i: u32, generation: u8) -> TokenHash {
    let mut t = [generation; 32];
    t[..4].copy_from_slice(&i.to_be_bytes());
    t
}

/// Env var telling [`crash_writer_child`] where to write.
const CRASH_DIR_VAR: &str = "TOKENGATE_STORE_CRASH_DIR";

/// The child side of [`kill_9_loses_no_committed_write`] (the same test, re-run in a child process
/// with `CRASH_DIR_VAR` set): writes as fast as it can, reporting every `Ok` until it is killed.
fn crash_writer(dir: &Path) {
    let s = reopen(dir);
    for i in 0..100_000u32 {
        s.create_family(&family(&format!("f{i}"), "c1", "alice"), &crash_hash(i, 1)).unwrap();
        assert!(matches!(s.rotate(&crash_hash(i, 1), &crash_hash(i, 2), "c1", 1100).unwrap(), Rotation::Rotated(_)));
        println!("committed {i}");
    }
}

#[test]
fn kill_9_loses_no_committed_write() {
    use std::io::BufRead;
    if let Some(dir) = std::env::var_os(CRASH_DIR_VAR) {
        return crash_writer(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::kill_9_loses_no_committed_write", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut committed = None;
    for line in lines {
        if let Some(i) = line.unwrap().strip_prefix("committed ") {
            committed = Some(i.parse::<u32>().unwrap());
            if committed == Some(30) {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, most likely in the middle of the next write
    child.wait().unwrap();
    let last = committed.expect("child reported no commit");
    assert_eq!(last, 30);
    let s = reopen(dir.path());
    for i in 0..=last {
        assert!(s.current_family(&crash_hash(i, 2), 1100).unwrap().is_some(), "family {i} lost");
        assert_eq!(
            s.rotate(&crash_hash(i, 1), &crash_hash(i, 3), "c1", 1100).unwrap(),
            Rotation::Reused,
            "rotation {i} lost"
        );
    }
}
