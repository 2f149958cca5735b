//! The per-connection request loop, its statistics and the open-loop schedule.
//!
//! Each connection is one task that owns its TCP (or TLS) stream, our HTTP/1.1 exchange or a
//! hyper h2 client handle, and its own statistics (an HDR histogram, status and error counts): nothing on
//! the hot path is shared except two relaxed atomic counters for the progress line. On any error
//! the connection is dropped and a new one opened.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::conn::{Endpoint, Sender};
use super::h1::Answer;

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
    /// Responses by status code: a short list searched in order (one or two codes in a run;
    /// cheaper per request than hashing).
    pub status: Vec<(u16, u64)>,
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
    pub(super) fn new() -> ConnStats {
        ConnStats { hist: histogram(), status: Vec::new(), errors: [0; 4], reconnects: 0, unsent: 0, first_error: None }
    }

    fn count_status(&mut self, status: u16) {
        match self.status.iter_mut().find(|(c, _)| *c == status) {
            Some((_, n)) => *n += 1,
            None => self.status.push((status, 1)),
        }
    }
}

/// The token request of issuance mode.
#[derive(Clone)]
pub struct IssueRequest {
    /// `Authorization: Basic ...`, when a client id was given.
    pub basic: Option<HeaderValue>,
    /// The form body (with `refresh`: the login that yields each connection's first refresh token).
    pub body: Bytes,
    /// Refresh grants: after the login, each request presents the refresh token last received.
    pub refresh: bool,
}

/// What every request of a run carries, whatever the target: decided once per run (tokens are
/// minted or fetched once, even when several targets are measured).
#[derive(Clone)]
pub struct Payload {
    /// `Bearer ...` values to cycle through (empty: no Authorization header).
    pub bearer: Vec<HeaderValue>,
    /// Issuance mode: what each token request sends.
    pub issue: Option<IssueRequest>,
    /// `-H` headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Payload {
    /// How many different requests cycle (one per bearer token).
    fn variants(&self) -> usize {
        if self.issue.is_some() {
            1
        } else {
            self.bearer.len().max(1)
        }
    }

    /// Method, headers and body of variant `idx`; `refresh` is the connection's last refresh token.
    fn parts(&self, idx: usize, refresh: Option<&str>) -> (Method, Vec<(HeaderName, HeaderValue)>, Bytes) {
        let mut headers = self.headers.clone();
        let Some(issue) = &self.issue else {
            if let Some(b) = self.bearer.get(idx) {
                headers.push((AUTHORIZATION, b.clone()));
            }
            return (Method::GET, headers, Bytes::new());
        };
        headers.push((CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded")));
        if let Some(v) = &issue.basic {
            headers.push((AUTHORIZATION, v.clone()));
        }
        let body = match refresh {
            Some(rt) => Bytes::from(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", rt)
                    .finish(),
            ),
            None => issue.body.clone(),
        };
        (Method::POST, headers, body)
    }
}

/// Everything the connection tasks of one target share (read-only, except the progress counters).
pub struct Shared {
    /// The target.
    pub ep: Endpoint,
    /// What the requests carry.
    pub payload: Payload,
    /// HTTP/1.1: every request variant as bytes, encoded once before the run (empty for h2).
    pub h1_requests: Vec<Bytes>,
    /// `-c`: the open-loop schedule deals each request to one of them.
    pub connections: usize,
    /// `--rate`: open loop at this many requests/s in total.
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

impl Shared {
    /// The shared state of a run of `payload` against `ep`, starting now.
    pub fn new(ep: Endpoint, payload: Payload, plan: &super::args::Plan) -> Shared {
        let h1_requests = if ep.is_h2() {
            Vec::new()
        } else {
            (0..payload.variants())
                .map(|i| {
                    let (m, h, b) = payload.parts(i, None);
                    ep.encode(&m, &h, &b)
                })
                .collect()
        };
        let start = Instant::now();
        Shared {
            ep,
            payload,
            h1_requests,
            connections: plan.connections,
            rate: plan.rate,
            start,
            measure_from: start + plan.warmup,
            end: start + plan.warmup + plan.duration,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
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

/// One connection's loop until `shared.end`; returns its statistics.
pub async fn run_connection(shared: Arc<Shared>, k: usize) -> ConnStats {
    let s = &*shared;
    let mut st = ConnStats::new();
    let mut seq: u64 = 0;
    let mut sender: Option<Sender> = None;
    let mut opened = 0u64;
    let refreshing = s.payload.issue.as_ref().is_some_and(|i| i.refresh);
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
        if (s.rate.is_some() && Instant::now() >= s.end) || due >= s.end {
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
        if let Sender::H2(h2) = conn {
            if h2.ready().await.is_err() {
                sender = None; // closed between requests (GOAWAY, idle timeout)
                continue;
            }
        }
        let idx = (seq as usize).wrapping_add(k) % s.payload.variants();
        seq += 1;
        let outcome = tokio::time::timeout(s.ep.timeout, exchange(s, conn, idx, refresh_token.as_deref())).await;
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
            Ok(Ok(answer)) => {
                let (token_ok, next_refresh) = match &answer.body {
                    Some(body) => (
                        answer.status != 200 || super::tokens::access_token(body).is_some(),
                        super::tokens::refresh_token(body),
                    ),
                    None => (true, None),
                };
                if refreshing {
                    // A failed refresh logs in again rather than repeating a spent token.
                    refresh_token = next_refresh;
                }
                s.done.fetch_add(1, Relaxed);
                if counted {
                    st.hist.saturating_record((elapsed.as_micros() as u64).max(1));
                    st.count_status(answer.status);
                    if !token_ok {
                        st.errors[NO_TOKEN] += 1;
                    }
                }
                if answer.close {
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

/// Sends request variant `idx` (or a refresh grant presenting `refresh`) and reads the whole
/// answer; the body is kept in issuance mode only.
async fn exchange(s: &Shared, conn: &mut Sender, idx: usize, refresh: Option<&str>) -> anyhow::Result<Answer> {
    let keep = s.payload.issue.is_some();
    match conn {
        Sender::H1(c) => Ok(match refresh {
            None => c.exchange(&s.h1_requests[idx], keep).await?,
            Some(_) => {
                let (m, h, b) = s.payload.parts(idx, refresh);
                c.exchange(&s.ep.encode(&m, &h, &b), keep).await?
            }
        }),
        Sender::H2(h2) => {
            let (method, headers, body) = s.payload.parts(idx, refresh);
            let mut req = s.ep.request(method).body(Full::new(body))?;
            req.headers_mut().extend(headers);
            let resp = h2.send_request(req).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            if keep {
                let bytes = body.collect().await?.to_bytes();
                return Ok(Answer { status, close: false, body: Some(bytes.to_vec()) });
            }
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok(Answer { status, close: false, body: None })
        }
    }
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
