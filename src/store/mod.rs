//! The durable state behind the token endpoint: refresh-token families, denied access-token
//! `jti`s, used client-assertion `jti`s and failed-login lockout counters.
//!
//! # Why a store
//! Revocations and rotations must survive a restart and a crash: a refresh token that was
//! rotated before a `kill -9` must stay dead afterwards, or reuse detection (RFC 9700 2.2.2) and
//! revocation (RFC 7009) mean nothing. Every mutating call is one transaction that is on disk
//! (fsync) before it returns `Ok`.
//!
//! # Shape
//! [`Store`] is the seam: the embedded [`RedbStore`] (one redb file at `state.path`) is the
//! default; [`RedisStore`] shares the state between several gateway instances
//! (`state.backend = "redis"`); [`open`] picks the one `[state]` names. Every decision that must be atomic across instances, such as "is this
//! token still the current one, and if so replace it", is a single trait method (compare and
//! swap), never a read followed by a write in the caller. The pure parts of those decisions
//! ([`Family::is_live`], [`LockRow`]) live here so that every backend applies the same rules.
//!
//! The store never sees a refresh token, only its SHA-256 ([`TokenHash`]); no error message
//! includes one.
//!
//! # Blocking
//! The methods block on disk or network I/O (except [`Store::is_jti_denied`], always a lookup in
//! memory); async callers must run them on a blocking thread.

mod backend;
mod denylist;
mod health;
mod observed;
mod redb;
mod redis;

#[cfg(test)]
mod tests;

pub use self::backend::open;
pub use self::denylist::DenyList;
pub use self::health::Health;
pub use self::observed::Observed;
pub use self::redb::RedbStore;
pub use self::redis::{RedisOptions, RedisStore};

/// SHA-256 of an opaque refresh token: the store never sees the token itself.
pub type TokenHash = [u8; 32];

/// Why a store operation failed. Messages never include token hashes or tokens.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another handle in this one) holds the state file.
    #[error("state file {0} is in use by another process (is another tokengate running on it?)")]
    InUse(std::path::PathBuf),
    /// The state file or its folder cannot be created or opened for writing.
    #[error("state file {path} is not writable: {source}")]
    Unwritable {
        /// The state file.
        path: std::path::PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The disk holding the state file is full; writes fail until space is freed.
    #[error("state store: no space left on the device holding the state file")]
    Full,
    /// The state file is damaged, not a redb file, or from a newer tokengate.
    #[error("state store is corrupt or not a tokengate state file: {0}")]
    Corrupt(String),
    /// An I/O error reading or writing the state file.
    #[error("state store I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// Any other database failure.
    #[error("state store: {0}")]
    Db(String),
    /// A family id or token hash that must be new is already recorded.
    #[error("state store: this {0} is already recorded")]
    Conflict(&'static str),
    /// The Redis server could not be reached or used at open (the message names `state.url`,
    /// without credentials).
    #[error("{0}")]
    Unavailable(String),
    /// A Redis command failed: connection lost, refused, or an error reply.
    #[error("state store (redis): {0}")]
    Redis(#[source] ::redis::RedisError),
    /// The Redis server did not answer within `state.timeout_ms`.
    #[error("state store (redis): no answer within {0} ms")]
    Timeout(u64),
    /// The primary made the change but fewer replicas than `state.wait_replicas` confirmed it in
    /// time: it could be lost with the primary, so it is not answered as done.
    #[error("state store (redis): {op} confirmed by {acked} of the {wanted} replicas state.wait_replicas asks for")]
    NotReplicated {
        /// The store operation (as the metrics name it).
        op: &'static str,
        /// Replicas that confirmed it.
        acked: u64,
        /// `state.wait_replicas`.
        wanted: u32,
    },
}

/// A refresh-token family: every token issued from one grant by rotation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Family {
    /// Unique id of the family (random, chosen by the caller).
    pub family_id: String,
    /// The client the family was issued to; only it may rotate or use the family.
    pub client_id: String,
    /// Subject (user) of the grant.
    pub sub: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// First grant time (unix seconds); the family dies at `expires` whatever its use.
    pub created: u64,
    /// Absolute end of the family (unix seconds): dead from this instant on.
    pub expires: u64,
    /// The family dies when unused for this long (0: no idle limit).
    pub idle_secs: u64,
    /// Last rotation (or the grant) time, unix seconds.
    pub last_used: u64,
    /// A public client's DPoP key thumbprint: every refresh must prove that key (RFC 9449 5).
    /// Absent in rows written before DPoP existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

impl Family {
    /// Whether the family is within both its absolute and its idle lifetime at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires && (self.idle_secs == 0 || now < self.last_used.saturating_add(self.idle_secs))
    }
}

/// The outcome of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// `presented` was the family's current token: `next` is now current, last_used = now.
    Rotated(Family),
    /// `presented` was an earlier (already rotated) token of the family: the whole family is now
    /// revoked (RFC 9700 2.2.2). Also returned, with no change, when the family was revoked
    /// already, until it expires: the caller can log every replay.
    Reused,
    /// `presented` was the token the family's latest rotation replaced, retried within the
    /// reuse grace by its client (with the family's DPoP key when it is bound): the token that
    /// rotation issued is dead, `next` is current, last_used = now. The window still runs from
    /// that rotation, not from this retry.
    Retried(Family),
    /// Unknown, expired (absolute or idle), bound to another client, or the current token of a
    /// revoked family: nothing changed.
    Invalid,
}

