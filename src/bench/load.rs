//! The per-connection request loop, its statistics and the open-loop schedule.
//!
//! Each connection is one task that owns its TCP (or TLS) stream, one hyper HTTP/1.1 or h2
//! client handle and its own statistics (an HDR histogram, status and error counts): nothing on
//! the hot path is shared except two relaxed atomic counters for the progress line. On any error
//! the connection is dropped and a new one opened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::conn::{Endpoint, Sender};

/// Error kinds, in report order.
pub const ERROR_KINDS: [&str; 4] = ["connect", "timeout", "io", "no_access_token"];
const CONNECT: usize = 0;
const TIMEOUT: usize = 1;
const IO: usize = 2;
const NO_TOKEN: usize = 3;

/// What one connection measured.
pub struct ConnStats {
    /// Latency in microseconds of every counted response.
    pub hist: Histogram<u64>,
    /// Responses by status code.
    pub status: HashMap<u16, u64>,
    /// Errors by kind, indexed like [`ERROR_KINDS`].
    pub errors: [u64; ERROR_KINDS.len()],
    /// New connections opened after the first one.
    pub reconnects: u64,
    /// Open loop only: requests due before the end that were never sent (the target fell behind).
    pub unsent: u64,
    /// The first error's message, to say *why* (a certificate, a refused port...).
    pub first_error: Option<String>,
}

/// A fresh histogram: 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            hist: histogram(),
            status: HashMap::new(),
            errors: [0; 4],
            reconnects: 0,
            unsent: 0,
            first_error: None,
        }
    }
}

/// The token request of issuance mode.
pub struct IssueRequest {
    /// `Authorization: Basic ...`, when a client id was given.
    pub basic: Option<HeaderValue>,
    /// The form body (with `refresh`: the login that yields each connection's first refresh token).
    pub body: Bytes,
    /// Refresh grants: after the login, each request presents the refresh token last received.
    pub refresh: bool,
}

/// Everything the connection tasks share (read-only, except the progress counters).
pub struct Shared {
    pub ep: Endpoint,
    /// `Bearer ...` values to cycle through (empty: no Authorization header).
    pub bearer: Vec<HeaderValue>,
    /// Issuance mode: what each token request sends.
    pub issue: Option<IssueRequest>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub connections: usize,
    pub rate: Option<f64>,
    /// Load starts (the open-loop schedule's origin).
    pub start: Instant,
    /// Counting starts (after the warm-up).
    pub measure_from: Instant,
    /// No request is sent after this.
    pub end: Instant,
    /// Responses so far, counted or not (progress line only).
    pub done: AtomicU64,
    /// Errors so far (progress line only).
    pub failed: AtomicU64,
}

/// When request `i` of connection `k` is due, after the start of an open-loop run: the run's
/// single global sequence of requests, one every 1/rate s, dealt round-robin to `conns`
/// connections.
pub fn due_offset(i: u64, k: usize, conns: usize, rate: f64) -> Duration {
    Duration::from_secs_f64((i as f64 * conns as f64 + k as f64) / rate)
}

/// How many requests connection `k` has due strictly before `t` after the start.
pub fn due_before(t: Duration, k: usize, conns: usize, rate: f64) -> u64 {
    let n = (t.as_secs_f64() * rate - k as f64) / conns as f64;
    if n <= 0.0 {
        0
    } else {
        n.ceil() as u64
    }
}

impl Shared {
    /// Request `seq` of connection `k`; `refresh` is the connection's last refresh token.
    fn build(&self, seq: u64, k: usize, refresh: Option<&str>) -> anyhow::Result<Request<Full<Bytes>>> {
        let (method, body) = match (&self.issue, refresh) {
            (Some(_), Some(rt)) => {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", rt)
                    .finish();
                (Method::POST, Full::new(Bytes::from(form)))
            }
            (Some(issue), None) => (Method::POST, Full::new(issue.body.clone())),
            (None, _) => (Method::GET, Full::new(Bytes::new())),
        };
        let mut b = self.ep.request(method);
        for (n, v) in &self.headers {
            b = b.header(n, v.clone());
        }
        if let Some(issue) = &self.issue {
            b = b.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(v) = &issue.basic {
                b = b.header(AUTHORIZATION, v.clone());
            }
        } else if !self.bearer.is_empty() {
            let idx = (seq as usize).wrapping_add(k) % self.bearer.len();
            b = b.header(AUTHORIZATION, self.bearer[idx].clone());
        }
        Ok(b.body(body)?)
    }
}

