//! Failed-login lockout rows in Redis: the rules stay in Rust ([`LockRow`]); Redis holds each row
//! as five numbers and changes it only by compare-and-set ([`scripts::LOCK_CAS`]), so two
//! instances counting failures of one key never lose one.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{bad_value, redis_err, scripts, RedisStore};
use crate::store::{LockRow, StoreError};

impl RedisStore {
    /// Reads a lockout row: (as stored, decoded); ("", None) when there is none.
    pub(super) async fn lock_row(
        &self,
        con: &mut ConnectionManager,
        key: &str,
    ) -> Result<(String, Option<LockRow>), StoreError> {
        let raw: Option<String> = con.get(self.keys.lockout(key)).await.map_err(redis_err)?;
        let raw = raw.unwrap_or_default();
        let row = if raw.is_empty() { None } else { Some(decode_lock(&raw)?) };
        Ok((raw, row))
    }

    /// Compare-and-set of a lockout row; false when it changed since `old` was read.
    pub(super) async fn lock_cas(
        &self,
        con: &mut ConnectionManager,
        key: &str,
        old: &str,
        new: Option<&LockRow>,
        ttl_secs: Option<u64>,
    ) -> Result<bool, StoreError> {
        let done: i64 = scripts::LOCK_CAS
            .key(self.keys.lockout(key))
            .arg(old)
            .arg(new.map(encode_lock).unwrap_or_default())
            .arg(ttl_secs.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(con)
            .await
            .map_err(redis_err)?;
        Ok(done == 1)
    }
}

/// A lockout row as Redis holds it: five numbers.
fn encode_lock(r: &LockRow) -> String {
    format!("{} {} {} {} {}", r.failures, r.window_end, r.lockouts, r.locked_until, r.forget_at)
}

fn decode_lock(s: &str) -> Result<LockRow, StoreError> {
    let n: Vec<u64> = s.split(' ').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad_value("lockout row"))?;
    let [failures, window_end, lockouts, locked_until, forget_at] = n[..] else {
        return Err(bad_value("lockout row"));
    };
    let small = |v: u64| u32::try_from(v).map_err(|_| bad_value("lockout row"));
    Ok(LockRow { failures: small(failures)?, window_end, lockouts: small(lockouts)?, locked_until, forget_at })
}
