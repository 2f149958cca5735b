//! Active health checks (`[[upstreams]] health_check`): every `interval_secs`, each endpoint of
//! the group gets a `GET path` on a connection of its own (the pool's connector, so the same
//! address, TLS trust and `Host`), and [`Health::probed`](super::health::Health::probed) counts
//! the passes and failures in a row. A probe carries no client's header: never a credential.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tower_service::Service;

use super::endpoints::EndpointSet;
use super::health::{now_ms, Probe};
use super::pool::Pool;
use crate::config::HealthCheckConfig;

/// The `User-Agent` of probes, so that upstream logs tell them from clients.
const PROBE_AGENT: HeaderValue = HeaderValue::from_static("tokengate-health-check");

/// Probes the endpoints of `group` (`set`) as `check` says until the group is gone.
pub async fn run((name, set): (Arc<str>, Weak<EndpointSet>), check: HealthCheckConfig) {
    // Checked when the config was parsed.
    let path: PathAndQuery = check.path.parse().unwrap_or_else(|_| PathAndQuery::from_static("/"));
    let timeout = Duration::from_millis(check.timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_secs(check.interval_secs));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(set) = set.upgrade().map(|s| s.load()) else { return };
        // All at once: one endpoint that times out delays none of the others' verdicts.
        let mut probes = JoinSet::new();
        for (at, e) in set.iter().enumerate() {
            let (pool, path) = (e.pool.clone(), path.clone());
            probes.spawn(async move { (at, probe(&pool, path, timeout).await) });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((at, result)) = done else { continue };
            let e = &set[at];
            match e.health.probed(result, now_ms(), check.healthy, check.unhealthy) {
                Some(true) => tracing::info!(
                    group = %name,
                    endpoint = %e.origin,
                    "upstream endpoint passes its health check again: back in the balance set"
                ),
                Some(false) => tracing::warn!(
                    group = %name,
                    endpoint = %e.origin,
                    probe = %result.describe(),
                    "upstream endpoint fails its health check: out of the balance set until it passes"
                ),
                None => {}
            }
        }
    }
}

/// One probe of `pool`'s endpoint: its answer's status, or why there was none within `timeout`.
pub async fn probe(pool: &Pool, path: PathAndQuery, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, exchange(pool, path)).await {
        Ok(Some(status)) => Probe::Status(status.as_u16()),
        Ok(None) => Probe::Unreachable,
        Err(_) => Probe::TimedOut,
    }
}

/// Connects, sends the `GET` and waits for the answer head; the connection is driven here and
/// closes when this returns (no task outlives a probe, one that timed out included). The request
/// is polled first: the connection's driver ending as the answer arrives must not hide it.
/// None when it failed before an answer.
async fn exchange(pool: &Pool, path: PathAndQuery) -> Option<StatusCode> {
    let (connector, origin, host) = pool.dial();
    let io = connector.clone().call(origin.clone()).await.ok()?;
    let request = |uri: Uri| {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = uri;
        req.headers_mut().insert(USER_AGENT, PROBE_AGENT);
        req
    };
    if io.connected().is_negotiated_h2() {
        let mut parts = origin.clone().into_parts();
        parts.path_and_query = Some(path);
        let req = request(Uri::from_parts(parts).ok()?);
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
        tokio::select! {
            biased;
            resp = sender.send_request(req) => resp.ok().map(|r| r.status()),
            _ = conn => None,
        }
    } else {
        let mut req = request(Uri::from(path));
        req.headers_mut().insert(HOST, host.clone());
        let (mut sender, conn) = http1::handshake(io).await.ok()?;
        tokio::select! {
            biased;
            resp = sender.send_request(req) => resp.ok().map(|r| r.status()),
            _ = conn => None,
        }
    }
}
