//! Retries of a group's requests without double effects (`[[upstreams]] retries`): which failures
//! may be retried, and the retry budget.
//!
//! A request whose connection failed before any byte was written reached nobody: it is retried
//! whatever its method (the request comes back whole from the pool). One reset after it was written
//! may have taken effect: it is retried only when its method is idempotent (RFC 9110 9.2.2), so a
//! second copy does no more than the first, and only when its whole body was kept while sent
//! (`retry_buffer_bytes`, [`super::replay`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::idle::BodyError;
use super::pool::UpstreamError;
use crate::config::UpstreamGroupConfig;

/// A group's retry settings, from its config.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries after the first (`retries`; 0 turns retries off).
    pub retries: u32,
    /// Bodies up to this many bytes are kept for a retry (`retry_buffer_bytes`).
    pub buffer_bytes: usize,
    /// `retry_budget.ratio`: retries per request allowed over the last second.
    ratio: f64,
    /// `retry_budget.min_retries_per_sec`: retries allowed whatever the traffic.
    min_per_sec: f64,
}

impl RetryPolicy {
    /// The policy `g` sets.
    pub fn new(g: &UpstreamGroupConfig) -> Self {
        RetryPolicy {
            retries: g.retries,
            buffer_bytes: g.retry_buffer_bytes,
            ratio: g.retry_budget.ratio,
            min_per_sec: f64::from(g.retry_budget.min_retries_per_sec),
        }
    }
}

/// Whether `e`, from a request already written, is the upstream's connection going away before
/// the response head (reset, closed, cut short): worth another endpoint for an idempotent request.
/// Not a response the upstream did send (a bad head), nor the client's own body failing.
pub fn reset_before_head(e: &UpstreamError) -> bool {
    let UpstreamError::Http(e) = e else { return false };
    if e.is_parse() || e.is_user() || e.is_timeout() || BodyError::find(e).is_some() {
        return false;
    }
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || io_error_in(e)
}

fn io_error_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(err) = cur {
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A group's retry budget: over a sliding second, retries may be at most `min_retries_per_sec`
/// plus `ratio` times the requests. Touched only when a retry is wanted: the requests are the
/// endpoints' own counts, read then.
#[derive(Debug, Default)]
pub struct Budget {
    /// The current one-second window (`now_ms / 1000`).
    window: AtomicU64,
    /// First tries counted when the window began.
    base: AtomicU64,
    /// First tries in the previous window.
    prev_requests: AtomicU64,
    /// Retries in the current window.
    retries: AtomicU64,
    /// Retries in the previous window.
    prev_retries: AtomicU64,
}

impl Budget {
    /// Takes one retry from the budget at `now` (milliseconds) when there is one left; `tries`
    /// is the group's first tries so far.
    pub fn withdraw(&self, policy: &RetryPolicy, tries: u64, now: u64) -> bool {
        let second = now / 1000;
        let window = self.window.load(Ordering::Relaxed);
        if second != window
            && self.window.compare_exchange(window, second, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // One caller rolls the window over; others racing it read a count off by one or two.
            let adjacent = second == window + 1;
            let base = self.base.swap(tries, Ordering::Relaxed);
            let retries = self.retries.swap(0, Ordering::Relaxed);
            self.prev_requests.store(if adjacent { tries.saturating_sub(base) } else { 0 }, Ordering::Relaxed);
            self.prev_retries.store(if adjacent { retries } else { 0 }, Ordering::Relaxed);
        }
        // The previous second weighs what is left of it in the sliding second.
        let weight = 1.0 - (now % 1000) as f64 / 1000.0;
        let requests = self.prev_requests.load(Ordering::Relaxed) as f64 * weight
            + tries.saturating_sub(self.base.load(Ordering::Relaxed)) as f64;
        let retries =
            self.prev_retries.load(Ordering::Relaxed) as f64 * weight + self.retries.load(Ordering::Relaxed) as f64;
        if retries >= policy.min_per_sec + policy.ratio * requests {
            return false;
        }
        self.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ratio: f64, min: u32) -> RetryPolicy {
        RetryPolicy { retries: 1, buffer_bytes: 16, ratio, min_per_sec: f64::from(min) }
    }

    #[test]
    fn budget_allows_the_minimum_then_a_share_of_requests() {
        let b = Budget::default();
        let p = policy(0.2, 3);
        // A quiet second: the minimum only.
        let allowed = (0..10).filter(|_| b.withdraw(&p, 0, 5_000)).count();
        assert_eq!(allowed, 3);
        // The next second, 100 first tries: 3 + 20, less what the previous second used (all of it
        // weighs at its start).
        let allowed = (0..100).filter(|_| b.withdraw(&p, 100, 6_000)).count();
        assert_eq!(allowed, 20);
        // Later in that second the previous one's requests weigh less: nothing left.
        let allowed = (0..100).filter(|_| b.withdraw(&p, 100, 6_900)).count();
        assert_eq!(allowed, 0);
        // Two seconds of calm: the slate is clean.
        let allowed = (0..100).filter(|_| b.withdraw(&p, 100, 9_000)).count();
        assert_eq!(allowed, 3);
    }
}
