//! `--compare URL_A URL_B`: what B costs over A, measured in interleaved rounds.
//!
//! On a shared machine throughput drifts by tens of percent over minutes (a compile next door, a
//! frequency change), so measuring A for a minute and then B for a minute compares two moments as
//! much as two targets. Rounds of A then B put both under the same conditions several times over;
//! the ratio is taken within each round, and its range over the rounds says how far to trust it.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::load::histogram;
use super::plot::Curve;
use super::report::{micros, Report};

/// Both targets' runs, round by round.
pub struct Comparison {
    /// A's run of each round.
    pub a: Vec<Report>,
    /// B's run of each round (measured right after A's of the same round).
    pub b: Vec<Report>,
}

/// One target's figures over all rounds.
struct Side {
    /// The target, as given.
    url: String,
    /// req/s of each round.
    rps: Vec<f64>,
    /// Every round's latencies together: the percentiles of the whole comparison.
    hist: Histogram<u64>,
    /// Non-2xx answers and errors over all rounds.
    bad: u64,
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        (0.0, 0.0)
    } else {
        (min, max)
    }
}

impl Side {
    fn of(runs: &[Report]) -> Side {
        let mut hist = histogram();
        for r in runs {
            // Same bounds on both sides, so adding cannot fail.
            let _ = hist.add(&r.hist);
        }
        Side {
            url: runs.first().map(|r| r.url.clone()).unwrap_or_default(),
            rps: runs.iter().map(Report::rps).collect(),
            hist,
            bad: runs.iter().map(|r| r.non_2xx() + r.errors.values().sum::<u64>()).sum(),
        }
    }

    fn q(&self, quantile: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(quantile)
        }
    }

    fn to_json(&self) -> Value {
        let (min, max) = range(&self.rps);
        json!({
            "url": self.url,
            "rps_median": median(&self.rps),
            "rps_min": min,
            "rps_max": max,
            "rps": self.rps,
            "latency_us": { "p50": self.q(0.5), "p99": self.q(0.99) },
            "non_2xx_and_errors": self.bad,
        })
    }
}

impl Comparison {
    /// Splits runs measured as A, B, A, B... into the two sides.
    pub fn new(runs: Vec<Report>) -> Comparison {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, r) in runs.into_iter().enumerate() {
            if i % 2 == 0 {
                a.push(r);
            } else {
                b.push(r);
            }
        }
        Comparison { a, b }
    }

    /// B's req/s over A's, per round (a round where A answered nothing is left out).
    pub fn ratios(&self) -> Vec<f64> {
        self.a.iter().zip(&self.b).filter(|(a, _)| a.rps() > 0.0).map(|(a, b)| b.rps() / a.rps()).collect()
    }

    /// The chart's curves: each side's latencies over all rounds.
    pub fn curves(&self) -> Vec<Curve> {
        [Side::of(&self.a), Side::of(&self.b)]
            .iter()
            .zip(["A", "B"])
            .map(|(s, name)| Curve::of(&format!("{name} {}", s.url), &s.hist, median(&s.rps)))
            .collect()
    }

    /// The summary and every round as one JSON object.
    pub fn to_json(&self) -> Value {
        let ratios = self.ratios();
        let (min, max) = range(&ratios);
        json!({
            "compare": {
                "rounds": self.a.len(),
                "a": Side::of(&self.a).to_json(),
                "b": Side::of(&self.b).to_json(),
                "ratio_b_over_a": { "median": median(&ratios), "min": min, "max": max, "per_round": ratios },
            },
            "runs": {
                "a": self.a.iter().map(Report::to_json).collect::<Vec<_>>(),
                "b": self.b.iter().map(Report::to_json).collect::<Vec<_>>(),
            },
        })
    }

    /// The human-readable summary: both medians, the ratio and its range, every round.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let shape = self.a.first().map_or("", |r| r.label.split_once(" (").map_or("", |(_, s)| s));
        let _ = writeln!(o, "compare: {} rounds of A then B ({shape}", self.a.len());
        let sides = [("A", Side::of(&self.a)), ("B", Side::of(&self.b))];
        for (name, s) in &sides {
            let (min, max) = range(&s.rps);
            let _ = writeln!(
                o,
                "  {name}  {:<40} median {:>10.1} req/s ({:.1} .. {:.1})  p50 {}  p99 {}",
                s.url,
                median(&s.rps),
                min,
                max,
                micros(s.q(0.5)),
                micros(s.q(0.99)),
            );
        }
        let ratios = self.ratios();
        let (min, max) = range(&ratios);
        let _ = writeln!(o, "  B/A {:.3} (median of the rounds; {min:.3} .. {max:.3})", median(&ratios));
        for (name, s) in &sides {
            let per: Vec<String> = s.rps.iter().map(|r| format!("{r:.0}")).collect();
            let _ = writeln!(o, "  {name} req/s by round: {}", per.join(" "));
        }
        for (name, s) in &sides {
            if s.bad > 0 {
                let _ = writeln!(o, "  {name} non-2xx answers and errors: {} (see --json)", s.bad);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(url: &str, requests: u64, lat: u64) -> Report {
        let mut stats = super::super::load::ConnStats::new();
        for _ in 0..requests {
            stats.hist.record(lat).unwrap();
        }
        stats.status.push((200, requests));
        Report::merge(vec![stats], Duration::from_secs(1), url.into(), format!("GET {url} (HTTP/1.1, x)"))
    }

    #[test]
    fn medians_ratio_and_range_over_rounds() {
        assert_eq!((median(&[3.0, 1.0, 2.0]), median(&[4.0, 1.0, 2.0, 3.0]), median(&[])), (2.0, 2.5, 0.0));
        // A 100, 110, 90 req/s; B 50, 66, 63: ratios 0.5, 0.6, 0.7.
        let runs = [(100, 50), (110, 66), (90, 63)]
            .into_iter()
            .flat_map(|(a, b)| [report("http://a/", a, 100), report("http://b/", b, 1000)])
            .collect();
        let c = Comparison::new(runs);
        let j = c.to_json();
        let cmp = &j["compare"];
        assert_eq!(cmp["rounds"], 3);
        assert_eq!((cmp["a"]["url"].as_str(), cmp["b"]["url"].as_str()), (Some("http://a/"), Some("http://b/")));
        assert_eq!((cmp["a"]["rps_median"].as_f64(), cmp["b"]["rps_median"].as_f64()), (Some(100.0), Some(63.0)));
        let ratio = &cmp["ratio_b_over_a"];
        assert!((ratio["median"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{ratio}");
        assert!((ratio["min"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{ratio}");
        assert!((ratio["max"].as_f64().unwrap() - 0.7).abs() < 1e-9, "{ratio}");
        assert_eq!(cmp["b"]["latency_us"]["p99"], 1000);
        assert_eq!(j["runs"]["a"].as_array().map(Vec::len), Some(3));
        let text = c.to_text();
        assert!(text.contains("B/A 0.600") && text.contains("0.500 .. 0.700"), "{text}");
        assert!(text.contains("A req/s by round: 100 110 90"), "{text}");
    }
}
