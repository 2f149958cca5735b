//! Reading the admin `/metrics` page.

use super::Gw;

impl Gw {
    /// The Prometheus text of the admin `/metrics` (asserting 200).
    pub async fn metrics(&self) -> String {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {text}");
        text
    }
}

/// The value of one sample line (`name{labels}`) in a metrics text, 0 when the series is absent.
pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().unwrap_or_else(|e| panic!("{series}: {v:?}: {e}")) as u64)
        .unwrap_or(0)
}

/// The value of one Prometheus sample line (`name{labels}`), 0 when the series is absent.
pub async fn metric(gw: &Gw, series: &str) -> u64 {
    sample(&gw.metrics().await, series)
}

/// `tokengate_limit_hits_total{limit="<limit>"}`.
pub async fn limit_hits(gw: &Gw, limit: &str) -> u64 {
    metric(gw, &format!("tokengate_limit_hits_total{{limit=\"{limit}\"}}")).await
}

/// Sum of every `tokengate_limit_hits_total` series, whatever its label.
pub async fn all_limit_hits(gw: &Gw) -> u64 {
    gw.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("tokengate_limit_hits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
