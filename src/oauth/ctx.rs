//! What every handler of the token path shares: the request's context ([`Ctx`]) with its secret
//! checks under lockout, and blocking store work. Kept out of `oauth/mod.rs`, which dispatches to
//! the handlers, so that the handlers need nothing of the dispatcher.

use super::errors::OAuthError;
use crate::gateway::{ClientCert, ConnInfo, Gateway};
use crate::snapshot::Snapshot;
use crate::store::{LockoutPolicy, StoreError};
use crate::telemetry::RequestTrace;

/// What every handler needs: the gateway, the snapshot of this request, and the time.
pub struct Ctx<'s> {
    /// Process-wide state (store, limits).
    pub gw: &'s Gateway,
    /// Tables and keys of this request's generation.
    pub snap: &'s Snapshot,
    /// Unix time of the request.
    pub now: u64,
    /// The client connection (TLS or not, client certificate), for DPoP's `htu` and mTLS.
    pub conn: &'s ConnInfo,
    /// The request's client certificate (mutual TLS, or a trusted load balancer's header).
    pub cert: Option<&'s ClientCert>,
    /// The request's trace, parent of the grant's span.
    pub trace: &'s RequestTrace,
}

/// Runs blocking store work off the async threads; store failures become 503.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, OAuthError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "state store failed");
            Err(OAuthError::Unavailable)
        }
        Err(_) => Err(OAuthError::Unavailable),
    }
}

/// Whether per-name lockout counting may pause while the store is failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// The request needs the store anyway (password, refresh, revocation): a store failure
    /// answers 503.
    Required,
    /// Client credentials need nothing else from the store, so an outage must not stop them:
    /// the secret is still checked in full and the per-IP limit still applies, but the client's
    /// failures are neither read nor counted until the store answers again.
    BestEffort,
}

impl Ctx<'_> {
    fn lockout_policy(&self) -> LockoutPolicy {
        let l = &self.snap.config.lockout;
        LockoutPolicy {
            max_failures: l.max_failures,
            window_secs: l.window_secs,
            base_wait_secs: l.base_wait_secs,
            max_wait_secs: l.max_wait_secs,
        }
    }

    /// Verifies `secret` against `phc` (a dummy hash when None) with lockout on `lock_key`.
    /// Locked, unknown and wrong all cost one full argon2 verify and all return false.
    pub async fn verify_secret(
        &self,
        phc: Option<String>,
        secret: String,
        lock_key: Option<String>,
        lockout: Lockout,
    ) -> Result<bool, OAuthError> {
        // Bounded concurrency: each verify holds ~19 MiB, so a flood cannot exhaust memory.
        let _permit = self.gw.hash_permits.clone().acquire_owned().await.map_err(|_| OAuthError::Unavailable)?;
        let (store, now, policy) = (self.gw.store.clone(), self.now, self.lockout_policy());
        blocking(move || {
            let matches =
                crate::oauth::secrets::verify(phc.as_deref().unwrap_or(crate::oauth::secrets::dummy_hash()), &secret)
                    && phc.is_some();
            counted(store.as_ref(), lock_key, now, &policy, lockout, matches)
        })
        .await
    }

    /// Counts one client authentication that needs no secret (a client certificate) for lockout
    /// on `lock_key`, as [`Ctx::verify_secret`] does: true when it `matches` and the key is not
    /// locked.
    pub async fn count_attempt(&self, lock_key: String, matches: bool, lockout: Lockout) -> Result<bool, OAuthError> {
        let (store, now, policy) = (self.gw.store.clone(), self.now, self.lockout_policy());
        blocking(move || counted(store.as_ref(), Some(lock_key), now, &policy, lockout, matches)).await
    }
}

/// Lockout around one authentication attempt that `matches` or not: a failure is recorded, a
/// success clears earlier failures; true when it matched and `lock_key` is not locked.
fn counted(
    store: &dyn crate::store::Store,
    lock_key: Option<String>,
    now: u64,
    policy: &LockoutPolicy,
    lockout: Lockout,
    matches: bool,
) -> Result<bool, StoreError> {
    let best_effort = lockout == Lockout::BestEffort;
    // A store known to be failing is not even asked: no request waits out its timeout.
    let mut lock_key = lock_key.filter(|_| !best_effort || store.available());
    let state = match &lock_key {
        Some(k) => match store.lock_state(k, now) {
            Ok(state) => Some(state),
            Err(e) if best_effort => {
                tracing::debug!(error = %e, "lockout read failed; client credentials go on without it");
                lock_key = None;
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let locked = state.is_some_and(|s| s.locked_until.is_some_and(|t| t > now));
    if let Some(k) = &lock_key {
        let counted = if !matches {
            store.record_failure(k, now, policy).map(drop)
        } else if !locked && state.is_some_and(|s| s.failures > 0) {
            store.clear_failures(k)
        } else {
            Ok(())
        };
        match counted {
            Err(e) if best_effort => tracing::debug!(error = %e, "lockout update failed; answered without it"),
            other => other?,
        }
    }
    Ok(matches && !locked)
}
