//! Pooled connections to one upstream: HTTP/1.1 connections reused one request at a time, most
//! recently used first, or one shared h2 connection (multiplexed: every request a stream on it)
//! when a TLS upstream negotiated h2 or the pool speaks h2c (HTTP/2 with prior knowledge).
//!
//! Why not hyper-util's legacy client: on the proxy path it cost about 11,600 instructions per
//! request (callgrind), a fifth of the gateway's whole budget, mostly in its generic pool (a task
//! spawned per response to wait for readiness, SipHash-keyed maps, boxed futures). Here a pool
//! belongs to one upstream, found through the route without a lookup, and a connection goes back
//! to the pool from the response body itself the moment its last byte is read.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, TE};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::conn_watch::ConnWatch;
use super::idle::{BodyError, IdleTimer, RequestBody};
use super::replay::Source;
use crate::config::UpstreamProtocol;
use crate::metrics::Limit;

/// Opens TCP connections (with TLS for `https://`), with the connect timeout and TCP_NODELAY;
/// host names resolved as [`Lookup`](super::lookup::Lookup) says.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector<super::lookup::Lookup>>;

/// Why a request could not be sent upstream (answered 502).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// What a pool enforces on each exchange, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// `upstream_max_header_bytes` (hyper needs at least 8192).
    pub head_bytes: usize,
    /// `upstream_max_headers`.
    pub headers: usize,
    /// `upstream_body_idle_timeout_secs`.
    pub body_idle: Duration,
    /// `request_body_idle_timeout_secs`.
    pub upload_idle: Duration,
    /// How often a response body waiting on its upstream wakes: a quarter of
    /// `send_idle_timeout_secs`, so every look of the connection's driver sees it polled.
    pub beat: Duration,
}

impl ExchangeLimits {
    /// The limits `server` sets.
    pub fn from(server: &crate::config::ServerConfig) -> Self {
        ExchangeLimits {
            head_bytes: server.upstream_max_header_bytes.max(8192),
            headers: server.upstream_max_headers,
            body_idle: Duration::from_secs(server.upstream_body_idle_timeout_secs),
            upload_idle: Duration::from_secs(server.request_body_idle_timeout_secs),
            beat: Duration::from_secs(server.send_idle_timeout_secs) / 4,
        }
    }
}

/// One idle HTTP/1.1 connection.
struct Idle {
    /// Ready for its next request.
    sender: http1::SendRequest<RequestBody>,
    /// When it went idle, for `upstream_idle_timeout_secs`.
    since: Instant,
}

/// Connections to one upstream origin.
pub struct Pool {
    /// What the connector dials: `scheme://authority`.
    origin: Uri,
    /// Scheme and authority of h2 requests (absolute-form URIs carry `:scheme` and `:authority`).
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header of HTTP/1.1 requests: the upstream's own authority.
    host: HeaderValue,
    /// Opens the connections.
    connector: Connector,
    /// Idle HTTP/1.1 connections, each ready for a request; the back is the most recently used.
    idle: Mutex<VecDeque<Idle>>,
    /// The h2 connection, when the upstream negotiated h2: every request shares it.
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// How the connections speak: h2c dials h2 without asking; the others go by ALPN.
    protocol: UpstreamProtocol,
    /// Held while an h2c connection is being opened, so a burst of first requests opens one
    /// connection and shares it instead of each opening its own.
    dialing: tokio::sync::Mutex<()>,
    /// Idle connections beyond this many are closed instead of kept.
    max_idle: usize,
    /// Idle connections older than this are closed (before the upstream's own keep-alive ends).
    idle_timeout: Duration,
    /// Set once the task that closes expired idle connections runs.
    reaper: AtomicBool,
    /// Head caps and body idle timeouts.
    limits: ExchangeLimits,
}

/// A connection taken from the pool or just opened.
enum Conn {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

impl Pool {
    /// A pool for `scheme://authority` speaking `protocol`; nothing is connected until the first request.
    pub fn new(
        (scheme, authority): (Scheme, Authority),
        connector: Connector,
        protocol: UpstreamProtocol,
        max_idle: usize,
        idle_timeout: Duration,
        limits: ExchangeLimits,
    ) -> Result<Pool, http::Error> {
        let origin = Uri::builder().scheme(scheme.clone()).authority(authority.clone()).path_and_query("/").build()?;
        let host = HeaderValue::from_str(authority.as_str())?;
        Ok(Pool {
            origin,
            scheme,
            authority,
            host,
            connector,
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            protocol,
            dialing: tokio::sync::Mutex::new(()),
            max_idle,
            idle_timeout,
            reaper: AtomicBool::new(false),
            limits,
        })
    }

