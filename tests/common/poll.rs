//! Bounded polling: every wait of the suite goes through [`poll_until`].

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is tried again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Tries `f` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value; panics
/// after `secs` with `what` and the last `Err` (what was seen instead).
pub async fn poll_until<T, E, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(Instant::now() < deadline, "timed out after {secs}s waiting for: {what}; last: {last}")
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`poll_until`] for a plain condition: until `f` is true.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(secs, what, || {
        let cond = f();
        async move {
            if cond.await {
                Ok(())
            } else {
                Err("still false")
            }
        }
    })
    .await
}
