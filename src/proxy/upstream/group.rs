//! A named group of endpoints (`[[upstreams]]`): one pool and one health record per endpoint (a
//! set that follows the addresses of host names), a balancer, the background tasks that resolve
//! and probe, and retries on another endpoint without double effects ([`super::retry`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use hickory_resolver::TokioResolver;
use tokio::task::AbortHandle;

use super::balance::Balancer;
use super::conn_watch::ConnWatch;
pub use super::endpoints::Endpoint;
use super::endpoints::EndpointSet;
use super::health::{now_ms, EjectPolicy};
use super::pool::{UpstreamBody, UpstreamError};
use super::replay::Replay;
use super::retry::{reset_before_head, Budget, RetryPolicy};
use crate::config::{BalanceKind, EjectConfig, HashOn, HealthCheckConfig, UpstreamGroupConfig};

/// A group as the snapshot holds it.
pub struct Group {
    /// `[[upstreams]] name`.
    pub name: String,
    /// Its endpoints, in config order (a host name's addresses in its place), swapped as
    /// lookups answer; a request reads it once.
    pub endpoints: Arc<EndpointSet>,
    /// Picks the endpoint of each request.
    balancer: Balancer,
    /// With `balance = "hash"`: what the caller's key is made of.
    pub hash_on: Option<HashOn>,
    /// When an endpoint is ejected, and for how long.
    policy: EjectPolicy,
    /// Set while every endpoint is ejected, so panic mode is logged once, not per request.
    panicking: AtomicBool,
    /// What the background tasks do: host names to look up, how often, and the probes.
    background: Background,
    /// The running background tasks, aborted when the group is dropped (a reload removed or
    /// replaced it), so none outlives its group.
    tasks: Mutex<Vec<AbortHandle>>,
    /// `retries`, `retry_buffer_bytes` and `retry_budget`.
    retry: RetryPolicy,
    /// Retries spent over the last second (a reload starts it afresh: it is a rate, not a count).
    budget: Budget,
}

/// The work a group's tasks do once [`Group::start`] runs them.
pub struct Background {
    /// Each endpoint given by host name, as `(configured origin, host)`.
    pub names: Vec<(Arc<str>, String)>,
    /// `dns_refresh_secs`.
    pub dns_refresh: Duration,
    /// Looks the names up; None when no resolver could be made (names resolve at each connect).
    pub resolver: Option<Arc<TokioResolver>>,
    /// `health_check`, when set.
    pub health_check: Option<HealthCheckConfig>,
}

impl Background {
    /// The background work of `g`, with the snapshot's `resolver`.
    pub fn of(g: &UpstreamGroupConfig, resolver: Option<&Arc<TokioResolver>>) -> Background {
        Background {
            names: EndpointSet::names(g),
            dns_refresh: Duration::from_secs(g.dns_refresh_secs),
            resolver: resolver.cloned(),
            health_check: g.health_check.clone(),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..).for_each(|t| t.abort());
    }
}

/// One endpoint for the metrics: `(origin, healthy, [requests, failures, ejections, retries,
/// retries the budget refused])`.
pub type EndpointRow = (String, bool, [u64; 5]);

/// Requests sent to `endpoints`, retries not counted: what the retry budget is a share of.
fn first_tries(endpoints: &[Endpoint]) -> u64 {
    endpoints.iter().map(|e| e.health.requests().saturating_sub(e.health.retries().0)).sum()
}

/// Why a group request failed, and at which endpoint.
pub struct GroupError {
    /// The last endpoint's error; None when the route's time ran out waiting for it.
    pub error: Option<UpstreamError>,
    /// The endpoint it came from.
    pub origin: String,
}

impl Group {
    /// A group of `endpoints` balanced by `kind`.
    pub fn new(
        name: String,
        endpoints: EndpointSet,
        (kind, hash_on): (BalanceKind, Option<HashOn>),
        eject: &EjectConfig,
        (background, retry): (Background, RetryPolicy),
    ) -> Group {
        let policy = EjectPolicy {
            failures: eject.consecutive_failures,
            base_ms: eject.base_secs.saturating_mul(1000),
            max_ms: eject.max_secs.saturating_mul(1000),
        };
        Group {
            name,
            endpoints: Arc::new(endpoints),
            balancer: Balancer::new(kind),
            hash_on,
            policy,
            panicking: AtomicBool::new(false),
            background,
            tasks: Mutex::new(Vec::new()),
            retry,
            budget: Budget::default(),
        }
    }