/// What lets a retry of a just-rotated refresh token be answered instead of revoking the family
/// (`tokens.refresh_reuse_grace_secs`): a lost answer is retried by the same client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grace<'a> {
    /// Seconds after a rotation during which its presented token may come again; 0: no grace.
    pub secs: u64,
    /// Thumbprint of the DPoP key the retry proved (None without a proof): a family bound to a
    /// key grants the grace only to that key, so a stolen token with another key is still reuse.
    pub jkt: Option<&'a str>,
}

impl Grace<'_> {
    /// Whether a retry at `now` of the token a rotation at `rotated_at` replaced, in `family`,
    /// is within this grace. Every backend applies this rule (the Redis script mirrors it).
    pub fn covers(&self, family: &Family, rotated_at: u64, now: u64) -> bool {
        self.secs > 0
            && now < rotated_at.saturating_add(self.secs)
            && family.jkt.as_deref().is_none_or(|bound| self.jkt == Some(bound))
    }
}

/// How failed logins lock a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within one window that lock the key (0 is treated as 1).
    pub max_failures: u32,
    /// Length of the failure-counting window, starting at its first failure.
    pub window_secs: u64,
    /// Length of the first lockout; each further one doubles it.
    pub base_wait_secs: u64,
    /// Cap on a lockout's length; also how long without a lockout resets the doubling.
    pub max_wait_secs: u64,
}

/// What a caller needs to know about a login key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Some(t): locked until unix time t.
    pub locked_until: Option<u64>,
    /// Failures counted in the current window.
    pub failures: u32,
}

/// One key's failed-login bookkeeping, as every backend stores it; the rules live here so that
/// all backends lock alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockRow {
    /// Failures counted in the current window.
    pub failures: u32,
    /// End of the current counting window (unix seconds).
    pub window_end: u64,
    /// Lockouts so far (drives the doubling); reset after `max_wait_secs` without a lockout.
    pub lockouts: u32,
    /// End of the latest lockout (unix seconds); in the past when not locked.
    pub locked_until: u64,
    /// From this instant the row carries no information any more and may be dropped.
    pub forget_at: u64,
}

impl LockRow {
    /// The state this row means at `now`.
    pub fn state(&self, now: u64) -> LockState {
        if now >= self.forget_at {
            return LockState::default();
        }
        LockState {
            locked_until: (self.locked_until > now).then_some(self.locked_until),
            failures: if now < self.window_end { self.failures } else { 0 },
        }
    }

    /// The row after one more failure at `now`. A failure while locked changes nothing: the
    /// caller should not have checked the password at all.
    pub fn fail(mut self, now: u64, policy: &LockoutPolicy) -> LockRow {
        if self.locked_until > now {
            return self;
        }
        if self.lockouts > 0 && now >= self.locked_until.saturating_add(policy.max_wait_secs) {
            self.lockouts = 0;
        }
        if self.failures == 0 || now >= self.window_end {
            self.failures = 0;
            self.window_end = now.saturating_add(policy.window_secs);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= policy.max_failures.max(1) {
            self.lockouts = self.lockouts.saturating_add(1);
            self.locked_until = now.saturating_add(lock_wait(policy, self.lockouts));
            // The next lockout needs a fresh run of failures.
            self.failures = 0;
            self.window_end = now;
        }
        self.forget_at = if self.lockouts > 0 {
            self.window_end.max(self.locked_until.saturating_add(policy.max_wait_secs))
        } else {
            self.window_end
        };
        self
    }

    /// The row after a successful login: failures gone, lock and lockout count kept. None when
    /// nothing is left worth keeping.
    pub fn clear(mut self) -> Option<LockRow> {
        if self.lockouts == 0 {
            return None;
        }
        self.failures = 0;
        self.window_end = 0;
        Some(self)
    }
}

/// Length of lockout number `lockouts` (1-based): base * 2^(lockouts-1), capped at max.
fn lock_wait(policy: &LockoutPolicy, lockouts: u32) -> u64 {
    let factor = 1u64.checked_shl(lockouts.saturating_sub(1)).unwrap_or(u64::MAX);
    policy.base_wait_secs.saturating_mul(factor).min(policy.max_wait_secs)
}

/// What `GET /state` reports about the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStatus {
    /// `"redb"` or `"redis"`.
    pub backend: &'static str,
    /// The last error while the backend is failing; None while it answers.
    pub error: Option<String>,
    /// Denied access-token jtis held in memory for the proxy.
    pub denied_jtis: usize,
    /// The denylist stream follower of a shared backend; None for redb.
    pub stream: Option<StreamStatus>,
}

