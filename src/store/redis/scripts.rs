//! The server-side Lua scripts: every decision that must be atomic across gateway instances runs
//! inside Redis as one script, never as a read in Rust followed by a write.
//!
//! Each script touches only keys that share one hash tag (a family's `{family_id}`, the
//! `{denylist}`) or a single key, so the same scripts run on Redis Cluster. Numbers travel as
//! decimal strings; Lua compares them as doubles, exact for unix seconds.

use std::sync::LazyLock;

use redis::Script;

/// Creates a family. KEYS: family hash, family token set. ARGV: client, sub, scope, created,
/// expires, idle, last_used, current token hash (hex), ttl, DPoP jkt (empty for none). Returns 0 if the id is taken.
pub static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'client', ARGV[1], 'sub', ARGV[2], 'scope', ARGV[3], 'created', ARGV[4],
  'expires', ARGV[5], 'idle', ARGV[6], 'last_used', ARGV[7], 'revoked', '0', 'current', ARGV[8],
  'jkt', ARGV[10])
redis.call('SADD', KEYS[2], ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
return 1
",
    )
});

/// Refresh rotation (RFC 9700 2.2.2) in one step, with the reuse grace. KEYS: family hash,
/// family token set. ARGV: presented hash (hex), next hash (hex), client, now, grace seconds (0:
/// none), the retry's DPoP jkt ('' for none). Returns {'invalid'}, {'reused'}, or {'rotated' or
/// 'retried', client, sub, scope, created, expires, idle, last_used, jkt ('' for none)}.
///
/// A presented hash that is not current counts as reuse only if it was current once (it is in
/// the token set): a lookup key left behind by a failed rotation never revokes anything. It is a
/// retry instead when it is the hash the latest rotation replaced (`prev`, at `prev_at`), within
/// the grace, with the family's jkt when it has one (`Grace::covers` in Rust): the current hash
/// is replaced by `next` and `prev` stays, so the window runs from the rotation repeated.
pub static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'client', 'sub', 'scope', 'created', 'expires', 'idle', 'last_used',
  'revoked', 'current', 'jkt', 'prev', 'prev_at')
if not f[1] then return {'invalid'} end
local now, expires, idle = tonumber(ARGV[4]), tonumber(f[5]), tonumber(f[6])
local live = now < expires and (idle == 0 or now < tonumber(f[7]) + idle)
if not live or f[1] ~= ARGV[3] then return {'invalid'} end
local outcome = 'rotated'
if f[9] ~= ARGV[1] then
  if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {'invalid'} end
  if f[8] == '1' then return {'reused'} end
  local grace, bound = tonumber(ARGV[5]), f[10] or ''
  if grace > 0 and f[11] == ARGV[1] and now < tonumber(f[12]) + grace and (bound == '' or bound == ARGV[6]) then
    outcome = 'retried'
  else
    redis.call('HSET', KEYS[1], 'revoked', '1')
    return {'reused'}
  end
elseif f[8] == '1' then
  return {'invalid'}
else
  redis.call('HSET', KEYS[1], 'prev', ARGV[1], 'prev_at', ARGV[4])
end
redis.call('HSET', KEYS[1], 'current', ARGV[2], 'last_used', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
local deadline = expires
if idle > 0 and now + idle < deadline then deadline = now + idle end
local ttl = math.max(1, math.ceil(deadline - now))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {outcome, f[1], f[2], f[3], f[4], f[5], f[6], ARGV[4], f[10] or ''}
",
    )
});

/// Revokes a family. KEYS: family hash, family token set. ARGV: presented hash (hex, or '' when
/// revoking by client), client ('' for any), sub ('' for any). Returns 1 if it was live and is
/// now revoked. The TTL is kept: a revoked family stays until it would have died, so that reuse
/// of its tokens is still told.
pub static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'client', 'sub', 'revoked')
if not f[1] or f[3] == '1' then return 0 end
if ARGV[1] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 0 end
if (ARGV[2] ~= '' and f[1] ~= ARGV[2]) or (ARGV[3] ~= '' and f[2] ~= ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
",
    )
});

/// Adds a family to its client's index (a sorted set scored by absolute expiry, trimmed of dead
/// families on every add so it never grows past the live ones). KEYS: index. ARGV: family id,
/// expires, now, ttl.
pub static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
",
    )
});

/// Denies a jti until exp and announces it on the stream. KEYS: denied set (jti scored by exp),
/// stream. ARGV: jti, exp, wall-clock now, stream length cap. Returns the jti's exp afterwards
/// (a later exp already recorded wins, and then nothing is announced).
pub static DENY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and tonumber(old) >= tonumber(ARGV[2]) then return old end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'jti', ARGV[1], 'exp', ARGV[2])
local ttl = math.max(1, math.ceil(tonumber(ARGV[2]) - tonumber(ARGV[3])) + 1)
for _, k in ipairs(KEYS) do
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end
return ARGV[2]
",
    )
});

/// A client-assertion jti, once within its lifetime. KEYS: the jti's key. ARGV: exp, now, ttl.
/// Returns 1 the first time, 0 on replay. Like `SET NX EX`, but a key whose recorded exp has
/// passed at the caller's `now` is free again even if its TTL has not run out yet.
pub static ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = redis.call('GET', KEYS[1])
if old and tonumber(ARGV[2]) <= tonumber(old) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
",
    )
});

/// Compare-and-set of one lockout row: the rules stay in Rust ([`crate::store::LockRow`]), the
/// write happens only if nobody changed the row since it was read. KEYS: the row. ARGV: the row
/// as read ('' for none), the new row ('' deletes), ttl ('' keeps the current one). Returns 1 if
/// written, 0 if the row changed meanwhile (the caller reads again).
pub static LOCK_CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
",
    )
});

/// Tries of a [`LOCK_CAS`] before giving up (each loses only to another write).
pub const LOCK_CAS_TRIES: usize = 32;

/// GCRA for a quota shared by every instance, with a local allowance: takes up to `want`
/// requests from the key's bucket at once, on Redis's own clock (instances' clocks never meet).
/// KEYS: the key's TAT (microseconds since the epoch). ARGV: interval T, depth tau (both
/// microseconds), want. Returns {granted, remaining after, microseconds until full, microseconds
/// until one request fits (0 when granted)}. The TAT is written with `%.0f`: Lua's `tostring`
/// would round a number this large to 14 digits.
pub static QUOTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local n = math.floor((tau - (tat - now)) / interval)
if n <= 0 then
  return {0, 0, tat - now, tat + interval - tau - now}
end
if n > want then n = want end
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {n, math.floor((tau - (tat - now)) / interval), tat - now, 0}
",
    )
});
