//! A named group of endpoints (`[[upstreams]]`): one pool and one health record per endpoint,
//! a balancer, and retries on another endpoint without double effects ([`super::retry`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use super::balance::{hash_bytes, Balancer, Slot};
use super::conn_watch::ConnWatch;
use super::health::{now_ms, EjectPolicy, Health};
use super::pool::{Pool, UpstreamBody, UpstreamError};
use super::replay::Replay;
use super::retry::{reset_before_head, Budget, RetryPolicy};
use crate::config::{BalanceKind, EjectConfig, HashOn};

/// One endpoint of a group.
pub struct Endpoint {
    /// `scheme://host:port` as configured: its name in logs, `/upstreams` and metrics.
    pub origin: String,
    /// Its connections, adopted across reloads like a route's.
    pub pool: Arc<Pool>,
    /// Its passive health and counts, adopted across reloads while it stays in the group.
    pub health: Arc<Health>,
    /// Hash of `origin`, for rendezvous hashing.
    seed: u64,
}

impl Endpoint {
    /// An endpoint at `origin` using `pool`, with `health` (a new one, or the last generation's).
    pub fn new(origin: String, pool: Arc<Pool>, health: Arc<Health>) -> Endpoint {
        let seed = hash_bytes(origin.as_bytes());
        Endpoint { origin, pool, health, seed }
    }
}

impl Slot for Endpoint {
    fn health(&self) -> &Health {
        &self.health
    }

    fn seed(&self) -> u64 {
        self.seed
    }
}

/// A group as the snapshot holds it.
pub struct Group {
    /// `[[upstreams]] name`.
    pub name: String,
    /// Its endpoints, in config order.
    pub endpoints: Box<[Endpoint]>,
    /// Picks the endpoint of each request.
    balancer: Balancer,
    /// With `balance = "hash"`: what the caller's key is made of.
    pub hash_on: Option<HashOn>,
    /// When an endpoint is ejected, and for how long.
    policy: EjectPolicy,
    /// Set while every endpoint is ejected, so panic mode is logged once, not per request.
    panicking: AtomicBool,
    /// `retries`, `retry_buffer_bytes` and `retry_budget`.
    retry: RetryPolicy,
    /// Retries spent over the last second (a reload starts it afresh: it is a rate, not a count).
    budget: Budget,
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
        endpoints: Vec<Endpoint>,
        kind: BalanceKind,
        hash_on: Option<HashOn>,
        eject: &EjectConfig,
        retry: RetryPolicy,
    ) -> Group {
        let policy = EjectPolicy {
            failures: eject.consecutive_failures,
            base_ms: eject.base_secs.saturating_mul(1000),
            max_ms: eject.max_secs.saturating_mul(1000),
        };
        Group {
            name,
            endpoints: endpoints.into(),
            balancer: Balancer::new(kind),
            hash_on,
            policy,
            panicking: AtomicBool::new(false),
            retry,
            budget: Budget::default(),
        }
    }

    /// The health record of `origin`, for the next generation of this group to adopt.
    pub fn health_of(&self, origin: &str) -> Option<Arc<Health>> {
        self.endpoints.iter().find(|e| e.origin == origin).map(|e| e.health.clone())
    }

    /// The endpoint for a request (other than `skip`), logging once when only ejected ones are left.
    fn pick(&self, key: Option<u64>, skip: Option<usize>) -> Option<usize> {
        let now = now_ms();
        let pick = self.balancer.pick(&self.endpoints, key, skip, now)?;
        // A retry that finds only ejected endpoints besides the one that just failed is panic
        // mode only if that one is out too.
        let all_out = pick.panic && skip.is_none_or(|s| !self.endpoints[s].health.available(now));
        if all_out {
            if !self.panicking.swap(true, Ordering::Relaxed) {
                tracing::warn!(group = %self.name, "every endpoint of the upstream group is ejected: trying them anyway");
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
        let mut at = self.pick(key, None).unwrap_or(0);
        let (req, replay) = match (self.endpoints.len(), self.retry.retries) {
            (1, _) | (_, 0) => (req.map(Into::into), None),
            _ => Replay::prepare(req, self.retry.buffer_bytes),
        };
        let mut req = self.endpoints[at].pool.wrap(req, watch);
        let mut left = self.retry.retries;
        loop {
            let endpoint = &self.endpoints[at];
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
            let next = if left == 0 { None } else { self.pick(key, Some(at)) };
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
                        let allowed = self.budget.withdraw(&self.retry, self.first_tries(), now_ms());
                        endpoint.health.retry(allowed);
                        allowed.then(|| (next, self.endpoints[next].pool.wrap(r, watch)))
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
                retry_on = %self.endpoints[next].origin,
                %error,
                "upstream request failed; sent to another endpoint"
            );
            (req, at, left) = (again, next, left - 1);
        }
    }

    /// Requests sent to the group's endpoints, retries not counted: what the budget is a share of.
    fn first_tries(&self) -> u64 {
        self.endpoints.iter().map(|e| e.health.requests().saturating_sub(e.health.retries().0)).sum()
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

    /// The group for `GET /upstreams`: each endpoint's health, ejections and requests in flight.
    pub fn status_json(&self) -> serde_json::Value {
        let now = now_ms();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let h = &e.health;
                serde_json::json!({
                    "endpoint": e.origin,
                    "healthy": h.available(now),
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

    /// Each endpoint as `(origin, healthy, [requests, failures, ejections, retries, retries the
    /// budget refused])`, for the metrics.
    pub fn observe(&self) -> impl Iterator<Item = (&str, bool, [u64; 5])> + '_ {
        let now = now_ms();
        self.endpoints.iter().map(move |e| {
            let h = &e.health;
            let (retries, refused) = h.retries();
            (e.origin.as_str(), h.available(now), [h.requests(), h.failures(), h.ejections(), retries, refused])
        })
    }
}