    /// Starts the tasks that look the host names up and probe the endpoints, on the current
    /// tokio runtime, once (a snapshot that is only checked never starts them).
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if !tasks.is_empty() {
            return;
        }
        let b = &self.background;
        if let Some(resolver) = &b.resolver {
            for (configured, host) in &b.names {
                let task = super::dns::refresh(
                    (self.name.as_str().into(), Arc::downgrade(&self.endpoints)),
                    configured.clone(),
                    host.clone(),
                    resolver.clone(),
                    b.dns_refresh,
                );
                tasks.push(tokio::spawn(task).abort_handle());
            }
        }
        if let Some(check) = &b.health_check {
            tasks.push(
                tokio::spawn(super::probe::run(
                    (self.name.as_str().into(), Arc::downgrade(&self.endpoints)),
                    check.clone(),
                ))
                .abort_handle(),
            );
        }
    }

    /// The endpoint for a request (other than `skip`), logging once when only ejected ones are left.
    fn pick(&self, endpoints: &[Endpoint], key: Option<u64>, skip: Option<usize>) -> Option<usize> {
        let now = now_ms();
        let pick = self.balancer.pick(endpoints, key, skip, now)?;
        // A retry that finds only ejected endpoints besides the one that just failed is panic
        // mode only if that one is out too.
        let all_out = pick.panic && skip.is_none_or(|s| !endpoints[s].health.available(now));
        if all_out {
            if !self.panicking.swap(true, Ordering::Relaxed) {
                tracing::warn!(group = %self.name, "every endpoint of the upstream group is ejected or down: trying them anyway");
            }
        } else if !pick.panic && self.panicking.load(Ordering::Relaxed) {
            self.panicking.store(false, Ordering::Relaxed);
        }
        Some(pick.index)
    }

    /// Sends `req` to an endpoint; `key` is the caller's hash (`balance = "hash"`). Up to
    /// `retries` times, a request that failed is sent again to another endpoint: whatever its
    /// method when its connection failed before any byte was written, within the retry budget
    /// when it was written, then reset before the answer's head came, and it may be sent twice
    /// ([`Replay`]). Connect errors, resets, 5xx answers and no answer head within `timeout` (the
    /// route's, for all tries together) count towards the endpoint's ejection.
    pub async fn send(
        &self,
        req: Request<Incoming>,
        key: Option<u64>,
        watch: &Arc<ConnWatch>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, GroupError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Never empty: the config refuses a group without endpoints.
        let endpoints = self.endpoints.load();
        let mut at = self.pick(&endpoints, key, None).unwrap_or(0);
        let (req, replay) = match (endpoints.len(), self.retry.retries) {
            (1, _) | (_, 0) => (req.map(Into::into), None),
            _ => Replay::prepare(req, self.retry.buffer_bytes),
        };
        let mut req = endpoints[at].pool.wrap(req, watch);
        let mut left = self.retry.retries;
        loop {
            let endpoint = &endpoints[at];
            let in_flight = endpoint.health.start();
            let result = tokio::time::timeout_at(deadline, endpoint.pool.try_send(req, watch)).await;
            drop(in_flight);
            let Ok(result) = result else {
                self.failed(endpoint);
                return Err(GroupError { error: None, origin: endpoint.origin.clone() });
            };
            let (error, unsent) = match result {
                Ok(resp) => {
                    if resp.status().is_server_error() {
                        self.failed(endpoint);
                    } else if endpoint.health.succeeded() {
                        tracing::info!(group = %self.name, endpoint = %endpoint.origin, "upstream endpoint answers again");
                    }
                    return Ok(resp);
                }
                Err(failed) => failed,
            };
            self.failed(endpoint);
            let next = if left == 0 { None } else { self.pick(&endpoints, key, Some(at)) };
            let again = match (next, unsent) {
                (None, _) => None,
                // Nothing reached the endpoint: any method may go elsewhere, and the load it
                // adds is one try of a request no endpoint has seen, so no budget is spent.
                (Some(next), Some(unsent)) => {
                    endpoint.health.retry(true);
                    Some((next, unsent))
                }
                (Some(next), None) => match replay.as_ref().filter(|_| reset_before_head(&error)) {
                    Some(replay) => replay.request().and_then(|r| {
                        let allowed = self.budget.withdraw(&self.retry, first_tries(&endpoints), now_ms());
                        endpoint.health.retry(allowed);
                        allowed.then(|| (next, endpoints[next].pool.wrap(r, watch)))
                    }),
                    None => None,
                },
            };
            let Some((next, again)) = again else {
                return Err(GroupError { error: Some(error), origin: endpoint.origin.clone() });
            };
            tracing::debug!(
                group = %self.name,
                endpoint = %endpoint.origin,
                retry_on = %endpoints[next].origin,
                %error,
                "upstream request failed; sent to another endpoint"
            );
            (req, at, left) = (again, next, left - 1);
        }
    }

    fn failed(&self, endpoint: &Endpoint) {
        if let Some(length) = endpoint.health.failed(&self.policy, now_ms()) {
            tracing::warn!(
                group = %self.name,
                endpoint = %endpoint.origin,
                secs = length.as_secs_f64(),
                "upstream endpoint ejected after failures in a row"
            );
        }
    }

    /// The group for `GET /upstreams`: each endpoint's address and the host name it came from,
    /// health (passive and active), ejections, last probe and requests in flight.
    pub fn status_json(&self) -> serde_json::Value {
        let now = now_ms();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints
            .load()
            .iter()
            .map(|e| {
                let h = &e.health;
                let last_probe = h.last_probe(now).map(|(probe, ago)| {
                    serde_json::json!({ "result": probe.describe(), "passed": probe.passed(), "ms_ago": ago })
                });
                serde_json::json!({
                    "endpoint": e.origin,
                    "configured": &*e.configured,
                    "address": e.address.map(|a| a.to_string()),
                    "healthy": h.available(now),
                    "health_check": self.background.health_check.as_ref().map(|_| if h.down() { "down" } else { "up" }),
                    "last_probe": last_probe,
                    "ejected_for_ms": h.ejected_for_ms(now),
                    "ejections": h.ejections(),
                    "in_flight": h.in_flight(),
                    "requests": h.requests(),
                    "failures": h.failures(),
                    "retries": h.retries().0,
                    "retry_budget_exhausted": h.retries().1,
                })
            })
            .collect();
        serde_json::json!({ "name": self.name, "endpoints": endpoints })
    }

    /// Each endpoint's row of the metrics.
    pub fn observe(&self) -> Vec<EndpointRow> {
        let now = now_ms();
        let set = self.endpoints.load();
        set.iter()
            .map(|e| {
                let h = &e.health;
                let (retries, refused) = h.retries();
                (e.origin.clone(), h.available(now), [h.requests(), h.failures(), h.ejections(), retries, refused])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::proxy::upstream::Pools;

    /// A reload that drops a group stops its lookups and probes at once (no leaked tasks).
    #[tokio::test]
    async fn dropping_a_group_stops_its_tasks() {
        let text = "name = \"o\"\nendpoints = [\"http://orders.test:8080\"]\nhealth_check = {}";
        let g: UpstreamGroupConfig = toml::from_str(text).expect("parses");
        let set =
            EndpointSet::build(&g, &ServerConfig::default(), &mut Pools::new(None), None, None, None).expect("builds");
        // A DNS server that never answers: the lookup task waits in its query.
        let resolver =
            Arc::new(super::super::lookup::resolver(&["127.0.0.1:9".parse().expect("addr")]).expect("resolver"));
        let background = Background::of(&g, Some(&resolver));
        let retry = super::super::retry::RetryPolicy::new(&g);
        let group = Arc::new(Group::new("o".into(), set, (g.balance, None), &g.eject, (background, retry)));
        group.start();
        let handles: Vec<AbortHandle> = group.tasks.lock().expect("tasks").clone();
        assert_eq!(handles.len(), 2, "one lookup, one prober");
        drop(group);
        for _ in 0..50 {
            if handles.iter().all(AbortHandle::is_finished) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the group's tasks outlived it");
    }
}
