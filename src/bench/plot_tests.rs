//! The chart parsed back as XML: its structure, not only that text came out.

use super::*;

/// What a chart shows, read back from its SVG with an XML parser.
pub(crate) struct Chart {
    /// Title and subtitle.
    pub titles: Vec<String>,
    /// Each curve's name and points in pixels.
    pub curves: Vec<(String, Vec<(f64, f64)>)>,
    /// Legend lines.
    pub legend: Vec<String>,
    /// Tick labels of the x and y axes.
    pub x_ticks: Vec<String>,
    pub y_ticks: Vec<String>,
}

fn texts(doc: &roxmltree::Document, class: &str) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .flat_map(|g| g.descendants().filter(|n| n.has_tag_name("text")).map(|t| t.text().unwrap_or("").to_owned()))
        .collect()
}

/// Parses `svg` (panics when it is not well-formed XML or not an SVG document).
pub(crate) fn parse(svg: &str) -> Chart {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!((root.tag_name().name(), root.tag_name().namespace()), ("svg", Some("http://www.w3.org/2000/svg")));
    let curves = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("curve"))
        .map(|n| {
            let pts = n
                .attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').expect("x,y");
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (n.attribute("data-name").unwrap_or("").to_owned(), pts)
        })
        .collect();
    Chart {
        titles: [texts(&doc, "title"), texts(&doc, "subtitle")].concat(),
        curves,
        legend: texts(&doc, "legend"),
        x_ticks: texts(&doc, "x-ticks"),
        y_ticks: texts(&doc, "y-ticks"),
    }
}

/// Checks the chart of `urls`: one curve each, inside the plot area, rising left to right.
pub(crate) fn check(svg: &str, urls: &[&str]) -> Chart {
    let chart = parse(svg);
    let names: Vec<&str> = chart.curves.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, urls, "one curve per target, in order");
    for (name, pts) in &chart.curves {
        assert!(pts.len() >= 2, "{name}: {pts:?}");
        for w in pts.windows(2) {
            assert!(w[1].0 >= w[0].0, "{name}: x goes right");
            assert!(w[1].1 <= w[0].1 + 0.01, "{name}: latency never falls as the percentile rises");
        }
        assert!(pts.iter().all(|(x, y)| (L..=R).contains(x) && (T..=B).contains(y)), "{name}: inside the axes");
    }
    assert_eq!(chart.legend.len(), urls.len());
    for (line, url) in chart.legend.iter().zip(urls) {
        assert!(line.starts_with(url) && line.contains("req/s") && line.contains("p99"), "{line}");
    }
    assert!(chart.x_ticks.starts_with(&["0%".into(), "90%".into(), "99%".into()]), "{:?}", chart.x_ticks);
    assert!(chart.y_ticks.len() >= 2, "{:?}", chart.y_ticks);
    chart
}

fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut h = super::super::load::histogram();
    for v in values {
        h.record(v).unwrap();
    }
    h
}

#[test]
fn two_curves_overlaid_with_labelled_axes() {
    // A: 100-199 µs; B: the same, ten times slower, with a tail of 1% at 40 ms.
    let a = hist((0..10_000).map(|i| 100 + i % 100));
    let b = hist((0..10_000).map(|i| if i % 100 == 0 { 40_000 } else { 1000 + i % 1000 }));
    let curves = [Curve::of("http://a/ & <x>", &a, 1234.0), Curve::of("http://b/", &b, 99.0)];
    let chart_svg = svg("HTTP/1.1, 64 connections", &curves, PlotScale::Log);
    let chart = check(&chart_svg, &["http://a/ & <x>", "http://b/"]);
    assert_eq!(chart.titles[1], "HTTP/1.1, 64 connections");
    // 10,000 samples resolve 1 - p down to 1e-4: 99.99% is the last percentile drawn.
    assert_eq!(chart.x_ticks, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    // The y axis runs from 100 µs (A's minimum) to 50 ms (above B's maximum), both ends labelled.
    assert_eq!(
        (chart.y_ticks.first().map(String::as_str), chart.y_ticks.last().map(String::as_str)),
        (Some("100µs"), Some("50ms"))
    );
    // B lies above A everywhere (smaller y is higher), and its tail jumps at 99%.
    let (pa, pb) = (&chart.curves[0].1, &chart.curves[1].1);
    assert!(pb.first().unwrap().1 < pa.first().unwrap().1 && pb.last().unwrap().1 < pa.last().unwrap().1);
    assert!(chart.legend[0].contains("1234 req/s") && chart.legend[1].contains("max 40"), "{:?}", chart.legend);

    let linear = svg("x", &curves, PlotScale::Linear);
    let chart = check(&linear, &["http://a/ & <x>", "http://b/"]);
    assert_eq!(chart.y_ticks.first().map(String::as_str), Some("0"));
}

#[test]
fn no_answers_draws_axes_and_says_so() {
    let chart = parse(&svg("x", &[Curve::of("http://down/", &hist([]), 0.0)], PlotScale::Log));
    assert_eq!(chart.curves.len(), 1);
    assert!(chart.curves[0].1.is_empty());
    assert!(chart.legend[0].contains("no answers"));
}

#[test]
fn tick_labels() {
    let labels: Vec<String> = (0..5).map(percentile_label).collect();
    assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    assert_eq!(
        [latency_label(200.0), latency_label(1000.0), latency_label(2500.0), latency_label(1e6)],
        ["200µs", "1ms", "2.5ms", "1s"]
    );
    assert_eq!((nice_step(0.7), nice_step(3.0), nice_step(1100.0)), (1.0, 5.0, 2000.0));
    assert_eq!((nice_floor(450.0), nice_floor(100.0), nice_floor(7.0)), (200.0, 100.0, 5.0));
}