    /// Sends `req` (its URI in origin form) on a pooled or new connection. A pooled connection
    /// that turns out closed before the request was written is dropped and the request retried on
    /// another: an idle connection can always be closed by the upstream at that very moment.
    /// `watch` is the client connection's: the bodies count their stalls and waits there.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
        watch: &Arc<ConnWatch>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.try_send(self.wrap(req, watch), watch).await.map_err(|(e, _)| e)
    }

    /// What a health probe needs to open a connection of its own: the connector, the URI it
    /// dials and the `Host` header.
    pub(super) fn dial(&self) -> (&Connector, &Uri, &HeaderValue) {
        (&self.connector, &self.origin, &self.host)
    }

    /// The request with its body watched for `request_body_idle_timeout_secs`, ready to send.
    pub fn wrap(&self, req: Request<impl Into<Source>>, watch: &Arc<ConnWatch>) -> Request<RequestBody> {
        req.map(|b| RequestBody::new(b, self.limits.upload_idle, watch.clone()))
    }

    /// Like [`Pool::send`], but a request that failed before any byte of it was written (no
    /// connection could be opened, or a new one closed before it) comes back with the error, so
    /// that it may be sent elsewhere whatever its method.
    pub async fn try_send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        watch: &Arc<ConnWatch>,
    ) -> Result<Response<UpstreamBody>, (UpstreamError, Option<Request<RequestBody>>)> {
        loop {
            let (conn, pooled) = match self.checkout() {
                Some(c) => (c, true),
                // Boxed: connecting (TCP, TLS, handshake) is rare and its future is large.
                None => match Box::pin(self.connect()).await {
                    Ok(c) => (c, false),
                    Err(e) => return Err((e, Some(req))),
                },
            };
            match conn {
                Conn::H2(mut sender) => {
                    self.absolute(&mut req);
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(|inner| UpstreamBody::new(inner, None, &self.limits, watch))),
                        // The shared connection closed under us before the stream was opened:
                        // nothing was sent, so a fresh connection may carry it.
                        Err(mut e) => match e.take_message() {
                            // (`checkout` drops the closed connection and dials anew.)
                            Some(unsent) if pooled && sender.is_closed() => req = unsent,
                            unsent => return Err((e.into_error().into(), unsent)),
                        },
                    }
                }
                Conn::H1(mut sender) => {
                    req.headers_mut().insert(HOST, self.host.clone());
                    // `TE: trailers` (all that `strip_hop_by_hop` keeps) is for h2 upstreams,
                    // gRPC's; HTTP/1.1 ones get no hop-by-hop header of the client's.
                    req.headers_mut().remove(TE);
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(self.attach(resp, sender, watch)),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) if pooled => req = unsent,
                            unsent => return Err((e.into_error().into(), unsent)),
                        },
                    }
                }
            }
        }
    }

    /// The shared h2 connection if it is open, else the most recently used idle HTTP/1.1 one.
    fn checkout(&self) -> Option<Conn> {
        {
            let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
            match h2.as_ref() {
                Some(s) if !s.is_closed() => return Some(Conn::H2(s.clone())),
                Some(_) => *h2 = None,
                None => {}
            }
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop_back() {
            if i.sender.is_ready() && now.duration_since(i.since) < self.idle_timeout {
                return Some(Conn::H1(i.sender));
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let _dialing = match self.protocol {
            UpstreamProtocol::H2c => {
                let guard = self.dialing.lock().await;
                // Another request may have opened the connection while this one waited.
                if let Some(conn) = self.checkout() {
                    return Ok(conn);
                }
                Some(guard)
            }
            UpstreamProtocol::Http1 | UpstreamProtocol::Auto => None,
        };
        let io = self.connector.clone().call(self.origin.clone()).await.map_err(UpstreamError::Connect)?;
        if self.protocol == UpstreamProtocol::H2c || io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(self.limits.head_bytes.min(u32::MAX as usize) as u32)
                .handshake(io)
                .await?;
            tokio::spawn(conn);
            *self.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
            return Ok(Conn::H2(sender));
        }
        let (mut sender, conn) = http1::Builder::new()
            .max_buf_size(self.limits.head_bytes)
            .max_headers(self.limits.headers)
            .handshake(io)
            .await?;
        // Upgrades: a WebSocket handshake the upstream accepts takes this connection over.
        tokio::spawn(conn.with_upgrades());
        sender.ready().await?;
        Ok(Conn::H1(sender))
    }

    /// h2 needs the absolute form: hyper sends its scheme and authority as pseudo-headers.
    fn absolute(&self, req: &mut Request<RequestBody>) {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| self.origin.clone());
    }

    /// Ties the connection to the response body, which returns it once read to the end.
    fn attach(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: http1::SendRequest<RequestBody>,
        watch: &Arc<ConnWatch>,
    ) -> Response<UpstreamBody> {
        // 101: the connection now belongs to the upgraded stream; 1xx others never get here.
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let mut home = (!upgraded).then(|| (self.clone(), sender));
        if resp.body().is_end_stream() {
            // No body to read (HEAD, 204, 304, length 0): hyper will not poll it, so return now.
            if let Some((pool, sender)) = home.take() {
                pool.checkin(sender);
            }
        }
        resp.map(|inner| UpstreamBody::new(inner, home, &self.limits, watch))
    }

    /// Back into the pool: at once when ready (the usual case, since the upstream's connection
    /// task has finished the response before the body's end reaches us); otherwise, when the
    /// request body is still being sent, once that is done.
    fn checkin(self: &Arc<Self>, mut sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            let pool = Arc::downgrade(self);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    if let Some(pool) = pool.upgrade() {
                        pool.keep(sender);
                    }
                }
            });
            return;
        }
        self.keep(sender);
    }

    fn keep(self: &Arc<Self>, sender: http1::SendRequest<RequestBody>) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push_back(Idle { sender, since: Instant::now() });
        }
        if !self.reaper.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Closes idle connections past `idle_timeout` (and ones the upstream closed), checking a few