/// One connection's loop until `shared.end`; returns its statistics.
pub async fn run_connection(shared: Arc<Shared>, k: usize) -> ConnStats {
    let s = &*shared;
    let mut st = ConnStats::new();
    let mut seq: u64 = 0;
    let mut sender: Option<Sender> = None;
    let mut opened = 0u64;
    let refreshing = s.issue.as_ref().is_some_and(|i| i.refresh);
    // Refresh mode: the token the next request presents (None: log in first, uncounted).
    let mut refresh_token: Option<String> = None;
    loop {
        // When this request is due (open loop) or now (closed loop).
        let due = match s.rate {
            Some(rate) => {
                let due = s.start + due_offset(seq, k, s.connections, rate);
                if due >= s.end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                due
            }
            None => Instant::now(),
        };
        let now = Instant::now();
        if now >= s.end {
            if let Some(rate) = s.rate {
                st.unsent = due_before(s.end - s.start, k, s.connections, rate).saturating_sub(seq);
            }
            break;
        }
        let counted = due >= s.measure_from && (!refreshing || refresh_token.is_some());
        let conn = match sender.as_mut() {
            Some(c) => c,
            None => match s.ep.connect().await {
                Ok(c) => {
                    opened += 1;
                    sender.insert(c)
                }
                Err(e) => {
                    let kind = if e.to_string().contains("timed out") { TIMEOUT } else { CONNECT };
                    st.first_error.get_or_insert_with(|| format!("connect: {e:#}"));
                    fail(s, &mut st, counted, kind);
                    // The slot is spent; do not spin on a dead target.
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if conn.ready().await.is_err() {
            sender = None; // closed between requests (idle timeout, `Connection: close`)
            continue;
        }
        let req = match s.build(seq, k, refresh_token.as_deref()) {
            Ok(r) => r,
            Err(_) => {
                fail(s, &mut st, counted, IO);
                break;
            }
        };
        seq += 1;
        let outcome = tokio::time::timeout(s.ep.timeout, exchange(conn, req, s.issue.is_some())).await;
        let elapsed = due.elapsed();
        match outcome {
            Err(_) => {
                fail(s, &mut st, counted, TIMEOUT);
                sender = None;
            }
            Ok(Err(e)) => {
                st.first_error.get_or_insert_with(|| format!("io: {e:#}"));
                fail(s, &mut st, counted, IO);
                sender = None;
            }
            Ok(Ok((status, close, token_ok, next_refresh))) => {
                if refreshing {
                    // A failed refresh logs in again rather than repeating a spent token.
                    refresh_token = next_refresh;
                }
                s.done.fetch_add(1, Relaxed);
                if counted {
                    st.hist.saturating_record((elapsed.as_micros() as u64).max(1));
                    *st.status.entry(status).or_default() += 1;
                    if !token_ok {
                        st.errors[NO_TOKEN] += 1;
                    }
                }
                if close {
                    sender = None;
                }
            }
        }
    }
    st.reconnects = opened.saturating_sub(1);
    st
}

fn fail(s: &Shared, st: &mut ConnStats, counted: bool, kind: usize) {
    s.failed.fetch_add(1, Relaxed);
    if counted {
        st.errors[kind] += 1;
    }
}

/// Sends `req` and reads the whole answer: (status, connection closing, issuance success, the
/// answer's refresh token).
async fn exchange(
    conn: &mut Sender,
    req: Request<Full<Bytes>>,
    issue: bool,
) -> anyhow::Result<(u16, bool, bool, Option<String>)> {
    let resp = conn.send(req).await?;
    let status = resp.status().as_u16();
    let close = resp.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = resp.into_body();
    if issue {
        let bytes = body.collect().await?.to_bytes();
        let ok = status != 200 || super::tokens::access_token(&bytes).is_some();
        return Ok((status, close, ok, super::tokens::refresh_token(&bytes)));
    }
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok((status, close, true, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_is_one_global_sequence_dealt_round_robin() {
        // 1000 req/s over 4 connections: request n of the run is due at n ms.
        let (rate, c) = (1000.0, 4);
        let mut all: Vec<Duration> = (0..4).flat_map(|k| (0..25).map(move |i| due_offset(i, k, c, rate))).collect();
        all.sort();
        for (n, d) in all.iter().enumerate() {
            assert_eq!(d.as_micros(), n as u128 * 1000, "request {n}");
        }
        assert_eq!(due_offset(3, 2, 4, 1000.0), Duration::from_millis(14));
        // Within one connection, requests are c/rate apart.
        assert_eq!(due_offset(1, 0, 8, 100.0) - due_offset(0, 0, 8, 100.0), Duration::from_millis(80));
    }

    #[test]
    fn due_before_counts_slots_of_one_connection() {
        let (rate, c) = (1000.0, 4);
        let t = Duration::from_millis(100); // 100 global slots, 25 per connection
        for k in 0..4 {
            assert_eq!(due_before(t, k, c, rate), 25);
            let manual = (0..).take_while(|&i| due_offset(i, k, c, rate) < t).count() as u64;
            assert_eq!(due_before(t, k, c, rate), manual);
        }
        assert_eq!(due_before(Duration::from_millis(2), 3, 4, 1000.0), 0);
        assert_eq!(due_before(Duration::from_micros(2500), 2, 4, 1000.0), 1);
        assert_eq!(due_before(Duration::ZERO, 0, 4, 1000.0), 0);
    }
}
