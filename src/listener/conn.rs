//! One client connection: pick HTTP/1.1 or h2 without buffering anything (ALPN on TLS, a peek at
//! the preface on plain TCP), serve it with hyper's own builder for that protocol, and end it
//! gracefully when the gateway shuts down.
//!
//! Why not hyper-util's `auto` builder: it reads the opening bytes into a buffer of its own and
//! replays them, which makes hyper's read buffer grow to 16 KiB on every connection (measured with
//! massif) and adds a wrapper to every read and write. Idle keep-alive connections are what a
//! sidecar holds by the thousand, so their size matters.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::listener::h2io::H2Io;
use crate::proxy::upstream::conn_watch::ConnWatch;
use crate::proxy::Body;

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// hyper ended it (a protocol error, a limit, a timeout, the peer).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The client left a response unread for `send_idle_timeout_secs`.
    #[error("the client read nothing for {0:?} while a response waited")]
    SendIdle(Duration),
}

/// The HTTP version a connection speaks, decided before hyper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// What every h2 connection opens with (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a TLS connection agreed on: h2 only when ALPN said so (RFC 9113 section 3.2).
pub fn alpn_proto(alpn: Option<&[u8]>) -> Proto {
    if alpn == Some(b"h2") {
        Proto::Http2
    } else {
        Proto::Http1
    }
}

/// Peeks at a plain connection's first bytes, leaving them in the socket for hyper: the h2 preface
/// means h2 with prior knowledge, anything else HTTP/1.1. Fails when nothing comes within `limit`
/// (the cheapest slowloris is a client that connects and says nothing) or the peer closes first.
pub async fn sniff_plain(tcp: &TcpStream, limit: Duration) -> io::Result<Proto> {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = tcp.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a request"));
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Ok(Proto::Http1);
            }
            if n == H2_PREFACE.len() {
                return Ok(Proto::Http2);
            }
            // A split preface: the rest is already in flight, and peek would return at once.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(limit, sniff)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within the header read timeout"))?
}

/// hyper's per-protocol builders, configured once per listener from `[server]`.
pub struct Builders {
    /// HTTP/1.1: header read timeout (idle keep-alive and slowloris), head size and count caps.
    h1: http1::Builder,
    /// h2: header list cap, stream cap, pings to find dead peers.
    h2: http2::Builder<TokioExecutor>,
    /// Time an h2 client gets to send its preface, and each header block (hyper's h2 has no timer).
    head_timeout: Duration,
    /// Time a response may wait for a client that reads nothing.
    send_idle: Duration,
    /// The settings these were made from, to tell when a reload changed them.
    made_from: Limits,
}

/// The `[server]` settings a connection's builders are made from.
type Limits = (u64, usize, usize, u32, u64);

fn limits(cfg: &ServerConfig) -> Limits {
    (
        cfg.header_read_timeout_secs,
        cfg.max_header_bytes,
        cfg.max_headers,
        cfg.max_h2_streams,
        cfg.send_idle_timeout_secs,
    )
}

impl Builders {
    pub fn new(cfg: &ServerConfig) -> Self {
        let head_timeout = Duration::from_secs(cfg.header_read_timeout_secs);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192))
            .max_headers(cfg.max_headers);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(cfg.max_header_bytes.min(u32::MAX as usize) as u32)
            .max_concurrent_streams(cfg.max_h2_streams)
            // Pings find dead peers; hyper also caps locally reset streams (rapid-reset defence).
            .keep_alive_interval(Duration::from_secs(cfg.header_read_timeout_secs.max(1) * 3))
            .keep_alive_timeout(Duration::from_secs(20));
        let send_idle = Duration::from_secs(cfg.send_idle_timeout_secs);
        Builders { h1, h2, head_timeout, send_idle, made_from: limits(cfg) }
    }

    /// Whether these builders apply `cfg`'s per-connection settings.
    pub fn made_from(&self, cfg: &ServerConfig) -> bool {
        self.made_from == limits(cfg)
    }

    /// Serves `io` until the client goes, an error ends it, it leaves a response unread too long,
    /// or shutdown asks it to finish the requests in flight and close. `conn` is the connection's
    /// watch, shared with its response bodies.
    pub async fn serve<I, S, F>(
        &self,
        io: I,
        proto: Proto,
        svc: S,
        conn: Arc<ConnWatch>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(http::Request<hyper::body::Incoming>) -> F + Send + Clone + 'static,
        F: Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send + 'static,
    {
        let svc = hyper::service::service_fn(svc);
        match proto {
            Proto::Http1 => {
                let c = Box::pin(self.h1.serve_connection(TokioIo::new(io), svc).with_upgrades());
                drive(c, |c| c.graceful_shutdown(), shutdown, &conn, self.send_idle).await
            }
            Proto::Http2 => {
                // hyper's h1 timer covers a silent or slow HTTP/1 client; h2 needs deadlines of its own.
                let io = TokioIo::new(H2Io::new(io, self.head_timeout, conn.clone()));
                let c = Box::pin(self.h2.serve_connection(io, svc));
                drive(c, |c| c.graceful_shutdown(), shutdown, &conn, self.send_idle).await
            }
        }
    }
}

