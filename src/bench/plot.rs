//! `--plot FILE.svg`: the latency distribution of a run as an HDR percentile chart.
//!
//! x is the percentile on a log scale of 1/(1-p) (0%, 90%, 99%, 99.9%... equally spaced), the
//! way HdrHistogram's plotter draws it: the tail, where gateways differ, gets as much room as the
//! median. y is the latency, log (default) or linear. One curve per target, overlaid.
//!
//! Written by hand as plain SVG text: a chart of a few polylines, gridlines and labels is ~200
//! lines here, where the plotting crates (plotters and its font stack) would add far more to build
//! on this small machine than they save.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

pub use super::args::PlotScale;
use super::report::micros;

/// One target's curve.
pub struct Curve {
    /// Legend name (the URL).
    pub name: String,
    /// Legend figures: req/s, p50, p99, max.
    pub summary: String,
    /// (x = log10(1/(1-p)), latency in µs), x rising; empty when nothing was answered.
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// The curve of `hist` (latencies in µs), named `name`, with `rps` in the legend.
    pub fn of(name: &str, hist: &Histogram<u64>, rps: f64) -> Curve {
        if hist.is_empty() {
            return Curve { name: name.into(), summary: "no answers".into(), points: Vec::new() };
        }
        // The last point is the maximum, drawn where its percentile's resolution ends: with n
        // samples, 1 - p cannot be told apart below 1/n.
        let x_end = (hist.len() as f64).log10().max(1.0);
        let mut points: Vec<(f64, f64)> = hist
            .iter_quantiles(5)
            .map(|v| {
                let p = v.quantile_iterated_to();
                let x = if p >= 1.0 { x_end } else { (-(1.0 - p).log10()).min(x_end) };
                (x, hist.highest_equivalent(v.value_iterated_to()) as f64)
            })
            .collect();
        points.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
        let summary = format!(
            "{rps:.0} req/s, p50 {}, p99 {}, max {}",
            micros(hist.value_at_quantile(0.5)),
            micros(hist.value_at_quantile(0.99)),
            micros(hist.max())
        );
        Curve { name: name.into(), summary, points }
    }
}

/// Colour-blind-safe colours (Okabe and Ito), one per curve, cycling.
const COLOURS: [&str; 7] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
const W: f64 = 960.0;
const H: f64 = 600.0;
/// Plot area: left, top, right, bottom edges.
const L: f64 = 90.0;
const T: f64 = 70.0;
const R: f64 = W - 50.0;
const B: f64 = H - 70.0;

