//! [`Health`]: what a shared backend knows about its own reachability, without any I/O: whether
//! its last call failed (and how), and whether the denylist follower holds the stream. Read by
//! `GET /state`, the metrics, and the client-credentials grant, which does without the store
//! while it is failing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Reachability of a shared backend; updated by every call and by the stream follower.
#[derive(Debug, Default)]
pub struct Health {
    /// Set by a call that could not reach the server, cleared by the next that did (or by the
    /// follower reading the stream again, so that recovery needs no other traffic).
    failing: AtomicBool,
    /// Text of the last reachability error (never credentials: errors never carry the URL).
    last_error: Mutex<Option<String>>,
    /// Whether the follower holds a live stream connection.
    stream_connected: AtomicBool,
    /// When the follower last heard from the stream (a denial, or a blocking read that ended empty).
    last_event: Mutex<Option<Instant>>,
}

impl Health {
    /// A call reached the server.
    pub fn reached(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("state store: the server answers again");
        }
    }

    /// A call could not reach the server (refused, lost, timed out).
    pub fn unreachable(&self, error: &dyn std::fmt::Display) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        // One warning per outage, not one per request.
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "state store: the server is unreachable; password and refresh grants answer 503, client credentials go on without lockout counting");
        }
    }

    /// Whether the last call (or stream read) reached the server.
    pub fn available(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// The last reachability error while failing; None while available.
    pub fn error(&self) -> Option<String> {
        if self.available() {
            return None;
        }
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The follower connected, or lost its connection.
    pub fn stream_connected(&self, connected: bool) {
        self.stream_connected.store(connected, Ordering::Release);
    }

    /// The follower heard from the stream: the server is reachable.
    pub fn stream_event(&self) {
        *self.last_event.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.stream_connected(true);
        self.reached();
    }

    /// The follower's side: connected, and seconds since it last heard from the stream.
    pub fn stream(&self) -> super::StreamStatus {
        let last = *self.last_event.lock().unwrap_or_else(PoisonError::into_inner);
        super::StreamStatus {
            connected: self.stream_connected.load(Ordering::Acquire),
            last_event_age_secs: last.map(|t| t.elapsed().as_secs_f64()),
        }
    }
}
