//! Merging per-connection statistics, the final report (text or JSON) and the progress line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::load::{histogram, ConnStats, Shared, ERROR_KINDS};

/// The figures of a whole run.
#[derive(Debug)]
pub struct Report {
    /// Counted responses (any status).
    pub requests: u64,
    /// Length of the measured window.
    pub duration: Duration,
    /// Latency of every counted response, in microseconds.
    pub hist: Histogram<u64>,
    /// Counted responses by status.
    pub status: BTreeMap<u16, u64>,
    /// Errors by kind (every kind present, zero or not).
    pub errors: BTreeMap<&'static str, u64>,
    pub reconnects: u64,
    /// Open loop: due requests never sent.
    pub unsent: u64,
    /// The target (a curve's name in the chart, a side of a comparison).
    pub url: String,
    /// One line describing the target and the load shape.
    pub label: String,
    /// The first error any connection saw.
    pub first_error: Option<String>,
}

impl Report {
    /// Merges the connections' statistics.
    pub fn merge(stats: Vec<ConnStats>, duration: Duration, url: String, label: String) -> Report {
        let mut r = Report {
            requests: 0,
            duration,
            hist: histogram(),
            status: BTreeMap::new(),
            errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            reconnects: 0,
            unsent: 0,
            url,
            label,
            first_error: None,
        };
        for s in stats {
            // Same bounds on both sides, so adding cannot fail.
            let _ = r.hist.add(&s.hist);
            for (code, n) in s.status {
                *r.status.entry(code).or_default() += n;
                r.requests += n;
            }
            for (k, n) in ERROR_KINDS.iter().zip(s.errors) {
                *r.errors.entry(k).or_default() += n;
            }
            r.reconnects += s.reconnects;
            r.unsent += s.unsent;
            if r.first_error.is_none() {
                r.first_error = s.first_error;
            }
        }
        r
    }

    /// Requests per second over the measured window.
    pub fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Responses whose status is not 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.status.iter().filter(|(c, _)| !(200..300).contains(*c)).map(|(_, n)| n).sum()
    }

    /// The latency at `quantile` (0..=1) in microseconds; 0 without any response.
    pub fn q(&self, quantile: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(quantile)
        }
    }

    /// The whole report as one JSON object.
    pub fn to_json(&self) -> Value {
        let status: serde_json::Map<String, Value> =
            self.status.iter().map(|(c, n)| (c.to_string(), (*n).into())).collect();
        let errors: serde_json::Map<String, Value> =
            self.errors.iter().map(|(k, n)| (k.to_string(), (*n).into())).collect();
        let mean = if self.hist.is_empty() { 0.0 } else { self.hist.mean() };
        json!({
            "target": self.label,
            "url": self.url,
            "requests": self.requests,
            "duration_secs": self.duration.as_secs_f64(),
            "rps": self.rps(),
            "latency_us": {
                "p50": self.q(0.5),
                "p90": self.q(0.9),
                "p99": self.q(0.99),
                "p999": self.q(0.999),
                "max": if self.hist.is_empty() { 0 } else { self.hist.max() },
                "mean": (mean * 10.0).round() / 10.0,
            },
            "status": status,
            "non_2xx": self.non_2xx(),
            "errors": errors,
            "reconnects": self.reconnects,
            "unsent": self.unsent,
            "first_error": self.first_error,
        })
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}", self.label);
        let _ = writeln!(
            o,
            "  requests   {} in {:.2} s = {:.1} req/s",
            self.requests,
            self.duration.as_secs_f64(),
            self.rps()
        );
        let mean = if self.hist.is_empty() { 0 } else { self.hist.mean().round() as u64 };
        let lat: Vec<String> = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)]
            .iter()
            .map(|(n, q)| format!("{n} {}", micros(self.q(*q))))
            .chain([format!("max {}", micros(if self.hist.is_empty() { 0 } else { self.hist.max() }))])
            .chain([format!("mean {}", micros(mean))])
            .collect();
        let _ = writeln!(o, "  latency    {}", lat.join("  "));
        let status: Vec<String> = self.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(o, "  status     {}", if status.is_empty() { "none".into() } else { status.join(", ") });
        let errors: Vec<String> =
            self.errors.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(o, "  errors     {}", if errors.is_empty() { "none".into() } else { errors.join(", ") });
        if let Some(e) = &self.first_error {
            let _ = writeln!(o, "  first error {e}");
        }
        if self.reconnects > 0 {
            let _ = writeln!(o, "  reconnects {}", self.reconnects);
        }
        if self.unsent > 0 {
            let _ = writeln!(o, "  unsent     {} (due at --rate but the target fell behind)", self.unsent);
        }
        o
    }
}

