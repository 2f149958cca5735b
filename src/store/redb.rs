//! [`RedbStore`]: the embedded, durable [`Store`] in one redb file.
//!
//! redb serializes write transactions (one at a time per database), so every compare-and-swap
//! of the trait is simply "read, decide, write" inside one write transaction. Each commit uses
//! redb's default durability ([`::redb::Durability::Immediate`]: fsync before `commit` returns),
//! so an `Ok` survives `kill -9` and power loss. Calls that decide to change nothing abort their
//! transaction instead, which costs no fsync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use arc_swap::ArcSwap;

use super::{Family, Grace, LockRow, LockState, LockoutPolicy, Rotation, Store, StoreError, TokenHash};

/// family_id -> JSON of [`FamilyRow`].
const FAMILIES: TableDefinition<&str, &[u8]> = TableDefinition::new("families");
/// refresh-token hash -> family_id, for every token a family ever had, until the family goes.
const TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("token_hashes");
/// (client_id, family_id) -> (): the families of a client, for [`Store::revoke_client`].
const CLIENT_FAMILIES: TableDefinition<(&str, &str), ()> = TableDefinition::new("client_families");
/// access-token jti -> exp.
const DENIED: TableDefinition<&str, u64> = TableDefinition::new("denied_jtis");
/// (client_id, assertion jti) -> exp.
const ASSERTIONS: TableDefinition<(&str, &str), u64> = TableDefinition::new("used_assertion_jtis");
/// key -> (failures, window_end, lockouts, locked_until, forget_at): a [`LockRow`].
const LOCKOUT: TableDefinition<&str, (u32, u64, u32, u64, u64)> = TableDefinition::new("lockout");
/// "schema" -> version of the table layout above.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Version of the table layout; a file with a newer one is refused.
const SCHEMA_VERSION: u64 = 1;

/// Page cache of the database; the state is small, redb's 1 GiB default is far too much.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Denied jti -> exp, swapped whole on every change so that readers never lock.
type DeniedMap = HashMap<Box<str>, u64>;

/// What the families table holds for one family.
#[derive(serde::Serialize, serde::Deserialize)]
struct FamilyRow {
    /// The family as granted, with last_used updated on rotation.
    family: Family,
    /// Revoked families stay until they expire, so that reuse of their tokens is still told.
    revoked: bool,
    /// Hash of the family's current refresh token.
    current: TokenHash,
    /// The token the latest rotation replaced, and when (unix seconds): a lost answer's retry
    /// of it within the reuse grace is answered, not taken for reuse. Absent in older rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<(TokenHash, u64)>,
}

/// The default, embedded durable store: one redb file.
pub struct RedbStore {
    /// The database (file or memory).
    db: Database,
    /// Denied jtis, loaded at open and replaced on every deny and purge.
    denied: ArcSwap<DeniedMap>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("denied_jtis", &self.denied.load().len()).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens or creates the file (creating its parent folder), loading denied jtis into memory.
    /// A file another process holds locked, unwritable, or corrupt is an error with a clear
    /// message. Every page checksum is verified at open, so a damaged file is refused rather
    /// than trusted.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_io_err(path, e))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| open_err(path, e.into()))?;
        RedbStore::init(db).map_err(|e| match e {
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
            StoreError::Io(e) => open_io_err(path, e),
            e => e,
        })
    }

    /// A store that lives only in memory (redb's in-memory backend), for tests and
    /// `state.path = ":memory:"`.
    pub fn in_memory() -> Result<RedbStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(::redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        RedbStore::init(db)
    }

    /// Creates the tables of a new file, checks the schema version and loads the denied jtis.
    fn init(db: Database) -> Result<RedbStore, StoreError> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let version = meta.get("schema").map_err(db_err)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(db_err)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(StoreError::Corrupt(format!(
                        "schema version {v}, this tokengate knows {SCHEMA_VERSION}"
                    )))
                }
            }
            txn.open_table(FAMILIES).map_err(db_err)?;
            txn.open_table(TOKENS).map_err(db_err)?;
            txn.open_table(CLIENT_FAMILIES).map_err(db_err)?;
            txn.open_table(DENIED).map_err(db_err)?;
            txn.open_table(ASSERTIONS).map_err(db_err)?;
            txn.open_table(LOCKOUT).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;

        let mut denied = DeniedMap::new();
        {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(DENIED).map_err(db_err)?;
            for entry in table.iter().map_err(db_err)? {
                let (jti, exp) = entry.map_err(db_err)?;
                denied.insert(jti.value().into(), exp.value());
            }
        }
        Ok(RedbStore { db, denied: ArcSwap::from_pointee(denied) })
    }

    /// Begins the write transaction of one store call.
    fn write(&self) -> Result<WriteTransaction, StoreError> {
        self.db.begin_write().map_err(db_err)
    }
}

