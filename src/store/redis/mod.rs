//! [`RedisStore`]: the [`Store`] shared by several gateway instances through one Redis server.
//!
//! # Atomic by construction
//! Every check-and-change is one Lua script ([`scripts`]) on keys of one hash tag, so that of N
//! concurrent refreshes of one token, on any number of instances, exactly one rotates. Token
//! hashes are stored hex-encoded; tokens themselves never reach Redis.
//!
//! # Keys (after `state.key_prefix`)
//! - `t:<hash>`: refresh-token hash -> `<family expires>:<family id>`, until the family's absolute
//!   expiry. Immutable once written: a lookup outside any script is safe.
//! - `f:{<family id>}` (hash) and `h:{<family id>}` (set of every hash that was ever current): the
//!   family; both expire when the family dies (absolute or idle). The hash holds the current
//!   token's hash and, in `prev` / `prev_at`, the one the latest rotation replaced and when (for
//!   the reuse grace; absent in families never rotated).
//! - `c:<client id>`: sorted set of the client's families, for `revoke_client`.
//! - `a:<len>:<client id>:<jti>`: a used client-assertion jti, until the assertion's exp.
//! - `l:<key>`: a lockout row, until its `forget_at`.
//! - `d:<proof id>`: a DPoP proof seen, for its replay window.
//! - `q:<route length>:<route>:<key kind>:<caller>`: a shared quota's TAT, until its bucket is full.
//! - `{denylist}:jtis` (sorted set jti -> exp) and `{denylist}:stream`: denied access-token jtis
//!   and the stream every instance follows ([`follow`]).
//!
//! # Failover and replication
//! With `state.sentinels`, every connection finds the primary anew ([`sentinel`]), so the
//! reconnection after a failover reaches the promoted replica; with `state.wait_replicas`, each
//! grant or revocation waits for that many replicas ([`replication`]) before it is answered.
//!
//! # Blocking
//! The trait is synchronous and called from blocking threads; the store owns a one-thread tokio
//! runtime that drives its connections, and each call waits on it with `Handle::block_on`,
//! bounded by `state.timeout_ms`. Its own runtime because the gateway's may be current-thread
//! runtimes (one per core), whose I/O no other thread can drive. Never call a method other than
//! [`Store::is_jti_denied`] from inside an async task.

mod announce;
mod connect;
mod follow;
mod keys;
mod lockout;
mod relay;
mod replication;
mod request_path;
mod scripts;
mod sentinel;
#[cfg(test)]
mod tests;
mod tls_relay;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};

/// Wall-clock Unix seconds, for what the trait is not told the time of (denials).
pub(crate) use crate::auth::unix_now as wall_now;

pub use self::connect::RedisOptions;
use self::keys::{hex, Keys};
use self::relay::Relay;
use self::scripts::LOCK_CAS_TRIES;
use super::denylist::DenyList;
use super::health::Health;
use super::{Family, Grace, LockState, LockoutPolicy, Rotation, Store, StoreError, StoreStatus, TokenHash};

/// Denials the stream keeps (approximately); older ones are still in the denied set, which a
/// reconnecting instance reads whole.
const STREAM_MAXLEN: u64 = 10_000;

/// Seconds from `now` until `deadline`, at least 1 (Redis refuses a zero TTL).
fn ttl(deadline: u64, now: u64) -> u64 {
    deadline.saturating_sub(now).max(1)
}

/// When a family dies if unused from `last_used` on.
fn deadline(f: &Family, last_used: u64) -> u64 {
    if f.idle_secs == 0 {
        f.expires
    } else {
        f.expires.min(last_used.saturating_add(f.idle_secs))
    }
}

fn redis_err(e: RedisError) -> StoreError {
    StoreError::Redis(e)
}

/// A value Redis handed back that tokengate never writes.
fn bad_value(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis: unexpected {what}"))
}

