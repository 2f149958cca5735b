//! Key announcements on the shared Redis: an issuing gateway whose published key set changed
//! says so, and every instance that trusts it by URL refetches at once (see
//! `crate::auth::announce` for what each side does with them).
//!
//! # Pub/sub plus the latest word, not a stream
//! An announcement is a nudge ("refetch my JWKS now"), not data: what matters is the issuer's
//! latest set, never the history. So one Lua script records the announcement as the issuer's
//! latest in a hash (`<prefix>keysets`, iss -> announcement) and PUBLISHes it on the channel
//! `<prefix>keysets:news`. A subscriber that was away (Redis restarted, a network cut) reads the
//! hash after subscribing again, so it misses nothing that matters, and nothing needs trimming
//! or a last-read id, which a stream would. The hash is written and published in one script:
//! a subscriber either hears the message or finds it in the hash, never neither.
//!
//! The follower holds one dedicated connection (a subscribed RESP2 connection can run nothing
//! else) and PINGs it every few seconds, so a silently dead connection is noticed and replaced.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Client, RedisResult, Script, Value};

use super::{Keys, RedisStore};
use crate::store::{AnnounceCall, KeyEvent, KeyEventHandler, KeyNews};

/// Records an announcement as its issuer's latest and publishes it. KEYS: the hash of latest
/// announcements. ARGV: iss, announcement (JSON), '1' to skip one the hash already holds, channel.
/// Returns 1 when published.
static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
",
    )
});

/// How often the subscribed connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(5);

/// First pause before subscribing again; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// Longest pause between attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The hash holding each issuer's latest announcement.
fn latest_key(keys: &Keys) -> String {
    format!("{}keysets", keys.prefix)
}

/// The channel announcements are published on.
fn channel(keys: &Keys) -> String {
    format!("{}keysets:news", keys.prefix)
}

impl RedisStore {
    /// [`Store::announce_keys`](crate::store::Store::announce_keys).
    pub(super) fn announce_call(&self, news: &KeyNews, only_if_new: bool) -> AnnounceCall {
        let (mut con, keys) = (self.conn.clone(), self.keys.clone());
        let (iss, text) = (news.iss.clone(), serde_json::to_string(news).unwrap_or_default());
        self.on_caller(async move {
            let published: i64 = ANNOUNCE
                .key(latest_key(&keys))
                .arg(iss)
                .arg(text)
                .arg(if only_if_new { "1" } else { "0" })
                .arg(channel(&keys))
                .invoke_async(&mut con)
                .await?;
            Ok(published == 1)
        })
    }

    /// [`Store::follow_key_announcements`](crate::store::Store::follow_key_announcements).
    pub(super) fn follow_announcements(&self, on: KeyEventHandler) {
        let task = follow(self.client.clone(), self.conn.clone(), self.keys.clone(), self.timeout, on);
        self.handle.spawn(task);
    }
}

/// Subscribes, hands `on` what it missed, then every announcement; subscribes again after any
/// failure, with backoff, until the store's runtime shuts down.
async fn follow(client: Client, con: ConnectionManager, keys: Arc<Keys>, timeout: Duration, on: KeyEventHandler) {
    let mut backoff = MIN_BACKOFF;
    let mut down_since: Option<Instant> = None;
    loop {
        let why = match subscribe(&client, con.clone(), &keys, timeout).await {
            Ok((pubsub, latest)) => {
                if let Some(t) = down_since.take() {
                    tracing::info!(after = ?t.elapsed(), "state store: key announcements followed again");
                }
                backoff = MIN_BACKOFF;
                on(KeyEvent::Resync(latest));
                listen(pubsub, &on, timeout).await
            }
            Err(e) => e.to_string(),
        };
        if down_since.is_none() {
            down_since = Some(Instant::now());
            tracing::warn!(error = %why, "state store: key announcements not followed; subscribing again (keys are still refreshed on their schedule)");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A subscribed connection, and then (so that nothing published in between is lost) every
/// issuer's latest announcement.
async fn subscribe(
    client: &Client,
    mut con: ConnectionManager,
    keys: &Keys,
    timeout: Duration,
) -> RedisResult<(redis::aio::PubSub, Vec<KeyNews>)> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "no answer within state.timeout_ms"));
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel(keys)).await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(latest_key(keys)).query_async(&mut con).await?;
        Ok((pubsub, all.iter().filter_map(|(_, text)| serde_json::from_str(text).ok()).collect()))
    };
    tokio::time::timeout(timeout * 2, subscribed).await.unwrap_or_else(|_| Err(timed_out()))
}

/// Hands every announcement to `on` until the connection fails; returns why it did.
async fn listen(pubsub: redis::aio::PubSub, on: &KeyEventHandler, timeout: Duration) -> String {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return "connection closed".into() };
                match msg.get_payload::<String>().ok().and_then(|t| serde_json::from_str::<KeyNews>(&t).ok()) {
                    Some(news) => on(KeyEvent::Announced(news)),
                    None => tracing::debug!("state store: an unreadable key announcement was ignored"),
                }
            }
            _ = ping.tick() => match tokio::time::timeout(timeout, sink.ping::<Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.to_string(),
                Err(_) => return format!("no answer to PING within {} ms", timeout.as_millis()),
            },
        }
    }
}