/// Maps a redb error to a [`StoreError`].
fn db_err(e: impl Into<::redb::Error>) -> StoreError {
    match e.into() {
        ::redb::Error::Io(e) => io_err(e),
        ::redb::Error::Corrupted(m) => StoreError::Corrupt(m),
        ::redb::Error::UpgradeRequired(v) => StoreError::Corrupt(format!("file format version {v} needs an upgrade")),
        ::redb::Error::DatabaseAlreadyOpen => StoreError::InUse(PathBuf::new()),
        other => StoreError::Db(other.to_string()),
    }
}

/// Maps an I/O error, telling a full disk apart.
fn io_err(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        StoreError::Full
    } else {
        StoreError::Io(e)
    }
}

/// Maps an error of opening the file at `path`, naming the path.
fn open_err(path: &Path, e: ::redb::Error) -> StoreError {
    match e {
        ::redb::Error::Io(e) => open_io_err(path, e),
        ::redb::Error::DatabaseAlreadyOpen | ::redb::Error::LockProtocolMismatch => {
            StoreError::InUse(path.to_path_buf())
        }
        ::redb::Error::Corrupted(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        other => match db_err(other) {
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
            StoreError::Db(m) => StoreError::Db(format!("{}: {m}", path.display())),
            e => e,
        },
    }
}

/// Maps an I/O error of opening the file at `path`.
fn open_io_err(path: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull => StoreError::Full,
        ErrorKind::WouldBlock => StoreError::InUse(path.to_path_buf()),
        ErrorKind::InvalidData | ErrorKind::UnexpectedEof => StoreError::Corrupt(format!("{}: {e}", path.display())),
        _ => StoreError::Unwritable { path: path.to_path_buf(), source: e },
    }
}

/// Reads the row of `family_id`.
fn load_family(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    family_id: &str,
) -> Result<Option<FamilyRow>, StoreError> {
    let Some(bytes) = table.get(family_id).map_err(db_err)? else {
        return Ok(None);
    };
    serde_json::from_slice(bytes.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("family row: {e}")))
}

/// Writes the row of `family_id`.
fn store_family(table: &mut ::redb::Table<&str, &[u8]>, family_id: &str, row: &FamilyRow) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(row).map_err(|e| StoreError::Db(format!("encoding a family: {e}")))?;
    table.insert(family_id, bytes.as_slice()).map_err(db_err)?;
    Ok(())
}

/// Finds the family a token hash belongs to, and its row.
fn family_of(
    tokens: &impl ReadableTable<&'static [u8; 32], &'static str>,
    families: &impl ReadableTable<&'static str, &'static [u8]>,
    token: &TokenHash,
) -> Result<Option<(String, FamilyRow)>, StoreError> {
    let Some(family_id) = tokens.get(token).map_err(db_err)?.map(|g| g.value().to_owned()) else {
        return Ok(None);
    };
    Ok(load_family(families, &family_id)?.map(|row| (family_id, row)))
}

/// Decodes a lockout row.
fn lock_row((failures, window_end, lockouts, locked_until, forget_at): (u32, u64, u32, u64, u64)) -> LockRow {
    LockRow { failures, window_end, lockouts, locked_until, forget_at }
}

/// Encodes a lockout row.
fn lock_tuple(r: &LockRow) -> (u32, u64, u32, u64, u64) {
    (r.failures, r.window_end, r.lockouts, r.locked_until, r.forget_at)
}