/// Polls `conn` to the end; once shutdown is flagged, asks it to stop taking requests first.
/// The connection is boxed at exactly its own size, so the task holding it stays small.
///
/// A client that reads nothing (a full TCP buffer on HTTP/1.1; a zero flow-control window or a full
/// buffer on h2) leaves its response bodies unpolled; hyper would wait forever, holding the
/// connection and its upstream request. A body waiting on its upstream wakes itself every quarter
/// `send_idle` (its idle timer's beat), so a body in flight that nobody polls means hyper is
/// waiting on the client. Every half `send_idle` the driver looks: a body in flight and no body
/// polled for two looks in a row (so between `send_idle` and 1.5 times that) closes the
/// connection. One timer per connection, one atomic add per body poll.
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    graceful: fn(Pin<&mut C>),
    mut shutdown: watch::Receiver<bool>,
    watch: &ConnWatch,
    send_idle: Duration,
) -> Result<(), ConnError>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let look = send_idle / 2;
    let checking = !look.is_zero();
    let tick = tokio::time::sleep(look);
    tokio::pin!(tick);
    let (mut seen, mut still) = (usize::MAX, 0u8);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => return r.map_err(ConnError::Http),
            _ = crate::signals::stopped(&mut shutdown), if !stopping => {
                stopping = true;
                graceful(conn.as_mut());
            }
            _ = tick.as_mut(), if checking => {
                let progress = watch.progress.load(Ordering::Relaxed);
                let waiting = watch.in_flight.load(Ordering::Relaxed) > 0;
                still = if waiting && progress == seen { still + 1 } else { 0 };
                seen = progress;
                if still >= 2 {
                    watch.metrics.record_limit(crate::metrics::Limit::SendIdleTimeout);
                    return Err(ConnError::SendIdle(send_idle));
                }
                tick.as_mut().reset(tokio::time::Instant::now() + look);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn sniff_tells_h2_preface_from_http1_and_leaves_the_bytes() {
        let (mut c, s) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(sniff_plain(&s, Duration::from_secs(1)).await.unwrap(), Proto::Http1);
        let mut buf = [0u8; 3];
        assert_eq!(s.peek(&mut buf).await.unwrap(), 3, "sniffing consumed nothing");
        assert_eq!(&buf, b"GET");

        let (mut c, s) = pair().await;
        c.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(sniff_plain(&s, Duration::from_secs(1)).await.unwrap(), Proto::Http2);
    }

    #[tokio::test]
    async fn sniff_waits_for_a_split_preface_and_refuses_look_alikes() {
        let (mut c, s) = pair().await;
        c.write_all(&H2_PREFACE[..5]).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(&H2_PREFACE[5..]).await.unwrap();
            c
        });
        assert_eq!(sniff_plain(&s, Duration::from_secs(1)).await.unwrap(), Proto::Http2);
        drop(late.await);

        // "PRI" that goes on differently is HTTP/1 (hyper will refuse it), never h2.
        let (mut c, s) = pair().await;
        c.write_all(b"PRI * HTTP/1.1\r\n").await.unwrap();
        assert_eq!(sniff_plain(&s, Duration::from_secs(1)).await.unwrap(), Proto::Http1);
    }

    #[tokio::test]
    async fn sniff_gives_up_on_silence_and_on_close() {
        let (_c, s) = pair().await;
        let e = sniff_plain(&s, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        let (c, s) = pair().await;
        drop(c);
        let e = sniff_plain(&s, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn only_alpn_h2_selects_h2() {
        assert_eq!(alpn_proto(Some(b"h2")), Proto::Http2);
        assert_eq!(alpn_proto(Some(b"http/1.1")), Proto::Http1);
        assert_eq!(alpn_proto(None), Proto::Http1);
        assert_eq!(alpn_proto(Some(b"h2c")), Proto::Http1);
    }
}
