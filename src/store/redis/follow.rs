//! Following denials made by any instance: a background task on the store's runtime reads the
//! `{denylist}:stream` with `XREAD BLOCK` from the last id it saw, so a revocation reaches every
//! instance's in-memory [`DenyList`] as soon as Redis has it.
//!
//! On a lost connection it reconnects with backoff and resynchronizes: it notes the stream's
//! newest id, then reads the whole denied set, then follows from that id. Whatever was denied
//! while it was away is in the set; whatever comes after is in the stream; nothing falls in
//! between, however much of the stream was trimmed meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisResult, Value};

use super::{wall_now, Keys};
use crate::store::denylist::DenyList;
use crate::store::health::Health;

/// How long one XREAD waits for news before it is sent again (news end the wait at once).
const BLOCK: Duration = Duration::from_secs(2);

/// Entries read per XREAD at most.
const BATCH: usize = 1000;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How often entries of expired tokens are dropped from memory.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// An exp as Redis prints a sorted-set score or a stream field.
pub(super) fn parse_exp(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Loads the whole denied set into `denied`; returns the stream id to follow from.
pub(super) async fn resync(con: &mut impl ConnectionLike, keys: &Keys, denied: &DenyList) -> RedisResult<String> {
    // The newest id first: a denial after it is read from the stream, one before it is in the set.
    let newest: StreamRangeReply =
        redis::cmd("XREVRANGE").arg(keys.denials()).arg("+").arg("-").arg("COUNT").arg(1).query_async(con).await?;
    let all: Vec<(String, String)> =
        redis::cmd("ZRANGE").arg(keys.denied()).arg(0).arg(-1).arg("WITHSCORES").query_async(con).await?;
    denied.extend(all.iter().filter_map(|(jti, exp)| Some((jti.as_str(), parse_exp(exp)?))).collect::<Vec<_>>());
    Ok(newest.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
}

/// A connection for the blocking reads, and the id to follow from when `resync` asked for a
/// full read of the set.
async fn connect(
    client: &Client,
    config: &AsyncConnectionConfig,
    resync_needed: bool,
    keys: &Keys,
    denied: &DenyList,
) -> RedisResult<(MultiplexedConnection, Option<String>)> {
    let mut c = client.get_multiplexed_async_connection_with_config(config).await?;
    let id = if resync_needed { Some(resync(&mut c, keys, denied).await?) } else { None };
    Ok((c, id))
}

/// The follower: runs until the store's runtime shuts down. It reports to `health`: hearing from
/// the stream means the server is reachable, losing it that it is not.
pub(super) async fn run(
    client: Client,
    keys: Arc<Keys>,
    denied: Arc<DenyList>,
    mut last: String,
    timeout: Duration,
    health: Arc<Health>,
) {
    let config =
        AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(BLOCK + timeout));
    let mut con = None;
    // The store loaded the set at open; only a reconnection needs another full read.
    let mut synced = true;
    let mut backoff = Duration::from_millis(50);
    let mut down_since: Option<Instant> = None;
    let mut pruned = Instant::now();
    loop {
        let c = match con.as_mut() {
            Some(c) => c,
            None => {
                let connected = connect(&client, &config, !synced, &keys, &denied).await;
                match connected {
                    Ok((c, resynced)) => {
                        if let Some(id) = resynced {
                            last = id;
                            synced = true;
                        }
                        if let Some(t) = down_since.take() {
                            tracing::info!(
                                after = ?t.elapsed(),
                                denied_jtis = denied.len(),
                                "state store: denylist stream reconnected and resynchronized"
                            );
                        }
                        backoff = Duration::from_millis(50);
                        health.stream_event();
                        con.insert(c)
                    }
                    Err(e) => {
                        health.stream_connected(false);
                        health.unreachable(&e);
                        if down_since.is_none() {
                            down_since = Some(Instant::now());
                            tracing::warn!(error = %e, "state store: denylist stream unreachable; the proxy keeps the denylist it has");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let read: RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(keys.denials())
            .arg(&last)
            .query_async(c)
            .await;
        match read {
            Ok(Some(reply)) => {
                health.stream_event();
                let mut news = Vec::new();
                for entry in reply.keys.iter().flat_map(|k| &k.ids) {
                    last.clone_from(&entry.id);
                    let field = |name: &str| match entry.map.get(name) {
                        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
                        Some(Value::SimpleString(s)) => Some(s.as_str()),
                        _ => None,
                    };
                    if let (Some(jti), Some(exp)) = (field("jti"), field("exp").and_then(parse_exp)) {
                        news.push((jti, exp));
                    }
                }
                denied.extend(news);
            }
            Ok(None) => health.stream_event(),
            Err(e) => {
                health.stream_connected(false);
                health.unreachable(&e);
                down_since = Some(Instant::now());
                tracing::warn!(error = %e, "state store: denylist stream lost; reconnecting (the proxy keeps the denylist it has)");
                con = None;
                synced = false;
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            denied.retain_live(wall_now());
        }
    }
}
