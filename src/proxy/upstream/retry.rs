//! Retries of a group's requests without double effects (`[[upstreams]] retries`): which failures
//! may be retried, the bounded copy of a request body kept for a retry, and the retry budget.
//!
//! A request whose connection failed before any byte was written reached nobody: it is retried
//! whatever its method (the request comes back whole from the pool). One reset after it was written
//! may have taken effect: it is retried only when its method is idempotent (RFC 9110 9.2.2), so a
//! second copy does no more than the first, and only when its whole body was kept while sent
//! (`retry_buffer_bytes`). The head is copied before sending (hyper consumes the request); a GET
//! without a body keeps only that copy (a header map, its values shared), nothing for the body.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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

/// Whether a second copy of a request with `method` does no more than the first (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
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

/// A request body on its way upstream: the client's (copied into a [`Tee`] when a retry may need
/// it), or a copy sent again.
pub enum Source {
    /// The client's body.
    Client {
        /// As hyper reads it from the client.
        body: Incoming,
        /// Where it is kept while sent, when a reset request may be retried.
        tee: Option<Arc<Tee>>,
    },
    /// A kept body, sent again.
    Replay {
        /// The chunks not sent yet.
        chunks: std::vec::IntoIter<Bytes>,
        /// Their bytes, for the length hyper announces.
        left: u64,
    },
}

impl From<Incoming> for Source {
    fn from(body: Incoming) -> Self {
        Source::Client { body, tee: None }
    }
}

impl Body for Source {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Source::Client { body, tee } => {
                let frame = std::task::ready!(Pin::new(&mut *body).poll_frame(cx));
                if let Some(tee) = tee {
                    tee.record(frame.as_ref(), body.is_end_stream());
                }
                Poll::Ready(frame)
            }
            Source::Replay { chunks, left } => Poll::Ready(chunks.next().map(|c| {
                *left -= c.len() as u64;
                Ok(Frame::data(c))
            })),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Client { body, .. } => body.is_end_stream(),
            Source::Replay { chunks, .. } => chunks.len() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Client { body, .. } => body.size_hint(),
            Source::Replay { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

/// A request body as it was sent, up to the buffer's size: shared between the body hyper sends
/// (which records) and the group (which replays it after a reset).
#[derive(Debug)]
pub struct Tee {
    /// `retry_buffer_bytes`.
    limit: usize,
    /// What was recorded so far; a lock only bodies of retryable requests take, once per chunk.
    state: Mutex<TeeState>,
}

/// What a [`Tee`] holds.
#[derive(Debug, Default)]
struct TeeState {
    /// The chunks sent (shared with the ones sent: `Bytes` clones, no copy).
    chunks: Vec<Bytes>,
    /// Their total length.
    len: usize,
    /// The body ended: the chunks are all of it.
    whole: bool,
    /// Longer than the limit, trailers, or an error: the body cannot be replayed.
    lost: bool,
}

impl Tee {
    fn record(&self, frame: Option<&Result<Frame<Bytes>, hyper::Error>>, ended: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match frame {
            None => s.whole = true,
            Some(Ok(f)) => match f.data_ref() {
                Some(data) if !s.lost && s.len + data.len() <= self.limit => {
                    s.len += data.len();
                    s.chunks.push(data.clone());
                    s.whole |= ended;
                }
                Some(_) | None => {
                    // Past the limit, or trailers: no retry after a reset.
                    s.lost = true;
                    s.chunks = Vec::new();
                }
            },
            Some(Err(_)) => s.lost = true,
        }
    }

    /// The whole body as recorded, if it was sent to its end and kept.
    fn replay(&self) -> Option<Source> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.whole && !s.lost).then(|| Source::Replay { chunks: s.chunks.clone().into_iter(), left: s.len as u64 })
    }
}

/// What a request that may be retried after a reset keeps: its head, and its body's [`Tee`].
pub struct Replay {
    /// Method, target, version and headers as they were before the first try.
    head: (Method, Uri, Version, HeaderMap),
    /// The body's copy; None when the request had no body.
    tee: Option<Arc<Tee>>,
}

impl Replay {
    /// `req` ready to send, and what a retry after a reset needs when `policy` allows one for
    /// it: an idempotent method, and a body that may fit the buffer. Nothing is copied otherwise.
    pub fn prepare(req: Request<Incoming>, policy: &RetryPolicy) -> (Request<Source>, Option<Replay>) {
        let fits = |b: &Incoming| b.size_hint().lower() <= policy.buffer_bytes as u64;
        if policy.retries == 0 || !is_idempotent(req.method()) || !fits(req.body()) {
            return (req.map(Source::from), None);
        }
        let head = (req.method().clone(), req.uri().clone(), req.version(), req.headers().clone());
        if req.body().is_end_stream() {
            return (req.map(Source::from), Some(Replay { head, tee: None }));
        }
        let tee = Arc::new(Tee { limit: policy.buffer_bytes, state: Mutex::default() });
        let req = req.map(|body| Source::Client { body, tee: Some(tee.clone()) });
        (req, Some(Replay { head, tee: Some(tee) }))
    }

    /// The request again, if its body was kept whole.
    pub fn request(&self) -> Option<Request<Source>> {
        let body = match &self.tee {
            None => Source::Replay { chunks: Vec::new().into_iter(), left: 0 },
            Some(tee) => tee.replay()?,
        };
        let (method, uri, version, headers) = &self.head;
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.version_mut() = *version;
        *req.headers_mut() = headers.clone();
        Some(req)
    }
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
    fn idempotent_methods_are_rfc_9110s() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
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

    #[test]
    fn tee_keeps_a_body_up_to_its_limit() {
        let tee = Tee { limit: 8, state: Mutex::default() };
        let frame = |s: &'static str| Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))));
        tee.record(frame("abcd").as_ref(), false);
        assert!(tee.replay().is_none(), "not whole yet");
        tee.record(frame("efgh").as_ref(), true);
        let Some(Source::Replay { chunks, left }) = tee.replay() else { panic!("whole") };
        assert_eq!((chunks.collect::<Vec<_>>().concat(), left), (b"abcdefgh".to_vec(), 8));
        let long = Tee { limit: 8, state: Mutex::default() };
        long.record(frame("abcdefghi").as_ref(), false);
        long.record(None, true);
        assert!(long.replay().is_none(), "longer than the buffer: not kept");
    }
}