/// The denylist stream follower of a shared backend.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStatus {
    /// Whether it holds a live connection to the stream.
    pub connected: bool,
    /// Seconds since it last heard from the stream; None before the first read.
    pub last_event_age_secs: Option<f64>,
}

/// The state store: see the module documentation. All methods are safe to call from many threads.
/// The answer of [`Store::remember_proof`], on its way.
pub type ProofCheck = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send>>;

/// The answer of [`Store::take_quota`], on its way.
pub type QuotaCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::quota::Grant, StoreError>> + Send>>;

/// The answer of [`Store::announce_keys`], on its way: Ok(true) when it was published.
pub type AnnounceCall = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send>>;

/// What a key announcement says (see [`Store::announce_keys`]): public facts only, never a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyNews {
    /// The `iss` whose published key set changed.
    pub iss: String,
    /// Every kid it publishes now, sorted.
    pub kids: Vec<String>,
    /// A digest of its published JWKS: tells apart two sets of the same kids (a key replaced
    /// under its kid), and lets a restarted issuer skip an announcement nothing changed.
    pub version: String,
}

/// What the follower of key announcements hands the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// An issuer announced a new key set just now.
    Announced(KeyNews),
    /// The follower (re)subscribed: the latest announcement of every issuer, since anything
    /// published while it was away was missed.
    Resync(Vec<KeyNews>),
}

/// Receives [`KeyEvent`]s on the store's own runtime; must not block.
pub type KeyEventHandler = std::sync::Arc<dyn Fn(KeyEvent) + Send + Sync>;