/// "0%", "90%", "99%", "99.9%"... for x = 0, 1, 2, 3...
fn percentile_label(decades: u32) -> String {
    match decades {
        0 => "0%".into(),
        1 => "90%".into(),
        d => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

/// A latency tick label without trailing zeros: 200µs, 1ms, 2.5ms, 1s.
fn latency_label(us: f64) -> String {
    let trim = |v: f64, unit: &str| {
        let s = format!("{v:.3}");
        format!("{}{unit}", s.trim_end_matches('0').trim_end_matches('.'))
    };
    if us == 0.0 {
        "0".into()
    } else if us < 1_000.0 {
        trim(us, "µs")
    } else if us < 1_000_000.0 {
        trim(us / 1e3, "ms")
    } else {
        trim(us / 1e6, "s")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The y axis: value -> pixel, and its ticks (value, labelled).
struct YAxis {
    /// Log or linear.
    scale: PlotScale,
    /// The bottom of the axis in µs (0 when linear).
    lo: f64,
    /// The top of the axis in µs.
    hi: f64,
}

impl YAxis {
    fn new(scale: PlotScale, min: f64, max: f64) -> YAxis {
        match scale {
            PlotScale::Log => {
                // 1, 2 or 5 times a power of ten on both ends: no empty decade above the maximum.
                let lo = nice_floor(min.max(1.0));
                let hi = nice_step(max.max(lo * 2.0));
                YAxis { scale, lo, hi }
            }
            PlotScale::Linear => YAxis { scale, lo: 0.0, hi: nice_step(max.max(1.0) / 6.0) * 6.0 },
        }
    }

    fn px(&self, v: f64) -> f64 {
        let f = match self.scale {
            PlotScale::Log => (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
            PlotScale::Linear => (v - self.lo) / (self.hi - self.lo),
        };
        B - f * (B - T)
    }

    fn ticks(&self) -> Vec<(f64, bool)> {
        match self.scale {
            PlotScale::Log => {
                // Label 1-2-5 within few decades, only the decades over more (the lines stay),
                // and always both ends.
                let labelled: &[u32] = if self.hi / self.lo <= 1000.0 { &[1, 2, 5] } else { &[1] };
                let mut out = Vec::new();
                let mut d = 10f64.powf(self.lo.log10().floor());
                while d <= self.hi {
                    for m in 1..10u32 {
                        let v = d * f64::from(m);
                        if v >= self.lo * 0.999 && v <= self.hi * 1.001 {
                            let end = v <= self.lo * 1.001 || v >= self.hi * 0.999;
                            out.push((v, end || labelled.contains(&m)));
                        }
                    }
                    d *= 10.0;
                }
                out
            }
            PlotScale::Linear => {
                let step = (self.hi - self.lo) / 6.0;
                (0..=6).map(|i| (self.lo + step * i as f64, true)).collect()
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at most `v`.
fn nice_floor(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0].into_iter().map(|m| m * p).find(|x| *x <= v * 1.000_001).unwrap_or(p)
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

/// The chart as SVG text: `subtitle` says how the load was made.
pub fn svg(subtitle: &str, curves: &[Curve], scale: PlotScale) -> String {
    let all = || curves.iter().flat_map(|c| c.points.iter());
    // The last decade is drawn only when the curves reach a quarter into it (their ends are
    // clamped to the axis otherwise).
    let decades = (all().map(|p| p.0).fold(2.0f64, f64::max) - 0.25).ceil().clamp(2.0, 9.0) as u32;
    let (min, max) = all().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let y = YAxis::new(scale, if min.is_finite() { min } else { 1.0 }, max);
    let x_px = |x: f64| L + x.min(decades as f64) / decades as f64 * (R - L);
    // The legend sits under the chart, one line per curve.
    let legend_h = 22.0 * curves.len() as f64 + 10.0;
    let height = H + legend_h + 10.0;
    let mut o = String::with_capacity(16 * 1024);
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="13">"##
    );
    let _ = writeln!(o, r##"<rect width="{W}" height="{height}" fill="white"/>"##);
    let _ = writeln!(
        o,
        r##"<text class="title" x="{}" y="28" text-anchor="middle" font-size="18" font-weight="bold">tokengate bench: latency by percentile</text>"##,
        W / 2.0
    );
    let _ = writeln!(
        o,
        r##"<text class="subtitle" x="{}" y="50" text-anchor="middle" fill="#444">{}</text>"##,
        W / 2.0,
        escape(subtitle)
    );
    // Grid and ticks.
    let _ = writeln!(o, r##"<g class="grid" stroke="#ddd" stroke-width="1">"##);
    for d in 0..=decades {
        let x = x_px(d as f64);
        let _ = writeln!(o, r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{B}"/>"##);
    }
    for (v, labelled) in y.ticks() {
        let py = y.px(v);
        let stroke = if labelled { "" } else { r##" stroke="#f0f0f0""## };
        let _ = writeln!(o, r##"<line x1="{L}" y1="{py:.1}" x2="{R}" y2="{py:.1}"{stroke}/>"##);
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(o, r##"<g class="x-ticks" text-anchor="middle">"##);
    for d in 0..=decades {
        let _ = writeln!(o, r##"<text x="{:.1}" y="{}">{}</text>"##, x_px(d as f64), B + 20.0, percentile_label(d));
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(o, r##"<g class="y-ticks" text-anchor="end">"##);
    for (v, _) in y.ticks().into_iter().filter(|t| t.1) {
        let _ = writeln!(o, r##"<text x="{}" y="{:.1}">{}</text>"##, L - 8.0, y.px(v) + 4.0, latency_label(v));
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(o, r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##, R - L, B - T);
    let _ = writeln!(
        o,
        r##"<text class="x-title" x="{}" y="{}" text-anchor="middle">percentile (log scale of 1/(1-p))</text>"##,
        (L + R) / 2.0,
        H - 22.0
    );
    let y_title = match scale {
        PlotScale::Log => "latency (log scale)",
        PlotScale::Linear => "latency",
    };
    let _ = writeln!(
        o,
        r##"<text class="y-title" x="20" y="{0}" text-anchor="middle" transform="rotate(-90 20 {0})">{y_title}</text>"##,
        (T + B) / 2.0
    );
    // Curves, then the legend under the chart: inside it, it hid the tail of the slower curve.
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = c.points.iter().map(|(x, v)| format!("{:.1},{:.1}", x_px(*x), y.px(*v))).collect();
        let _ = writeln!(
            o,
            r##"<polyline class="curve" data-name="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="{}"/>"##,
            escape(&c.name),
            pts.join(" ")
        );
    }
    let _ = writeln!(o, r##"<g class="legend">"##);
    let _ = writeln!(
        o,
        r##"<rect x="{}" y="{}" width="{}" height="{legend_h}" fill="white" fill-opacity="0.9" stroke="#999"/>"##,
        L,
        H,
        R - L
    );
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ly = H + 18.0 + 22.0 * i as f64;
        let _ = writeln!(
            o,
            r##"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}  ({})</text>"##,
            L + 20.0,
            L + 45.0,
            L + 52.0,
            ly + 4.0,
            escape(&c.name),
            escape(&c.summary)
        );
    }
    let _ = writeln!(o, "</g>");
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
#[path = "plot_tests.rs"]
pub(crate) mod tests;
