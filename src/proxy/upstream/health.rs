//! Health of one endpoint. Passive: failures in a row eject it for a while, doubling on repeat.
//! Active: `health_check` probes failing in a row take it down until probes pass again in a row.
//! It is in the balance set only while both allow it (not ejected, or the ejection is over, and
//! not down), so an ejected endpoint whose time is up but whose probes still fail stays out.
//! Plus the counts `/upstreams` and `/metrics` show. Atomics only: every request touches it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When ejection starts and how long it lasts, from `[[upstreams]] eject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectPolicy {
    /// Failures in a row that eject.
    pub failures: u32,
    /// First ejection, in milliseconds.
    pub base_ms: u64,
    /// Longest ejection, in milliseconds.
    pub max_ms: u64,
}

/// Milliseconds since the first call in this process: the ejection clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // Starts at 1 so that 0 can mean "never ejected".
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One endpoint's health and counts; kept across reloads while the endpoint stays in its group.
#[derive(Debug, Default)]
pub struct Health {
    /// Failures since the last success.
    consecutive: AtomicU32,
    /// Out of the set until this [`now_ms`]; 0 when never ejected.
    until: AtomicU64,
    /// Ejections in a row without a calm `max_ms` between them: the doubling exponent.
    streak: AtomicU32,
    /// Ejections since the endpoint joined, for `/upstreams` and metrics.
    ejections: AtomicU64,
    /// Requests sent to it (retries included).
    requests: AtomicU64,
    /// Connect errors, resets, time-outs and 5xx answers.
    failures: AtomicU64,
    /// Requests sent and not yet answered (head not yet received): `least_request` reads it.
    in_flight: AtomicU32,
    /// Set while the endpoint is known to be out, so its return is logged once.
    out: AtomicBool,
    /// Requests that failed here and were sent to another endpoint.
    retries: AtomicU64,
    /// Requests that failed here and were not retried because the group's retry budget was spent.
    budget_exhausted: AtomicU64,
    /// Set while active probes say it is down: out of the set until they pass again.
    down: AtomicBool,
    /// Probes passed (above 0) or failed (below 0) in a row.
    probe_streak: AtomicI32,
    /// The last probe's outcome, as [`Probe::code`]; 0 before the first.
    last_probe: AtomicU32,
    /// When the last probe ended ([`now_ms`]); 0 before the first.
    last_probe_at: AtomicU64,
}

/// What one active probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It answered with this status (a pass when 2xx or 3xx).
    Status(u16),
    /// No connection, or it closed before answering.
    Unreachable,
    /// No answer head within `timeout_ms`.
    TimedOut,
}

impl Probe {
    /// Whether it counts as a pass.
    pub fn passed(self) -> bool {
        matches!(self, Probe::Status(s) if (200..400).contains(&s))
    }

    /// As stored in [`Health`]: the status, or 1 and 2 for the failures without one.
    fn code(self) -> u32 {
        match self {
            Probe::Status(s) => u32::from(s),
            Probe::Unreachable => 1,
            Probe::TimedOut => 2,
        }
    }

    fn from_code(code: u32) -> Option<Probe> {
        match code {
            0 => None,
            1 => Some(Probe::Unreachable),
            2 => Some(Probe::TimedOut),
            s => Some(Probe::Status(s as u16)),
        }
    }

    /// In words for `/upstreams`: the status, `unreachable` or `timed out`.
    pub fn describe(self) -> String {
        match self {
            Probe::Status(s) => s.to_string(),
            Probe::Unreachable => "unreachable".into(),
            Probe::TimedOut => "timed out".into(),
        }
    }
}

/// Counts one request in flight until dropped (answered, failed or cancelled).
pub struct InFlight<'a>(&'a Health);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Health {
    /// Whether the endpoint is in the set at `now`: not ejected (or its time is up) and not down.
    pub fn available(&self, now: u64) -> bool {
        self.until.load(Ordering::Relaxed) <= now && !self.down.load(Ordering::Relaxed)
    }

    /// Whether active probes say it is down.
    pub fn down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A probe ended at `now` with `probe`: `unhealthy` failures in a row take the endpoint down,
    /// `healthy` passes in a row bring it back. Returns the new state (true: up) when it changed.
    pub fn probed(&self, probe: Probe, now: u64, healthy: u32, unhealthy: u32) -> Option<bool> {
        self.last_probe.store(probe.code(), Ordering::Relaxed);
        self.last_probe_at.store(now, Ordering::Relaxed);
        let before = self.probe_streak.load(Ordering::Relaxed);
        let streak = match (probe.passed(), before) {
            (true, n) if n > 0 => n.saturating_add(1),
            (true, _) => 1,
            (false, n) if n < 0 => n.saturating_sub(1),
            (false, _) => -1,
        };
        self.probe_streak.store(streak, Ordering::Relaxed);
        let down = self.down.load(Ordering::Relaxed);
        let limit = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        if down && streak >= limit(healthy) {
            self.down.store(false, Ordering::Relaxed);
            return Some(true);
        }
        if !down && streak <= -limit(unhealthy) {
            self.down.store(true, Ordering::Relaxed);
            return Some(false);
        }
        None
    }

    /// The last probe's outcome and how long ago it ended at `now`, in milliseconds.
    pub fn last_probe(&self, now: u64) -> Option<(Probe, u64)> {
        let probe = Probe::from_code(self.last_probe.load(Ordering::Relaxed))?;
        Some((probe, now.saturating_sub(self.last_probe_at.load(Ordering::Relaxed))))
    }