pub trait Store: Send + Sync + 'static {
    /// Whether the backend answered its last call; no I/O. An embedded one always does.
    fn available(&self) -> bool {
        true
    }

    /// Backend, health and denylist size, for `GET /state` and the metrics; no I/O.
    fn status(&self) -> StoreStatus {
        StoreStatus { backend: "custom", error: None, denied_jtis: 0, stream: None }
    }

    /// Records a new family whose current token is `token`.
    fn create_family(&self, family: &Family, token: &TokenHash) -> Result<(), StoreError>;

    /// Atomic rotation: if `presented` is the current token of a live family of `client_id`,
    /// `next` becomes current and last_used = `now`.
    ///
    /// Of two concurrent calls with the same `presented`, exactly one gets [`Rotation::Rotated`];
    /// the other gets [`Rotation::Reused`] and the family is then revoked, the winner's `next`
    /// included. That is what RFC 9700 reuse detection implies: the store cannot tell a client
    /// retrying in parallel from an attacker replaying a stolen token, so a client that refreshes
    /// twice at once loses its grant and must log in again.
    ///
    /// `client_id` must equal the family's client, else [`Rotation::Invalid`] with no change (a
    /// client cannot revoke another's family by replaying its token). Expiry (absolute, idle) is
    /// checked against `now`.
    ///
    /// Both backends implement only [`Store::rotate_with_grace`]; this is it without a grace.
    fn rotate(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        client_id: &str,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.rotate_with_grace(presented, next, client_id, &Grace::default(), now)
    }

    /// [`Store::rotate`] with a reuse grace: `presented` that is not current but is the token
    /// the family's latest rotation replaced, at most `grace.secs` after that rotation, of a
    /// live, unrevoked family of `client_id` (whose DPoP key, when bound, `grace.jkt` is) gives
    /// [`Rotation::Retried`]: the token that rotation issued (or the previous retry's) is
    /// dead and `next` is current, so at most one token of a family is ever current. Any other
    /// earlier token, a retry past the window or with another key is reuse, as in `rotate`.
    /// Atomic like `rotate`: of N concurrent retries each in turn replaces the current token,
    /// so exactly the last one's `next` stays current.
    fn rotate_with_grace(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        client_id: &str,
        grace: &Grace<'_>,
        now: u64,
    ) -> Result<Rotation, StoreError>;

    /// The live family whose CURRENT token is `presented` (for introspection), None otherwise.
    fn current_family(&self, presented: &TokenHash, now: u64) -> Result<Option<Family>, StoreError>;

    /// Revokes the family of `presented` (current or earlier token). Ok(true) if a family that
    /// was not yet revoked got revoked (the store is not told the time here, so a family past its
    /// expiry that was not purged yet still counts). If `client_id` is Some, only a family of
    /// that client is revoked.
    fn revoke_family(&self, presented: &TokenHash, client_id: Option<&str>) -> Result<bool, StoreError>;

    /// Revokes every family of a client (and optionally only those of one `sub`): "revoke the
    /// app's access" without a password change. Returns how many were not revoked before.
    fn revoke_client(&self, client_id: &str, sub: Option<&str>) -> Result<usize, StoreError>;

    /// Denies an access token's jti until `exp` (a later `exp` for the same jti wins).
    fn deny_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError>;

    /// Hot path (every proxied request): an in-memory lookup, no I/O, no allocation; reads a
    /// structure loaded at open and updated on deny_jti. False once `now` > exp.
    fn is_jti_denied(&self, jti: &str, now: u64) -> bool;

    /// Records a client-assertion jti; Ok(true) the first time within its lifetime, Ok(false) on
    /// replay. Atomic.
    fn use_jti_once(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> Result<bool, StoreError>;

    /// Counts a failed login for `key` (e.g. "user:alice" / "client:c1") and returns the
    /// resulting state. After `max_failures` within `window_secs` the key is locked for
    /// base_wait_secs * 2^(lockouts-1), capped at max_wait_secs; the count of lockouts resets
    /// after max_wait_secs past the end of the last lockout. A failure while locked changes
    /// nothing. See [`LockRow::fail`].
    fn record_failure(&self, key: &str, now: u64, policy: &LockoutPolicy) -> Result<LockState, StoreError>;

    /// Current state of `key` (locked_until in the future means locked).
    fn lock_state(&self, key: &str, now: u64) -> Result<LockState, StoreError>;

    /// A successful login clears the failures (not an ongoing lock, nor the lockout count that
    /// drives the doubling).
    fn clear_failures(&self, key: &str) -> Result<(), StoreError>;

    /// Drops expired families (absolute or idle; revoked ones too, but only once expired, so
    /// reuse of their tokens is told until then) with all their token hashes, expired jtis and
    /// stale lockout rows; returns how many rows went.
    fn purge_expired(&self, now: u64) -> Result<usize, StoreError>;

    /// Remembers a DPoP proof id for `ttl_secs` where every instance sharing this store sees it
    /// (RFC 9449 11.1): Some(future) giving Ok(true) the first time and Ok(false) on a replay.
    /// None when the store is not shared between instances: the caller's memory is then the
    /// whole truth. A future, not a blocking call: the proxy awaits it on the request's task.
    fn remember_proof(&self, _id: &[u8; 16], _ttl_secs: u64) -> Option<ProofCheck> {
        None
    }

    /// Takes up to `ask.want` requests of quota `key` from the bucket every instance sharing
    /// this store counts in (GCRA on the store's clock, one atomic round trip): Some(future) with
    /// the grant, None when the store is not shared (the caller's own table is then the count).
    fn take_quota(&self, _key: String, _ask: crate::quota::Ask) -> Option<QuotaCall> {
        None
    }

    /// Tells every instance sharing this store that an issuer's published key set changed
    /// (`news`), so that those trusting it by URL refetch it at once: Some(future) giving
    /// Ok(true) when published; with `only_if_new`, nothing is published when the store already
    /// holds this very version (a restart that changed nothing). None when the store is not
    /// shared: there is no one to tell.
    fn announce_keys(&self, _news: &KeyNews, _only_if_new: bool) -> Option<AnnounceCall> {
        None
    }

    /// Starts following key announcements, handing each to `on` (and a [`KeyEvent::Resync`]
    /// on every (re)subscription) until the store is dropped. False when the store is not
    /// shared: no announcement can come.
    fn follow_key_announcements(&self, _on: KeyEventHandler) -> bool {
        false
    }
}
