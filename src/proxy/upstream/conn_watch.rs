//! What one client connection's I/O, its driver and the upstream response bodies sent on it tell
//! each other. The bodies are made here (`idle`, `pool`), the driver and I/O in `listener`, and
//! `gateway::ConnInfo` carries the handle to each request: defined below all three so that the
//! proxy's bodies need nothing of the process-wide state.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

/// State one client connection shares between its I/O, its driver and its response bodies (one
/// allocation per connection; a request clones the handle).
pub struct ConnWatch {
    /// The h2 client's SETTINGS_MAX_HEADER_LIST_SIZE (`u32::MAX` when it set none): a bigger
    /// response head is answered 502 rather than sent, which would break its whole connection.
    pub max_header_list: AtomicU32,
    /// Upstream response bodies not yet ended. While one is, something polls a body at least
    /// every beat of its timer, unless the client has stopped reading.
    pub in_flight: AtomicUsize,
    /// Bumped on every poll of a response body, so the driver can tell a stall from slow progress.
    pub progress: AtomicUsize,
    /// Where the limits hit on this connection are counted.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ConnWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnWatch")
            .field("max_header_list", &self.max_header_list)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl ConnWatch {
    /// A fresh watch: no client limit known, no body in flight.
    pub fn new(metrics: Arc<Metrics>) -> ConnWatch {
        ConnWatch {
            max_header_list: AtomicU32::new(u32::MAX),
            in_flight: AtomicUsize::new(0),
            progress: AtomicUsize::new(0),
            metrics,
        }
    }

    /// An upstream response body is on its way to the client.
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A response body was polled.
    pub fn polled(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A body counted by [`Self::started`] ended or went away.
    pub fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