    /// Requests waiting for their response head.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request is sent: counted, and in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// It answered (below 500): the failures in a row start over. True for the first answer
    /// after an ejection (worth a log line).
    pub fn succeeded(&self) -> bool {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        self.out.load(Ordering::Relaxed) && self.out.swap(false, Ordering::Relaxed)
    }

    /// It failed at `now`. Returns the ejection's length when this failure ejects it.
    pub fn failed(&self, policy: &EjectPolicy, now: u64) -> Option<Duration> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let until = self.until.load(Ordering::Relaxed);
        // Failures while out (tried in panic mode) count only once it is back.
        if until > now {
            return None;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.failures {
            return None;
        }
        // A calm max_ms since the last ejection ended forgives the earlier ones.
        let streak = if until != 0 && now.saturating_sub(until) > policy.max_ms {
            self.streak.store(0, Ordering::Relaxed);
            0
        } else {
            self.streak.load(Ordering::Relaxed)
        };
        let length = policy.base_ms.saturating_mul(1u64 << streak.min(32)).min(policy.max_ms);
        // One of the requests failing at once ejects; the others see it done.
        if self.until.compare_exchange(until, now + length, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return None;
        }
        self.streak.store(streak + 1, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.out.store(true, Ordering::Relaxed);
        Some(Duration::from_millis(length))
    }

    /// A request that failed here is retried elsewhere (`budget`: it was within the budget, or
    /// else refused by it).
    pub fn retry(&self, budget: bool) {
        let counter = if budget { &self.retries } else { &self.budget_exhausted };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests retried after failing here, and ones the retry budget refused.
    pub fn retries(&self) -> (u64, u64) {
        (self.retries.load(Ordering::Relaxed), self.budget_exhausted.load(Ordering::Relaxed))
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Milliseconds of ejection left at `now` (0 when in the set).
    pub fn ejected_for_ms(&self, now: u64) -> u64 {
        self.until.load(Ordering::Relaxed).saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: EjectPolicy = EjectPolicy { failures: 3, base_ms: 1000, max_ms: 5000 };

    #[test]
    fn failures_in_a_row_eject_and_a_success_starts_over() {
        let h = Health::default();
        assert_eq!(h.failed(&POLICY, 10), None);
        assert_eq!(h.failed(&POLICY, 10), None);
        assert!(!h.succeeded());
        assert_eq!(h.failed(&POLICY, 10), None);
        assert_eq!(h.failed(&POLICY, 10), None);
        assert_eq!(h.failed(&POLICY, 10), Some(Duration::from_millis(1000)));
        assert!(!h.available(10) && !h.available(1009) && h.available(1010));
        assert_eq!((h.ejections(), h.failures()), (1, 5));
        assert!(h.succeeded(), "the first answer after an ejection is told apart");
        assert!(!h.succeeded());
    }

    #[test]
    fn repeats_double_up_to_the_most_and_calm_forgives() {
        let h = Health::default();
        let mut now = 100;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let got = (0..3).find_map(|_| h.failed(&POLICY, now)).expect("ejected");
            lengths.push(got.as_millis() as u64);
            now += got.as_millis() as u64; // back at once, failing again
        }
        assert_eq!(lengths, [1000, 2000, 4000, 5000, 5000]);
        // Back, then calm for longer than max: the next ejection is the first again.
        now += 5001;
        let got = (0..3).find_map(|_| h.failed(&POLICY, now)).expect("ejected");
        assert_eq!(got, Duration::from_millis(1000));
    }

    #[test]
    fn probes_take_down_and_bring_back_in_a_row() {
        let h = Health::default();
        let (ok, bad) = (Probe::Status(200), Probe::Status(503));
        assert_eq!(h.probed(bad, 1, 2, 3), None);
        assert_eq!(h.probed(bad, 2, 2, 3), None);
        assert_eq!(h.probed(ok, 3, 2, 3), None, "a pass starts the failures over");
        assert_eq!(h.probed(bad, 4, 2, 3), None);
        assert_eq!(h.probed(Probe::TimedOut, 5, 2, 3), None);
        assert_eq!(h.probed(Probe::Unreachable, 6, 2, 3), Some(false));
        assert!(!h.available(6) && h.down());
        assert_eq!(h.probed(bad, 7, 2, 3), None, "already down");
        assert_eq!(h.probed(ok, 8, 2, 3), None);
        assert_eq!(h.probed(ok, 9, 2, 3), Some(true));
        assert!(h.available(9));
        assert_eq!(h.last_probe(10), Some((ok, 1)));
    }

    #[test]
    fn an_ejection_over_does_not_bring_back_a_down_endpoint() {
        let h = Health::default();
        (0..3).for_each(|_| {
            let _ = h.failed(&POLICY, 0);
        });
        (0..3).for_each(|n| {
            let _ = h.probed(Probe::Unreachable, n, 2, 3);
        });
        assert!(!h.available(5000), "ejection over, probes still failing: out");
        (0..2).for_each(|n| {
            let _ = h.probed(Probe::Status(204), n, 2, 3);
        });
        assert!(h.available(5000));
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let h = Health::default();
        (0..3).for_each(|_| {
            let _ = h.failed(&POLICY, 0);
        });
        assert_eq!((0..10).find_map(|_| h.failed(&POLICY, 500)), None);
        assert_eq!(h.ejected_for_ms(500), 500);
    }
}