/// Rows in a table, for counting what a purge removed.
fn rows(table: &impl ReadableTableMetadata) -> Result<usize, StoreError> {
    let n = table.len().map_err(db_err)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

impl Store for RedbStore {
    fn status(&self) -> super::StoreStatus {
        super::StoreStatus { backend: "redb", error: None, denied_jtis: self.denied.load().len(), stream: None }
    }

    fn create_family(&self, family: &Family, token: &TokenHash) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut families = txn.open_table(FAMILIES).map_err(db_err)?;
            let mut tokens = txn.open_table(TOKENS).map_err(db_err)?;
            let mut index = txn.open_table(CLIENT_FAMILIES).map_err(db_err)?;
            if families.get(family.family_id.as_str()).map_err(db_err)?.is_some() {
                return Err(StoreError::Conflict("family id"));
            }
            if tokens.get(token).map_err(db_err)?.is_some() {
                return Err(StoreError::Conflict("refresh token hash"));
            }
            let row = FamilyRow { family: family.clone(), revoked: false, current: *token, previous: None };
            store_family(&mut families, &family.family_id, &row)?;
            tokens.insert(token, family.family_id.as_str()).map_err(db_err)?;
            index.insert((family.client_id.as_str(), family.family_id.as_str()), ()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn rotate_with_grace(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        client_id: &str,
        grace: &Grace<'_>,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let txn = self.write()?;
        let outcome = {
            let mut families = txn.open_table(FAMILIES).map_err(db_err)?;
            let mut tokens = txn.open_table(TOKENS).map_err(db_err)?;
            let Some((family_id, mut row)) = family_of(&tokens, &families, presented)? else {
                return Ok(Rotation::Invalid);
            };
            if !row.family.is_live(now) || row.family.client_id != client_id {
                return Ok(Rotation::Invalid);
            }
            // Some(is a retry): rotate; None: reuse, revoke.
            let retry = if row.current != *presented {
                if row.revoked {
                    // Reuse again (e.g. the losers of a parallel refresh): already handled.
                    return Ok(Rotation::Reused);
                }
                let graced =
                    row.previous.is_some_and(|(prev, at)| prev == *presented && grace.covers(&row.family, at, now));
                graced.then_some(true)
            } else if row.revoked {
                return Ok(Rotation::Invalid);
            } else {
                Some(false)
            };
            if let Some(retry) = retry {
                if tokens.get(next).map_err(db_err)?.is_some() {
                    return Err(StoreError::Conflict("refresh token hash"));
                }
                tokens.insert(next, family_id.as_str()).map_err(db_err)?;
                // A retry replaces the token the repeated rotation issued (it stays known, so
                // presenting it later is reuse); the window keeps running from that rotation.
                if !retry {
                    row.previous = Some((*presented, now));
                }
                row.current = *next;
                row.family.last_used = now;
                store_family(&mut families, &family_id, &row)?;
                if retry {
                    Rotation::Retried(row.family)
                } else {
                    Rotation::Rotated(row.family)
                }
            } else {
                row.revoked = true;
                store_family(&mut families, &family_id, &row)?;
                Rotation::Reused
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(outcome)
    }

    fn current_family(&self, presented: &TokenHash, now: u64) -> Result<Option<Family>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let families = txn.open_table(FAMILIES).map_err(db_err)?;
        let tokens = txn.open_table(TOKENS).map_err(db_err)?;
        Ok(family_of(&tokens, &families, presented)?
            .filter(|(_, row)| !row.revoked && row.current == *presented && row.family.is_live(now))
            .map(|(_, row)| row.family))
    }

    fn revoke_family(&self, presented: &TokenHash, client_id: Option<&str>) -> Result<bool, StoreError> {
        let txn = self.write()?;
        {
            let mut families = txn.open_table(FAMILIES).map_err(db_err)?;
            let tokens = txn.open_table(TOKENS).map_err(db_err)?;
            let Some((family_id, mut row)) = family_of(&tokens, &families, presented)? else {
                return Ok(false);
            };
            if row.revoked || client_id.is_some_and(|c| c != row.family.client_id) {
                return Ok(false);
            }
            row.revoked = true;
            store_family(&mut families, &family_id, &row)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    fn revoke_client(&self, client_id: &str, sub: Option<&str>) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let mut revoked = 0;
        {
            let mut families = txn.open_table(FAMILIES).map_err(db_err)?;
            let index = txn.open_table(CLIENT_FAMILIES).map_err(db_err)?;
            let mut ids = Vec::new();
            for entry in index.range::<(&str, &str)>((client_id, "")..).map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                let (client, family_id) = key.value();
                if client != client_id {
                    break;
                }
                ids.push(family_id.to_owned());
            }
            for family_id in ids {
                let Some(mut row) = load_family(&families, &family_id)? else {
                    continue;
                };
                if row.revoked || sub.is_some_and(|s| s != row.family.sub) {
                    continue;
                }
                row.revoked = true;
                store_family(&mut families, &family_id, &row)?;
                revoked += 1;
            }
        }
        if revoked > 0 {
            txn.commit().map_err(db_err)?;
        } else {
            txn.abort().map_err(db_err)?;
        }
        Ok(revoked)
    }

    fn deny_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        let exp = {
            let mut denied = txn.open_table(DENIED).map_err(db_err)?;
            let old = denied.get(jti).map_err(db_err)?.map(|g| g.value());
            let exp = old.map_or(exp, |old| old.max(exp));
            if old == Some(exp) {
                None
            } else {
                denied.insert(jti, exp).map_err(db_err)?;
                Some(exp)
            }
        };
        let Some(exp) = exp else {
            return txn.abort().map_err(db_err);
        };
        txn.commit().map_err(db_err)?;
        // After the commit: memory never claims a denial the file would forget.
        self.denied.rcu(|map| {
            let mut map = DeniedMap::clone(map);
            let entry = map.entry(jti.into()).or_insert(exp);
            *entry = (*entry).max(exp);
            map
        });
        Ok(())
    }

    fn is_jti_denied(&self, jti: &str, now: u64) -> bool {
        self.denied.load().get(jti).is_some_and(|&exp| now <= exp)
    }

    fn use_jti_once(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> Result<bool, StoreError> {
        let txn = self.write()?;
        {
            let mut used = txn.open_table(ASSERTIONS).map_err(db_err)?;
            if used.get((client_id, jti)).map_err(db_err)?.is_some_and(|old| now <= old.value()) {
                return Ok(false);
            }
            used.insert((client_id, jti), exp).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    fn record_failure(&self, key: &str, now: u64, policy: &LockoutPolicy) -> Result<LockState, StoreError> {
        let txn = self.write()?;
        let row = {
            let mut table = txn.open_table(LOCKOUT).map_err(db_err)?;
            let old = table.get(key).map_err(db_err)?.map(|g| lock_row(g.value()));
            // A row past forget_at is as good as none: start afresh.
            let old = old.filter(|r| now < r.forget_at).unwrap_or_default();
            let new = old.fail(now, policy);
            if new == old {
                return Ok(new.state(now));
            }
            table.insert(key, lock_tuple(&new)).map_err(db_err)?;
            new
        };
        txn.commit().map_err(db_err)?;
        Ok(row.state(now))
    }

    fn lock_state(&self, key: &str, now: u64) -> Result<LockState, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(LOCKOUT).map_err(db_err)?;
        let row = table.get(key).map_err(db_err)?.map(|g| lock_row(g.value()));
        Ok(row.map(|r| r.state(now)).unwrap_or_default())
    }

    fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        // Every successful login lands here: most keys have no row, and must cost no fsync.
        {
            let txn = self.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(LOCKOUT).map_err(db_err)?;
            let row = table.get(key).map_err(db_err)?.map(|g| lock_row(g.value()));
            if row.is_none_or(|r| r.failures == 0) {
                return Ok(());
            }
        }
        let txn = self.write()?;
        {
            let mut table = txn.open_table(LOCKOUT).map_err(db_err)?;
            let row = table.get(key).map_err(db_err)?.map(|g| lock_row(g.value()));
            match row.map(LockRow::clear) {
                None => return Ok(()),
                Some(None) => {
                    table.remove(key).map_err(db_err)?;
                }
                Some(Some(cleared)) => {
                    table.insert(key, lock_tuple(&cleared)).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let mut removed = 0;
        {
            let mut families = txn.open_table(FAMILIES).map_err(db_err)?;
            let mut tokens = txn.open_table(TOKENS).map_err(db_err)?;
            let mut index = txn.open_table(CLIENT_FAMILIES).map_err(db_err)?;
            let mut dead = HashMap::new();
            for entry in families.iter().map_err(db_err)? {
                let (id, bytes) = entry.map_err(db_err)?;
                let row: FamilyRow = serde_json::from_slice(bytes.value())
                    .map_err(|e| StoreError::Corrupt(format!("family row: {e}")))?;
                if !row.family.is_live(now) {
                    dead.insert(id.value().to_owned(), row.family.client_id);
                }
            }
            if !dead.is_empty() {
                for (family_id, client_id) in &dead {
                    families.remove(family_id.as_str()).map_err(db_err)?;
                    index.remove((client_id.as_str(), family_id.as_str())).map_err(db_err)?;
                }
                let before = rows(&tokens)?;
                tokens.retain(|_, family_id| !dead.contains_key(family_id)).map_err(db_err)?;
                removed += dead.len() * 2 + (before - rows(&tokens)?);
            }

            let mut denied = txn.open_table(DENIED).map_err(db_err)?;
            let before = rows(&denied)?;
            denied.retain(|_, exp| now <= exp).map_err(db_err)?;
            removed += before - rows(&denied)?;

            let mut used = txn.open_table(ASSERTIONS).map_err(db_err)?;
            let before = rows(&used)?;
            used.retain(|_, exp| now <= exp).map_err(db_err)?;
            removed += before - rows(&used)?;

            let mut lockout = txn.open_table(LOCKOUT).map_err(db_err)?;
            let before = rows(&lockout)?;
            lockout.retain(|_, row| now < lock_row(row).forget_at).map_err(db_err)?;
            removed += before - rows(&lockout)?;
        }
        if removed == 0 {
            txn.abort().map_err(db_err)?;
            return Ok(0);
        }
        txn.commit().map_err(db_err)?;
        self.denied.rcu(|map| {
            let mut map = DeniedMap::clone(map);
            map.retain(|_, exp| now <= *exp);
            map
        });
        Ok(removed)
    }
}