/// The shared store: see the module documentation.
pub struct RedisStore {
    /// Drives the connections and the stream follower; shut down with the store.
    rt: Option<tokio::runtime::Runtime>,
    /// `rt`'s handle, to wait on operations from blocking threads.
    handle: tokio::runtime::Handle,
    /// Multiplexed, reconnecting connection for every operation but the stream's blocking read.
    conn: ConnectionManager,
    /// For the connections that cannot be shared: the key announcements' subscription.
    client: redis::Client,
    /// Key names.
    keys: Arc<Keys>,
    /// Denied jtis in memory, for the proxy; fed by `deny_jti` and the stream follower.
    denied: Arc<DenyList>,
    /// `state.timeout_ms`.
    timeout: Duration,
    /// Reachability as the last call and the follower saw it.
    health: Arc<Health>,
    /// `state.wait_replicas`.
    wait_replicas: u32,
    /// For `rediss://` or sentinels: the relay redis-rs connects through, held as long as the store.
    _relay: Option<Relay>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("denied_jtis", &self.denied.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an async context; this does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl RedisStore {
    /// Connects, warns when the server persists nothing, loads the denied jtis and starts
    /// following new denials. An unreachable server is an error: without the denylist the proxy
    /// could let a revoked token through. Callable from any thread, async or not.
    pub fn open(opts: RedisOptions) -> Result<RedisStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tokengate-redis")
            .enable_all()
            .build()
            .map_err(StoreError::Io)?;
        let handle = rt.handle().clone();
        let (client, relay) = match connect::client_for(&opts, &handle) {
            Ok(c) => c,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        let keys = Arc::new(Keys { prefix: opts.key_prefix.clone() });
        let denied = Arc::new(DenyList::default());
        let server = crate::config::redacted_url(&opts.url);
        let setup = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.timeout))
                .set_response_timeout(Some(opts.timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            // One plain attempt first: the connection manager retries a failed handshake until the
            // timeout, which would hide why (an untrusted certificate, a refused password).
            drop(client.get_multiplexed_async_connection().await?);
            let mut conn = client.get_connection_manager_with_config(config).await?;
            warn_if_not_persistent(&mut conn, &server).await;
            let last = follow::resync(&mut conn, &keys, &denied).await?;
            Ok::<_, RedisError>((conn, last))
        };
        // The gateway opens the store from an async task, where block_on would panic: wait on
        // a plain thread instead.
        let connected = std::thread::scope(|s| {
            s.spawn(|| handle.block_on(async { tokio::time::timeout(opts.timeout * 2, setup).await })).join()
        });
        let connected = match connected {
            Ok(Ok(Ok(c))) => Ok(c),
            // Through a relay (TLS, sentinels) the relay knows why; redis-rs saw only a closed connection.
            Ok(Ok(Err(e))) => match relay.as_ref().and_then(Relay::last_error) {
                Some(why) => Err(format!("state.url: redis at {server}: {why}")),
                None => Err(format!("state.url: redis at {server}: {e}")),
            },
            Ok(Err(_)) => {
                Err(format!("state.url: redis at {server} did not answer within {} ms", (opts.timeout * 2).as_millis()))
            }
            Err(_) => Err("state.url: the connecting thread panicked".into()),
        };
        let (conn, last) = match connected {
            Ok(c) => c,
            Err(e) => {
                // Dropping a runtime blocks, which panics inside the gateway's async start.
                rt.shutdown_background();
                return Err(StoreError::Unavailable(e));
            }
        };
        let health = Arc::new(Health::default());
        health.stream_event();
        handle.spawn(follow::run(client.clone(), keys.clone(), denied.clone(), last, opts.timeout, health.clone()));
        tracing::info!(server = %server, denied_jtis = denied.len(), "state store: redis");
        Ok(RedisStore {
            rt: Some(rt),
            handle,
            conn,
            client,
            keys,
            denied,
            timeout: opts.timeout,
            health,
            wait_replicas: opts.wait_replicas,
            _relay: relay,
        })
    }

    /// Runs one operation on the store's runtime, failing with [`StoreError::Timeout`] past
    /// `state.timeout_ms`. The future is dropped at the deadline; a script already sent may still
    /// run, which is why each one is a complete, consistent step.
    fn run<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.handle.block_on(bounded(self.timeout, &self.health, op))
    }

    /// The family id and absolute expiry a token hash belongs to, if Redis knows it.
    async fn lookup(&self, con: &mut ConnectionManager, token: &TokenHash) -> Result<Option<Link>, StoreError> {
        let v: Option<String> = con.get(self.keys.token(token)).await.map_err(redis_err)?;
        let Some(v) = v else { return Ok(None) };
        let (expires, family_id) = v.split_once(':').ok_or_else(|| bad_value("token lookup value"))?;
        let expires = expires.parse().map_err(|_| bad_value("token lookup expiry"))?;
        Ok(Some(Link { family_id: family_id.to_owned(), expires }))
    }

