//! Limits, timeouts and injected faults, over the wire: slowloris and idle connections, the TLS
//! handshake deadline, connection caps, upstreams that die, stall or reset, broken files during
//! hot reload, state-store failures at start, and `kill -9` of the real binary mid-burst; the
//! upstream side's hygiene (framing, head caps, body and send idle timeouts, h2 limits counted).
//!
//! Every wait is bounded; configs use 1-second timeouts so that the whole target stays short.

#[path = "../common/mod.rs"]
mod common;

mod limits;
mod reload_faults;
mod state_faults;
mod upstream_faults;
mod upstream_hygiene;
mod upstream_pool;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use common::*;

/// A normal request from an unaffected client: GET /pub over a fresh HTTPS connection is 200.
pub async fn assert_serving(gw: &Gw, when: &str) {
    let r = gw.get("/pub/ok", &[]).await;
    assert_eq!(r.status, 200, "{when}: a normal request was not served: {}", r.text());
}

/// How a raw read of a connection ended.
#[derive(Debug)]
pub struct Ending {
    /// Every byte the server sent before it closed.
    pub bytes: Vec<u8>,
    /// Time from the start of the read until EOF or reset; None: still open at the deadline.
    pub closed_after: Option<Duration>,
    /// The close was a reset (or another read error) rather than a clean EOF.
    pub reset: bool,
}

impl Ending {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until the peer closes or `limit` passes, keeping what arrives.
pub async fn read_until_closed<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Ending {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return Ending { bytes, closed_after: None, reset: false },
            Ok(Ok(0)) => return Ending { bytes, closed_after: Some(start.elapsed()), reset: false },
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return Ending { bytes, closed_after: Some(start.elapsed()), reset: true },
        }
    }
}

/// A TCP connection to `addr` from the local address `from` (any 127/8 address works on Linux),
/// so that a test can be "another client" as far as per-address limits go.
pub async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(addr).await
}

/// One `Connection: close` request written raw on `s`; everything the server answered.
pub async fn raw_exchange(mut s: TcpStream, request: &str) -> Ending {
    let _ = s.write_all(request.as_bytes()).await;
    read_until_closed(&mut s, Duration::from_secs(10)).await
}

/// Reads one request head (up to the blank line) off an upstream-side socket.
pub async fn read_request_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&b[..n]),
            _ => break,
        }
    }
    head
}

/// A raw TCP upstream: every accepted connection is handed to `behave`. Returns its address.
pub async fn raw_upstream<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind raw upstream");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(behave(s));
        }
    });
    addr
}