/// 1234 -> "1.23ms", 56 -> "56µs", 2_500_000 -> "2.50s".
pub fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Prints `\r[ 3s] 12345 req/s ...` on stderr every second while the run lasts, when stderr is a
/// terminal; clears the line at the end.
pub async fn progress(shared: Arc<Shared>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut tick = tokio::time::interval_at(shared.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    let mut secs = 0;
    while tokio::time::Instant::now() < shared.end {
        tick.tick().await;
        secs += 1;
        let done = shared.done.load(Relaxed);
        let phase = if tokio::time::Instant::now() <= shared.measure_from { " (warm-up)" } else { "" };
        eprint!(
            "\r[{secs:>3}s] {:>9} req/s  {:>10} responses  {:>6} errors{phase}    ",
            done - last,
            done,
            shared.failed.load(Relaxed)
        );
        let _ = std::io::stderr().flush();
        last = done;
    }
}

/// Erases the progress line, if one was drawn.
pub fn clear_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r{:80}\r", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(lat: &[u64], codes: &[(u16, u64)], errors: [u64; 4]) -> ConnStats {
        let mut hist = histogram();
        for l in lat {
            hist.record(*l).unwrap();
        }
        ConnStats { hist, status: codes.to_vec(), errors, reconnects: 1, unsent: 0, first_error: None }
    }

    #[test]
    fn merged_report_json_shape() {
        let a = stats(&[100, 200, 300], &[(200, 3)], [1, 0, 2, 0]);
        let b = stats(&[1000], &[(200, 1), (401, 2)], [0, 1, 0, 0]);
        let r = Report::merge(vec![a, b], Duration::from_secs(2), "u".into(), "t".into());
        let j = r.to_json();
        assert_eq!(j["requests"], 6);
        assert_eq!(j["duration_secs"], 2.0);
        assert_eq!(j["rps"], 3.0);
        assert_eq!(j["status"], json!({"200": 4, "401": 2}));
        assert_eq!(j["non_2xx"], 2);
        assert_eq!(j["errors"], json!({"connect": 1, "timeout": 1, "io": 2, "no_access_token": 0}));
        assert_eq!(j["reconnects"], 2);
        let lat = j["latency_us"].as_object().unwrap();
        let keys: Vec<&str> = lat.keys().map(String::as_str).collect();
        for k in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(keys.contains(&k), "{k}");
            assert!(lat[k].is_number());
        }
        assert_eq!(lat["p50"], 200);
        assert!((999..=1001).contains(&lat["max"].as_u64().unwrap()));
        let text = r.to_text();
        assert!(
            text.contains("6 in 2.00 s = 3.0 req/s") && text.contains("401: 2") && text.contains("io: 2"),
            "{text}"
        );
    }

    #[test]
    fn empty_report_has_zeroes_not_panics() {
        let r = Report::merge(vec![], Duration::ZERO, "u".into(), "t".into());
        let j = r.to_json();
        assert_eq!((j["requests"].as_u64(), j["rps"].as_f64()), (Some(0), Some(0.0)));
        assert_eq!(j["latency_us"]["max"], 0);
        assert!(r.to_text().contains("status     none"));
    }

    #[test]
    fn micros_units() {
        assert_eq!((micros(56), micros(1234), micros(2_500_000)), ("56µs".into(), "1.23ms".into(), "2.50s".into()));
    }
}