    /// Registers `token` as belonging to `family_id` (absolute expiry `expires`); false if the
    /// hash is taken.
    async fn register(
        &self,
        con: &mut ConnectionManager,
        token: &TokenHash,
        family_id: &str,
        expires: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.token(token))
            .arg(format!("{expires}:{family_id}"))
            .arg("NX")
            .arg("EX")
            .arg(ttl(expires, now))
            .query_async(con)
            .await
            .map_err(redis_err)?;
        Ok(set.is_some())
    }
}

/// `op` bounded by `timeout` (dropped at the deadline: a script already sent may still run), with
/// the server's reachability recorded: a refused, lost or silent server counts, a value tokengate
/// cannot read does not.
async fn bounded<T>(
    timeout: Duration,
    health: &Health,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result =
        tokio::time::timeout(timeout, op).await.unwrap_or(Err(StoreError::Timeout(timeout.as_millis() as u64)));
    match &result {
        Err(e @ (StoreError::Redis(_) | StoreError::Timeout(_))) => health.unreachable(e),
        Err(_) => {}
        Ok(_) => health.reached(),
    }
    result
}

/// Where a token hash points.
struct Link {
    /// The family the token was issued in.
    family_id: String,
    /// The family's absolute expiry (the lookup key lives until then).
    expires: u64,
}

/// Logs a warning when the server would lose everything on a restart (no AOF, no RDB
/// snapshots): revoked tokens and rotated refresh tokens would come back to life. Servers that
/// refuse CONFIG (managed services) are not judged.
async fn warn_if_not_persistent(con: &mut ConnectionManager, server: &str) {
    let get = |name: &'static str| {
        let mut con = con.clone();
        async move {
            let v: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut con).await;
            v.ok().and_then(|v| v.get(1).cloned())
        }
    };
    match (get("appendonly").await, get("save").await) {
        (Some(aof), Some(save)) if aof == "no" && save.trim().is_empty() => tracing::warn!(
            server = %server,
            "state store: this redis persists nothing (appendonly no, no save points): a restart of it \
             forgets every revocation and rotation"
        ),
        (Some(_), Some(_)) => {}
        _ => tracing::debug!(server = %server, "state store: CONFIG GET refused; persistence not checked"),
    }
}

/// A family hash as read with HGETALL, checked against a presented token.
fn parse_family(
    family_id: &str,
    mut m: std::collections::HashMap<String, String>,
) -> Result<(Family, bool, String), StoreError> {
    // Absent in families created before DPoP; '' for none.
    let jkt = m.remove("jkt").filter(|j| !j.is_empty());
    let mut take = |k: &str| m.remove(k).ok_or_else(|| bad_value("family hash"));
    let num = |v: String| v.parse::<u64>().map_err(|_| bad_value("family number"));
    let family = Family {
        family_id: family_id.to_owned(),
        client_id: take("client")?,
        sub: take("sub")?,
        scope: take("scope")?,
        created: num(take("created")?)?,
        expires: num(take("expires")?)?,
        idle_secs: num(take("idle")?)?,
        last_used: num(take("last_used")?)?,
        jkt,
    };
    let revoked = take("revoked")? == "1";
    Ok((family, revoked, take("current")?))
}

