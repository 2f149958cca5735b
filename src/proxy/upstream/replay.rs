//! The copy of a request kept so that it can be sent again after a reset (`[[upstreams]]
//! retry_buffer_bytes`): its head, copied before sending (hyper consumes the request), and its
//! body, recorded while it is sent, up to the buffer's size. A GET without a body keeps only the
//! head (a header map, its values shared); a request whose method is not idempotent keeps nothing.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Whether a second copy of a request with `method` does no more than the first (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
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
    /// `req` ready to send, and what a retry after a reset needs when it may have one: an
    /// idempotent method, and a body that may fit `buffer_bytes`. Nothing is copied otherwise.
    pub fn prepare(req: Request<Incoming>, buffer_bytes: usize) -> (Request<Source>, Option<Replay>) {
        let fits = |b: &Incoming| b.size_hint().lower() <= buffer_bytes as u64;
        if !is_idempotent(req.method()) || !fits(req.body()) {
            return (req.map(Source::from), None);
        }
        let head = (req.method().clone(), req.uri().clone(), req.version(), req.headers().clone());
        if req.body().is_end_stream() {
            return (req.map(Source::from), Some(Replay { head, tee: None }));
        }
        let tee = Arc::new(Tee { limit: buffer_bytes, state: Mutex::default() });
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

#[cfg(test)]
mod tests {
    use super::*;

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
