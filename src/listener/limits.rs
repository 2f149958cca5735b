//! Connection admission: a cap on open client connections overall and per IP address, so one
//! client (or a flood) cannot take every file descriptor. Checked at accept, before any TLS work.

use crate::metrics::Limit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts open connections. The caps are read at each accept, so a reload that changes them
/// applies to the next connection (connections already open are never cut).
pub struct ConnLimiter {
    /// Open connections, all listeners together.
    open: AtomicUsize,
    /// Overall cap (`server.max_connections`).
    max: AtomicUsize,
    /// Open connections by client address (entries removed at zero, so the map stays small).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Per-address cap (`server.max_connections_per_ip`); 0 disables it.
    per_ip_max: AtomicUsize,
}

/// Held by a connection task; gives its slots back when the connection ends.
pub struct ConnGuard {
    /// Whose per-address count to decrement, when it was counted (the cap may change meanwhile).
    ip: Option<IpAddr>,
    /// The limiter to give back to.
    limiter: Arc<ConnLimiter>,
}

impl ConnLimiter {
    /// At most `max` connections, and `per_ip_max` from one address (0: no per-address cap).
    pub fn new(max: usize, per_ip_max: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            per_ip: Mutex::new(HashMap::new()),
            per_ip_max: AtomicUsize::new(per_ip_max),
        })
    }

    /// New caps for the connections accepted from now on.
    pub fn set_limits(&self, max: usize, per_ip_max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.per_ip_max.store(per_ip_max, Ordering::Relaxed);
    }

    /// Admits a connection from `ip`, or names the limit that refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Limit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max.load(Ordering::Relaxed) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Limit::MaxConnections);
        }
        // From here the guard owns the overall slot, and gives it back if the next check fails.
        let mut guard = ConnGuard { ip: None, limiter: self.clone() };
        let per_ip_max = self.per_ip_max.load(Ordering::Relaxed);
        if per_ip_max > 0 {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_insert(0);
            if *n >= per_ip_max {
                return Err(Limit::PerIpConnections);
            }
            *n += 1;
            guard.ip = Some(ip);
        }
        Ok(guard)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limiter.open.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = self.ip else { return };
        let mut m = self.limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_overall_and_per_address_and_gives_back_on_drop() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Limit::PerIpConnections));
        let _g3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Limit::MaxConnections));
        drop(g1);
        assert!(l.admit(a).is_ok(), "a slot came back");
        assert!(l.per_ip.lock().unwrap().len() <= 2);
    }

    #[test]
    fn new_caps_apply_to_the_next_connection_and_open_ones_stay() {
        let l = ConnLimiter::new(1, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Limit::MaxConnections));
        l.set_limits(3, 1);
        let g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Limit::PerIpConnections));
        l.set_limits(1, 0);
        assert_eq!(l.admit(a).err(), Some(Limit::MaxConnections));
        drop((g1, g2));
        assert!(l.per_ip.lock().unwrap().is_empty(), "per-address counts given back");
        assert!(l.admit(a).is_ok());
    }
}