impl Store for RedisStore {
    fn available(&self) -> bool {
        self.health.available()
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            backend: "redis",
            error: self.health.error(),
            denied_jtis: self.denied.len(),
            stream: Some(self.health.stream()),
        }
    }

    fn create_family(&self, family: &Family, token: &TokenHash) -> Result<(), StoreError> {
        let id = family.family_id.as_str();
        if id.contains(['{', '}']) {
            return Err(StoreError::Db("a family id must not contain braces".into()));
        }
        self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let now = family.last_used;
            if !self.register(&mut con, token, id, family.expires, now).await? {
                return Err(StoreError::Conflict("refresh token hash"));
            }
            // The index first: an index entry without a family is skipped, a family missing
            // from the index would escape revoke_client.
            let _: i64 = scripts::INDEX
                .key(self.keys.client(&family.client_id))
                .arg(id)
                .arg(family.expires)
                .arg(now)
                .arg(ttl(family.expires, now))
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            let created: i64 = scripts::CREATE
                .key(self.keys.family(id))
                .key(self.keys.family_tokens(id))
                .arg(&family.client_id)
                .arg(&family.sub)
                .arg(&family.scope)
                .arg(family.created)
                .arg(family.expires)
                .arg(family.idle_secs)
                .arg(family.last_used)
                .arg(hex(token))
                .arg(ttl(deadline(family, now), now))
                .arg(family.jkt.as_deref().unwrap_or(""))
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            if created == 0 {
                let _: Result<i64, _> = con.del(self.keys.token(token)).await;
                return Err(StoreError::Conflict("family id"));
            }
            self.replicated(&mut con, "create_family", started).await
        })
    }

    fn rotate_with_grace(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        client_id: &str,
        grace: &Grace<'_>,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let Some(link) = self.lookup(&mut con, presented).await? else {
                return Ok(Rotation::Invalid);
            };
            // `next` can be looked up before it can become current; if the script then does not
            // rotate, the lookup key is removed (and harmless if that fails: the hash was never
            // current, so presenting it is not reuse).
            if !self.register(&mut con, next, &link.family_id, link.expires, now).await? {
                return Err(StoreError::Conflict("refresh token hash"));
            }
            let out: Vec<String> = scripts::ROTATE
                .key(self.keys.family(&link.family_id))
                .key(self.keys.family_tokens(&link.family_id))
                .arg(hex(presented))
                .arg(hex(next))
                .arg(client_id)
                .arg(now)
                .arg(grace.secs)
                .arg(grace.jkt.unwrap_or(""))
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            // A rotation, a graced retry and a reuse (which revoked the family) all changed it.
            if out.first().is_some_and(|o| o != "invalid") {
                self.replicated(&mut con, "rotate", started).await?;
            }
            match out.first().map(String::as_str) {
                Some(outcome @ ("rotated" | "retried")) if out.len() == 9 => {
                    let num = |i: usize| out[i].parse::<u64>().map_err(|_| bad_value("rotation result"));
                    let family = Family {
                        family_id: link.family_id,
                        client_id: out[1].clone(),
                        sub: out[2].clone(),
                        scope: out[3].clone(),
                        created: num(4)?,
                        expires: num(5)?,
                        idle_secs: num(6)?,
                        last_used: num(7)?,
                        jkt: Some(out[8].clone()).filter(|j| !j.is_empty()),
                    };
                    Ok(if outcome == "retried" { Rotation::Retried(family) } else { Rotation::Rotated(family) })
                }
                Some(outcome @ ("reused" | "invalid")) => {
                    let _: Result<i64, _> = con.del(self.keys.token(next)).await;
                    Ok(if outcome == "reused" { Rotation::Reused } else { Rotation::Invalid })
                }
                _ => Err(bad_value("rotation result")),
            }
        })
    }

    fn current_family(&self, presented: &TokenHash, now: u64) -> Result<Option<Family>, StoreError> {
        self.run(async {
            let mut con = self.conn.clone();
            let Some(link) = self.lookup(&mut con, presented).await? else {
                return Ok(None);
            };
            let m: std::collections::HashMap<String, String> =
                con.hgetall(self.keys.family(&link.family_id)).await.map_err(redis_err)?;
            if m.is_empty() {
                return Ok(None);
            }
            let (family, revoked, current) = parse_family(&link.family_id, m)?;
            Ok((!revoked && current == hex(presented) && family.is_live(now)).then_some(family))
        })
    }

    fn revoke_family(&self, presented: &TokenHash, client_id: Option<&str>) -> Result<bool, StoreError> {
        self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let Some(link) = self.lookup(&mut con, presented).await? else {
                return Ok(false);
            };
            let done: i64 = scripts::REVOKE
                .key(self.keys.family(&link.family_id))
                .key(self.keys.family_tokens(&link.family_id))
                .arg(hex(presented))
                .arg(client_id.unwrap_or(""))
                .arg("")
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            if done == 1 {
                self.replicated(&mut con, "revoke_family", started).await?;
            }
            Ok(done == 1)
        })
    }

    fn revoke_client(&self, client_id: &str, sub: Option<&str>) -> Result<usize, StoreError> {
        self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let ids: Vec<String> = con.zrange(self.keys.client(client_id), 0, -1).await.map_err(redis_err)?;
            if ids.is_empty() {
                return Ok(0);
            }
            // One round trip per thousand families: EVALSHA in a pipeline, after loading.
            let sha: String = scripts::REVOKE.prepare_invoke().load_async(&mut con).await.map_err(redis_err)?;
            let mut revoked = 0;
            for chunk in ids.chunks(1000) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.cmd("EVALSHA")
                        .arg(&sha)
                        .arg(2)
                        .arg(self.keys.family(id))
                        .arg(self.keys.family_tokens(id))
                        .arg("")
                        .arg(client_id)
                        .arg(sub.unwrap_or(""));
                }
                let done: Vec<i64> = pipe.query_async(&mut con).await.map_err(redis_err)?;
                revoked += done.iter().filter(|&&d| d == 1).count();
            }
            if revoked > 0 {
                self.replicated(&mut con, "revoke_client", started).await?;
            }
            Ok(revoked)
        })
    }

    fn deny_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let exp = self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let exp: String = scripts::DENY
                .key(self.keys.denied())
                .key(self.keys.denials())
                .arg(jti)
                .arg(exp)
                .arg(wall_now())
                .arg(STREAM_MAXLEN)
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            let exp = follow::parse_exp(&exp).ok_or_else(|| bad_value("denial expiry"))?;
            // Held in memory here even if unconfirmed: the denial stands at this instance at least.
            if let Err(e) = self.replicated(&mut con, "deny_jti", started).await {
                self.denied.extend([(jti, exp)]);
                return Err(e);
            }
            Ok(exp)
        })?;
        // At once here; the other instances learn it from the stream.
        self.denied.extend([(jti, exp)]);
        Ok(())
    }

    fn is_jti_denied(&self, jti: &str, now: u64) -> bool {
        self.denied.contains(jti, now)
    }

    fn use_jti_once(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> Result<bool, StoreError> {
        self.run(async {
            let started = Instant::now();
            let mut con = self.conn.clone();
            let first: i64 = scripts::ONCE
                .key(self.keys.assertion(client_id, jti))
                .arg(exp)
                .arg(now)
                // Through `exp` inclusive, as the check above reads it.
                .arg(ttl(exp.saturating_add(1), now))
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            if first == 1 {
                self.replicated(&mut con, "use_jti_once", started).await?;
            }
            Ok(first == 1)
        })
    }

    fn remember_proof(&self, id: &[u8; 16], ttl_secs: u64) -> Option<super::ProofCheck> {
        Some(self.proof_call(id, ttl_secs))
    }

    fn take_quota(&self, key: String, ask: crate::quota::Ask) -> Option<super::QuotaCall> {
        Some(self.quota_call(key, ask))
    }

    fn announce_keys(&self, news: &super::KeyNews, only_if_new: bool) -> Option<super::AnnounceCall> {
        Some(self.announce_call(news, only_if_new))
    }

    fn follow_key_announcements(&self, on: super::KeyEventHandler) -> bool {
        self.follow_announcements(on);
        true
    }

    fn record_failure(&self, key: &str, now: u64, policy: &LockoutPolicy) -> Result<LockState, StoreError> {
        self.run(async {
            let mut con = self.conn.clone();
            for _ in 0..LOCK_CAS_TRIES {
                let (raw, row) = self.lock_row(&mut con, key).await?;
                // A row past forget_at is as good as none: start afresh.
                let old = row.filter(|r| now < r.forget_at).unwrap_or_default();
                let new = old.fail(now, policy);
                if new == old {
                    return Ok(new.state(now));
                }
                if self.lock_cas(&mut con, key, &raw, Some(&new), Some(ttl(new.forget_at, now))).await? {
                    return Ok(new.state(now));
                }
            }
            Err(StoreError::Db(format!("lockout row kept changing over {LOCK_CAS_TRIES} tries")))
        })
    }

    fn lock_state(&self, key: &str, now: u64) -> Result<LockState, StoreError> {
        self.run(async {
            let mut con = self.conn.clone();
            Ok(self.lock_row(&mut con, key).await?.1.map(|r| r.state(now)).unwrap_or_default())
        })
    }

    fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.run(async {
            let mut con = self.conn.clone();
            for _ in 0..LOCK_CAS_TRIES {
                let (raw, row) = self.lock_row(&mut con, key).await?;
                let Some(row) = row.filter(|r| r.failures > 0) else {
                    return Ok(());
                };
                // Cleared rows keep their TTL: forget_at does not move.
                if self.lock_cas(&mut con, key, &raw, row.clear().as_ref(), None).await? {
                    return Ok(());
                }
            }
            Err(StoreError::Db(format!("lockout row kept changing over {LOCK_CAS_TRIES} tries")))
        })
    }

    /// Everything else expires by its Redis TTL; only the denied set is scored by exp and
    /// trimmed here (and on every denial).
    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let removed = self.run(async {
            let mut con = self.conn.clone();
            let n: usize = redis::cmd("ZREMRANGEBYSCORE")
                .arg(self.keys.denied())
                .arg("-inf")
                .arg(format!("({now}"))
                .query_async(&mut con)
                .await
                .map_err(redis_err)?;
            Ok(n)
        })?;
        self.denied.retain_live(now);
        Ok(removed)
    }
}
