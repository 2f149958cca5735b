//! Per-client-IP request limit at the token endpoint: fixed one-minute windows in a bounded map,
//! so a flood of addresses cannot grow memory without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Counts requests per address per minute.
pub struct IpLimiter {
    /// address -> (window start minute, requests in it).
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
    /// Most addresses tracked at once.
    cap: usize,
}

impl IpLimiter {
    /// A limiter tracking at most `cap` addresses.
    pub fn new(cap: usize) -> IpLimiter {
        IpLimiter { windows: Mutex::new(HashMap::new()), cap }
    }

    /// Counts one request from `ip` at unix time `now`; Err(seconds to wait) past `limit` a minute.
    /// `limit` 0 disables the check.
    pub fn check(&self, ip: IpAddr, now: u64, limit: u32) -> Result<(), u64> {
        if limit == 0 {
            return Ok(());
        }
        let minute = now / 60;
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= self.cap && !w.contains_key(&ip) {
            w.retain(|_, (m, _)| *m == minute);
            if w.len() >= self.cap {
                // Still full of live windows: refuse newcomers rather than forget who is over.
                return Err(60 - now % 60);
            }
        }
        let e = w.entry(ip).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        e.1 = e.1.saturating_add(1);
        if e.1 > limit {
            Err(60 - now % 60)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_minute_resets_and_stays_bounded() {
        let l = IpLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(a, 120, 5).is_ok());
        }
        assert_eq!(l.check(a, 130, 5), Err(50));
        assert!(l.check(a, 180, 5).is_ok(), "new minute");
        assert!(l.check(a, 180, 0).is_ok(), "0 disables");
        for i in 0..10u8 {
            let _ = l.check(IpAddr::from([10, 1, 0, i]), 180, 5);
        }
        assert!(l.windows.lock().unwrap().len() <= 3);
        assert!(l.check(IpAddr::from([10, 2, 0, 1]), 240, 5).is_ok(), "old windows are evicted");
    }
}