/// times per timeout; ends with the pool.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        pool.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < idle_timeout);
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body; an HTTP/1.1 connection goes back to its pool when the body ends.
    /// Dropped before its end (the client went away), the connection is closed instead: the rest of
    /// the response is still on the wire. Cut with an error when the upstream stalls mid-body, so
    /// the client cannot take it for complete (RST_STREAM on h2, a closed connection on HTTP/1.1).
    pub struct UpstreamBody {
        // The body as hyper reads it.
        inner: Incoming,
        // The pool and connection to return; None for h2, upgrades, and once returned.
        home: Option<(Arc<Pool>, http1::SendRequest<RequestBody>)>,
        // `upstream_body_idle_timeout_secs`.
        #[pin]
        idle: IdleTimer,
        // The client connection: its send-stall watch and metrics.
        watch: Arc<ConnWatch>,
        // Counted in `watch.in_flight` until its end.
        counted: bool,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            if this.counted {
                this.watch.ended();
            }
        }
    }
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        home: Option<(Arc<Pool>, http1::SendRequest<RequestBody>)>,
        limits: &ExchangeLimits,
        watch: &Arc<ConnWatch>,
    ) -> Self {
        let counted = !inner.is_end_stream();
        if counted {
            watch.started();
        }
        let idle = IdleTimer::new(limits.body_idle, limits.beat);
        UpstreamBody { inner, home, idle, watch: watch.clone(), counted }
    }

    fn end(counted: &mut bool, watch: &ConnWatch) {
        if std::mem::take(counted) {
            watch.ended();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        this.watch.polled();
        let frame = match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending if this.idle.as_mut().expired(cx) => {
                *this.home = None;
                UpstreamBody::end(this.counted, this.watch);
                let limit = this.idle.limit();
                this.watch.metrics.record_limit(Limit::UpstreamBodyIdleTimeout);
                tracing::warn!(?limit, "upstream stalled mid-body; client response cut");
                return Poll::Ready(Some(Err(BodyError::UpstreamIdle(limit))));
            }
            Poll::Pending => return Poll::Pending,
        };
        this.idle.progressed();
        let release = |home: &mut Option<(Arc<Pool>, http1::SendRequest<RequestBody>)>| {
            if let Some((pool, sender)) = home.take() {
                pool.checkin(sender);
            }
        };
        match &frame {
            // hyper stops polling once `is_end_stream` says so, so the last frame returns it too.
            None => release(this.home),
            Some(Ok(_)) if this.inner.is_end_stream() => release(this.home),
            Some(Err(_)) => *this.home = None,
            Some(Ok(_)) => return Poll::Ready(frame.map(|f| f.map_err(BodyError::Http))),
        }
        UpstreamBody::end(this.counted, this.watch);
        Poll::Ready(frame.map(|f| f.map_err(BodyError::Http)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
