//! Key changes reach the fleet at once: an issuing gateway announces every change of its
//! published key set on the shared state store, and every instance trusting it by `jwks_uri` or
//! discovery refetches at once instead of at its next scheduled fetch (issue 25).
//!
//! - The issuing side: [`Announcer`] holds the latest key set this process publishes; a start
//!   and every reload that changed it hand it over, and one task sends the latest, again and
//!   again while the store is unreachable (a newer set replaces an unsent one: the news is the
//!   latest set, not the history).
//! - The trusting side: [`handler`] turns each announcement naming an issuer of the current
//!   snapshot that is fetched by URL into one refetch outside `jwks_refetch_min_secs`. A fetch
//!   that changes the set bumps its generation, so tokens of a removed key are refused even from
//!   the verified-token cache. After a (re)subscription it compares each issuer's latest
//!   announcement with the kids it holds and refetches those that differ: an announcement
//!   missed while Redis was away is caught up.
//!
//! Without a shared store nothing is sent or followed; an issuer that never announces (any
//! provider that is not a tokengate) keeps its schedule and its unknown-kid refetches.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use tokio::sync::watch;

use crate::auth::jwt::IssuerKeys;
use crate::auth::remote::RemoteKeys;
use crate::metrics::JwksMetrics;
use crate::snapshot::Snapshot;
use crate::store::{KeyEvent, KeyEventHandler, KeyNews, Store};

/// Longest pause between attempts to send an announcement the store refused.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What the sending task is to announce: the news, and whether it may be skipped when the
/// store already holds it (at start: a restart that changed nothing tells no one).
type Pending = Option<(KeyNews, bool)>;

/// The issuing side: the latest key set this process publishes, for the sending task.
pub struct Announcer {
    /// Latest news; the sending task watches it.
    latest: watch::Sender<Pending>,
}

impl Default for Announcer {
    fn default() -> Self {
        Announcer { latest: watch::Sender::new(None) }
    }
}

impl Announcer {
    /// Notes the key set `snap` publishes: the first one (at start) is announced unless the
    /// store holds that very version already, each later change always.
    pub fn published(&self, snap: &Snapshot) {
        let Some(news) = news_of(snap) else { return };
        self.latest.send_if_modified(|pending| {
            let first = pending.is_none();
            if pending.as_ref().is_some_and(|(old, _)| *old == news) {
                return false;
            }
            *pending = Some((news, first));
            true
        });
    }
}

/// What `snap` publishes: its issuer, kids and a digest of its JWKS; None when it issues nothing.
fn news_of(snap: &Snapshot) -> Option<KeyNews> {
    let own = snap.own.as_ref()?;
    let jwks = own.jwks();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwks.to_string().as_bytes());
    let mut kids: Vec<String> = own.keys.keys().cloned().collect();
    kids.sort_unstable();
    Some(KeyNews {
        iss: snap.config.tokens.issuer.clone(),
        kids,
        version: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
    })
}

/// Starts both sides when `store` is shared: following announcements for the issuers of the
/// `current` snapshot, and (for an issuing gateway) sending what `announcer` is handed, from the
/// current snapshot on.
pub fn start(
    store: &Arc<dyn Store>,
    current: &Arc<ArcSwap<Snapshot>>,
    announcer: &Announcer,
    metrics: &JwksMetrics,
    shutdown: watch::Receiver<bool>,
) {
    if !store.follow_key_announcements(handler(current.clone(), metrics.clone())) {
        return;
    }
    announcer.published(&current.load());
    let rx = announcer.latest.subscribe();
    tokio::spawn(send(store.clone(), rx, metrics.clone(), shutdown));
}

/// Sends the latest news until shutdown; retries while the store refuses, unless newer news
/// replaces it.
async fn send(
    store: Arc<dyn Store>,
    mut rx: watch::Receiver<Pending>,
    metrics: JwksMetrics,
    mut stop: watch::Receiver<bool>,
) {
    'news: loop {
        let pending = rx.borrow_and_update().clone();
        if let Some((news, only_if_new)) = pending {
            let mut retry = Duration::from_millis(100);
            loop {
                let Some(call) = store.announce_keys(&news, only_if_new) else { return };
                match call.await {
                    Ok(sent) => {
                        if sent {
                            metrics.announcement("sent");
                            tracing::info!(issuer = %news.iss, kids = %news.kids.join(","), "key set announced to the fleet");
                        }
                        break;
                    }
                    Err(e) => {
                        metrics.announcement("send_failed");
                        tracing::warn!(issuer = %news.iss, error = %e, "key set announcement failed; retrying (the fleet follows on its schedule meanwhile)");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    // Newer news replaces this one, and is sent at once.
                    changed = rx.changed() => match changed {
                        Ok(()) => continue 'news,
                        Err(_) => return,
                    },
                    _ = crate::signals::stopped(&mut stop) => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = crate::signals::stopped(&mut stop) => return,
        }
    }
}

/// The remote key set the current snapshot holds for `iss`, if it trusts it by URL.
fn remote_of(snap: &Snapshot, iss: &str) -> Option<Arc<RemoteKeys>> {
    match &snap.trust.issuers.get(iss)?.keys {
        IssuerKeys::Remote(r) => Some(r.clone()),
        IssuerKeys::Static(_) => None,
    }
}

/// The trusting side: what to do with each announcement (see the module documentation).
fn handler(current: Arc<ArcSwap<Snapshot>>, metrics: JwksMetrics) -> KeyEventHandler {
    Arc::new(move |event| {
        let snap = current.load();
        match event {
            KeyEvent::Announced(news) => match remote_of(&snap, &news.iss) {
                Some(remote) => {
                    metrics.announcement("received");
                    tracing::info!(issuer = %news.iss, kids = %news.kids.join(","), "jwks: the issuer announced a new key set; refetching now");
                    remote.refetch_announced();
                }
                // Our own announcement comes back to us too; not news.
                None if snap.own.is_some() && snap.config.tokens.issuer == news.iss => {}
                None => metrics.announcement("ignored"),
            },
            KeyEvent::Resync(all) => {
                for news in all {
                    let Some(remote) = remote_of(&snap, &news.iss) else { continue };
                    // A first fetch may be under way: compare with what it brings.
                    tokio::spawn(async move {
                        let fetched = tokio::time::timeout(remote.spec.start_timeout, remote.wait_for_keys()).await;
                        if fetched.is_ok() && remote.kids() != news.kids {
                            tracing::info!(issuer = %news.iss, kids = %news.kids.join(","), "jwks: a key set announcement was missed; refetching now");
                            remote.refetch_announced();
                        }
                    });
                }
            }
        }
    })
}
