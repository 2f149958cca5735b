//! Idle timeouts between body frames, both ways through the proxy: an upstream that sends its
//! head and then stalls, and a client that stalls mid-upload. `upstream_timeout_secs` covers only
//! the wait for the response head.
//!
//! Cost on the normal path: the timer lives inline in the body (no allocation), is created only
//! the first time the body has nothing to give, and is re-armed only after a frame came (moving a
//! registered deadline later is an atomic store in tokio's timer, not a wheel operation), or
//! every `beat` of a long wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::conn_watch::ConnWatch;
use super::replay::Source;
use crate::metrics::Limit;

/// Why a body forwarded through the proxy ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's own connection broke.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The upstream sent nothing for this long mid-body.
    #[error("the upstream sent no body data for {0:?}")]
    UpstreamIdle(Duration),
    /// The client sent nothing for this long mid-upload.
    #[error("the client sent no request body data for {0:?}")]
    ClientIdle(Duration),
}

impl BodyError {
    /// The [`BodyError`] somewhere in `e`'s source chain (hyper wraps a request body's error).
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(b) = err.downcast_ref::<BodyError>() {
                return Some(b);
            }
            cur = err.source();
        }
        None
    }
}

// (pin-project-lite takes no attributes on fields but `#[pin]`: field docs are plain comments.)
pin_project_lite::pin_project! {
    /// A deadline `limit` after the body last made progress; zero disables it. It also wakes the
    /// body every `beat` while it waits, so that a body polled by nobody stands out: see
    /// `send_idle_timeout_secs` in [`crate::listener::conn`].
    pub struct IdleTimer {
        // Made on the first wait, then reused for the body's whole life.
        #[pin]
        sleep: Option<Sleep>,
        // The allowed silence.
        limit: Duration,
        // How often a waiting body wakes; at most `limit`.
        beat: Duration,
        // Silence so far, in whole beats.
        silent: Duration,
        // A frame came since the deadline was last set.
        moved: bool,
    }
}

impl IdleTimer {
    /// A timer allowing `limit` of silence (`Duration::ZERO`: any) and waking every `beat` (zero: `limit`).
    pub fn new(limit: Duration, beat: Duration) -> Self {
        let beat = match (limit.is_zero(), beat.is_zero()) {
            (_, true) => limit,
            (true, false) => beat,
            (false, false) => beat.min(limit),
        };
        IdleTimer { sleep: None, limit, beat, silent: Duration::ZERO, moved: false }
    }

    /// The body gave a frame: the next wait starts a new silence.
    pub fn progressed(self: Pin<&mut Self>) {
        *self.project().moved = true;
    }

    /// The body has nothing yet: true once it has had nothing for `limit` (the task is woken then).
    pub fn expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        let beat = *this.beat;
        if beat.is_zero() {
            return false;
        }
        match this.sleep.as_mut().as_pin_mut() {
            None => this.sleep.set(Some(tokio::time::sleep(beat))),
            Some(s) if *this.moved => s.reset(Instant::now() + beat),
            Some(_) => {}
        }
        if std::mem::take(this.moved) {
            *this.silent = Duration::ZERO;
        }
        let Some(mut sleep) = this.sleep.as_pin_mut() else { return false };
        while sleep.as_mut().poll(cx).is_ready() {
            *this.silent += beat;
            if !this.limit.is_zero() && *this.silent >= *this.limit {
                return true;
            }
            sleep.as_mut().reset(Instant::now() + beat);
        }
        false
    }

    /// The allowed silence.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// A client's request body on its way upstream, cut when the client stalls mid-upload. (hyper's
/// client wants an `Unpin` body, so the timer is boxed, made only if the client ever makes it wait.)
pub struct RequestBody {
    /// The body as hyper reads it from the client (kept for a retry), or a kept copy sent again.
    inner: Source,
    /// `request_body_idle_timeout_secs`.
    limit: Duration,
    /// The timer, from the first wait on.
    idle: Option<Pin<Box<IdleTimer>>>,
    /// Where a stall is counted.
    watch: Arc<ConnWatch>,
}

impl RequestBody {
    /// Wraps the client's body (or a kept copy) with `limit` of allowed silence.
    pub fn new(inner: impl Into<Source>, limit: Duration, watch: Arc<ConnWatch>) -> Self {
        RequestBody { inner: inner.into(), limit, idle: None, watch }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut().progressed();
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Http)))
            }
            Poll::Pending
                if this
                    .idle
                    .get_or_insert_with(|| Box::pin(IdleTimer::new(this.limit, Duration::ZERO)))
                    .as_mut()
                    .expired(cx) =>
            {
                let limit = this.limit;
                this.watch.metrics.record_limit(Limit::RequestBodyIdleTimeout);
                tracing::info!(?limit, "client stalled mid-upload; request cut");
                Poll::Ready(Some(Err(BodyError::ClientIdle(limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
