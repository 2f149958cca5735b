//! A request against its route's per-caller quota (see [`crate::quota`]): which bucket it counts
//! in, at what rate, and whether this instance's own count decides or the shared store's.
//!
//! With a shared count, most requests are decided from the local allowance ([`Leases`]) without
//! I/O; only a request that finds it empty asks the store ([`Pending`], awaited by the caller
//! before forwarding). While the store is unreachable, the route's local [`crate::quota::Table`]
//! counts instead: each instance then allows the whole quota on its own.
//!
//! [`Leases`]: crate::quota::Leases

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::auth::jwt;
use crate::auth::token_cache::Admitted;
use crate::config::LimitKey;
use crate::gateway::{ConnInfo, Gateway};
use crate::quota::{key_hash, now_micros, Ask, Decision, Local, Rate};
use crate::snapshot::{RouteQuota, Snapshot};

use super::failure::Failure;

/// The caller a quota counts: its address, or the text of a claim of its verified token.
#[derive(Hash)]
enum Caller<'a> {
    Ip(IpAddr),
    Text(Cow<'a, str>),
}

impl fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Ip(ip) => ip.fmt(f),
            Caller::Text(t) => f.write_str(t),
        }
    }
}

/// A request whose allowance ran out: the shared store must be asked (by it, or by another
/// request of the same caller already asking) before it may pass.
pub struct Pending {
    /// The caller's key hash, for the local allowance and the fallback table.
    hash: u64,
    /// The caller's key in the store (route, key kind and caller).
    key: String,
    /// The caller's rate.
    rate: Rate,
    /// What to ask the store for.
    ask: Ask,
    /// Whether this request asks, or waits for the one asking.
    turn: Local,
}

/// What spending one request decided at once.
pub enum Spent {
    /// Decided locally.
    Decided(Rate, Decision),
    /// Only the shared store can tell.
    Ask(Pending),
}

/// One request of this caller against the route's quota: the caller's key (a claim of the
/// verified token, or the connection's address) and rate (its client's own `rate_limit`, or the
/// route's). A token without the claim shares the bucket of the empty key.
pub fn spend(
    gw: &Gateway,
    snap: &Snapshot,
    route: &str,
    q: &RouteQuota,
    conn: &ConnInfo,
    admitted: Option<&Admitted>,
) -> Spent {
    let v = admitted.map(|a| &a.verified);
    let client = v.and_then(|v| v.client_id.as_deref());
    let rate = client.and_then(|c| snap.directory.rate_limits.get(c)).copied().unwrap_or(q.rate);
    let caller = match &q.key {
        LimitKey::Ip => Caller::Ip(conn.peer.ip()),
        LimitKey::ClientId => Caller::Text(Cow::Borrowed(client.unwrap_or(""))),
        LimitKey::Sub => Caller::Text(Cow::Borrowed(v.and_then(|v| v.sub.as_deref()).unwrap_or(""))),
        LimitKey::Claim(name) => Caller::Text(Cow::Owned(
            v.and_then(|v| serde_json::from_slice::<serde_json::Value>(&v.payload).ok())
                .and_then(|p| jwt::claim_as_header_text(&p, name))
                .unwrap_or_default(),
        )),
    };
    let hash = key_hash(&caller);
    let now = now_micros();
    if !(q.shared && gw.store.available()) {
        return Spent::Decided(rate, q.table.check_hash(hash, rate, now));
    }
    let want = crate::config::lease_size(q.lease, rate.burst);
    let ask = Ask { interval_us: rate.interval(), tau_us: rate.tau(), want };
    // The route's length first: no prefix can end where another's key begins.
    let key = || format!("{}:{route}:{}:{caller}", route.len(), q.key.kind());
    match q.leases.spend(hash, now, want / 2) {
        Local::Pass(d) | Local::Refuse(d) => Spent::Decided(rate, d),
        Local::Refill(d, asking) => {
            if let Some(call) = gw.store.take_quota(key(), ask) {
                // Its own task: this request has passed already and must not wait for it.
                tokio::spawn(async move {
                    if let Ok(grant) = call.await {
                        asking.record(ask, grant, now_micros());
                    }
                });
            }
            Spent::Decided(rate, d)
        }
        turn => Spent::Ask(Pending { hash, key: key(), rate, ask, turn }),
    }
}

/// Settles a request the allowance could not: waits for the request of the same caller already
/// asking the store (and, when its grant is spent by others first, for the next one), or asks
/// itself. Unreachable (or not shared after all, as when `[state]` changed in a reload that needs
/// a restart), the local table counts.
pub async fn ask_store(gw: &Gateway, snap: &Snapshot, q: &RouteQuota, p: Pending) -> Result<(Rate, Decision), Failure> {
    let mut turn = p.turn;
    // The asker's call is bounded by the store's timeout; a little more covers its scheduling.
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(snap.config.state.timeout_ms.saturating_add(100));
    let asking = loop {
        match turn {
            Local::Pass(d) | Local::Refuse(d) | Local::Refill(d, _) => return allow(q, p.rate, d),
            Local::Ask(asking) => break Some(asking),
            Local::Wait(answered) => {
                if tokio::time::timeout_at(deadline, answered).await.is_err() {
                    // Waited the whole bound: ask without the single flight.
                    break None;
                }
                turn = q.leases.spend(p.hash, now_micros(), 0);
            }
        }
    };
    let answer = match gw.store.take_quota(p.key, p.ask) {
        Some(call) => call.await.ok(),
        None => None,
    };
    let now = now_micros();
    let decision = match (answer, asking) {
        (Some(grant), Some(asking)) => asking.record(p.ask, grant, now),
        (Some(grant), None) => Decision {
            allowed: grant.granted > 0,
            remaining: grant.remaining,
            reset_secs: grant.reset_us.div_ceil(1_000_000),
            retry_after_secs: if grant.granted > 0 { 0 } else { grant.retry_us.div_ceil(1_000_000).max(1) },
        },
        (None, _) => q.table.check_hash(p.hash, p.rate, now),
    };
    allow(q, p.rate, decision)
}

/// The request passes on `decision`, or is refused with it.
pub fn allow(q: &RouteQuota, rate: Rate, decision: Decision) -> Result<(Rate, Decision), Failure> {
    if decision.allowed {
        Ok((rate, decision))
    } else {
        Err(Failure::RateLimited { rate, decision, key: q.key.kind() })
    }
}
