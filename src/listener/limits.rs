//! Connection admission: a cap on open client connections overall and per IP address, so one
//! client (or a flood) cannot take every file descriptor. Checked at accept, before any TLS work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts open connections.
pub struct ConnLimiter {
    /// One permit per allowed open connection.
    total: Arc<Semaphore>,
    /// Open connections by client address (entries removed at zero, so the map stays small).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Per-address cap; 0 disables it.
    per_ip_max: usize,
}

/// Held by a connection task; gives its slots back when the connection ends.
pub struct ConnGuard {
    /// The overall slot.
    _permit: OwnedSemaphorePermit,
    /// Whose per-address count to decrement.
    ip: IpAddr,
    /// The limiter to give back to.
    limiter: Arc<ConnLimiter>,
}

impl ConnLimiter {
    /// At most `max` connections, and `per_ip_max` from one address (0: no per-address cap).
    pub fn new(max: usize, per_ip_max: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter { total: Arc::new(Semaphore::new(max)), per_ip: Mutex::new(HashMap::new()), per_ip_max })
    }

    /// Admits a connection from `ip`, or names the limit that refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, &'static str> {
        let permit = self.total.clone().try_acquire_owned().map_err(|_| "max_connections")?;
        if self.per_ip_max > 0 {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                return Err("per_ip_connections");
            }
            *n += 1;
        }
        Ok(ConnGuard { _permit: permit, ip, limiter: self.clone() })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.limiter.per_ip_max == 0 {
            return;
        }
        let mut m = self.limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
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
        assert_eq!(l.admit(a).err(), Some("per_ip_connections"));
        let _g3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some("max_connections"));
        drop(g1);
        assert!(l.admit(a).is_ok(), "a slot came back");
        assert!(l.per_ip.lock().unwrap().len() <= 2);
    }
}
