//! The endpoints of one group as a set that changes at run time: each request reads the set once
//! (one `Arc` clone), the DNS task swaps in a new set when a host name's addresses change. An
//! endpoint that leaves stays alive in the old set for the requests still using it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::uri::Authority;

use super::balance::{hash_bytes, Slot};
use super::health::Health;
use super::lookup::Lookup;
use super::pool::{ExchangeLimits, Pool};
use super::{connector, Pools, MAX_IDLE_PER_UPSTREAM};
use crate::config::{ServerConfig, UpstreamGroupConfig, UpstreamProtocol};
use crate::tls::TlsError;

/// One endpoint of a group.
#[derive(Clone)]
pub struct Endpoint {
    /// Its name in logs, `/upstreams` and metrics: `scheme://host:port` as configured, or
    /// `scheme://address:port` for one address of a host name.
    pub origin: String,
    /// The configured `scheme://host:port` it comes from (the same as `origin` unless resolved).
    pub configured: Arc<str>,
    /// The address its host name resolved to; None for an IP address, or a name not resolved yet
    /// (then the connector looks it up at each connect).
    pub address: Option<IpAddr>,
    /// Its connections, adopted across reloads like a route's.
    pub pool: Arc<Pool>,
    /// Its passive and active health and counts, adopted across reloads while it stays.
    pub health: Arc<Health>,
    /// Hash of `origin`, for rendezvous hashing.
    seed: u64,
}

impl Endpoint {
    /// An endpoint at `origin` (from `configured`, resolved to `address`) using `pool`, with `health`.
    pub fn new(
        origin: String,
        configured: Arc<str>,
        address: Option<IpAddr>,
        pool: Arc<Pool>,
        health: Arc<Health>,
    ) -> Endpoint {
        let seed = hash_bytes(origin.as_bytes());
        Endpoint { origin, configured, address, pool, health, seed }
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

/// The pools of addresses that appear at run time, made like the group's other pools.
struct PoolMaker {
    /// `[server]` as the group was built with: connect timeout, idle timeout, limits.
    server: ServerConfig,
    /// The group's `protocol` (unset: by each endpoint's scheme).
    protocol: Option<UpstreamProtocol>,
    /// The group's `ca`, resolved against the config's folder: what `https://` endpoints are verified against.
    ca: Option<std::path::PathBuf>,
}

impl PoolMaker {
    /// What makes a pool of one generation reusable in the next.
    fn settings(&self) -> (u64, u64, ExchangeLimits, Option<UpstreamProtocol>, Option<&std::path::Path>) {
        let s = &self.server;
        let limits = ExchangeLimits::from(s);
        (s.upstream_connect_timeout_secs, s.upstream_idle_timeout_secs, limits, self.protocol, self.ca.as_deref())
    }

    /// A pool for `configured`'s URI (its host name stays the `Host` and TLS server name)
    /// whose connections go to `ip`.
    fn pinned(&self, configured: &str, ip: IpAddr) -> Result<Arc<Pool>, TlsError> {
        let bad = |msg: String| TlsError::File { path: configured.to_owned(), msg };
        let uri: http::Uri = configured.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
            return Err(bad("no scheme or host".into()));
        };
        let protocol = UpstreamProtocol::resolve(self.protocol, scheme.as_str());
        let connector = connector(&self.server, self.ca.as_deref(), protocol, Lookup::Pinned(ip))?;
        let idle = std::time::Duration::from_secs(self.server.upstream_idle_timeout_secs);
        let limits = ExchangeLimits::from(&self.server);
        let pool = Pool::new((scheme, authority), connector, protocol, MAX_IDLE_PER_UPSTREAM, idle, limits)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Arc::new(pool))
    }
}

/// A group's endpoints now, and how to make the pools of new addresses.
pub struct EndpointSet {
    /// The set every request reads once; never empty (the config refuses a group without
    /// endpoints and a failed or empty lookup keeps a name's last addresses).
    current: ArcSwap<Box<[Endpoint]>>,
    /// Makes the pools of addresses a lookup adds.
    maker: PoolMaker,
    /// One writer at a time: two names of a group answering at once must not lose an update.
    writing: Mutex<()>,
}

/// `scheme://address:port`: the name of the endpoint at `ip` of `configured`'s host name.
fn address_origin(configured: &str, ip: IpAddr) -> String {
    let uri: Option<http::Uri> = configured.parse().ok();
    let scheme = uri.as_ref().and_then(|u| u.scheme_str()).unwrap_or("http");
    let port = uri.as_ref().and_then(http::Uri::port_u16).unwrap_or(if scheme == "https" { 443 } else { 80 });
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, port))
}

/// The host of `authority` as an IP address, when it is one (`[::1]` included).
fn ip_literal(authority: &Authority) -> Option<IpAddr> {
    authority.host().trim_start_matches('[').trim_end_matches(']').parse().ok()
}

impl EndpointSet {
    /// The endpoints of `g`: an IP address's pool from `pools` (adopted like a route's); a host
    /// name's resolved addresses adopted from `old` (the last generation's set of this group),
    /// else one endpoint dialled by name until the first lookup answers.
    pub fn build(
        g: &UpstreamGroupConfig,
        server: &ServerConfig,
        pools: &mut Pools,
        previous: Option<&Pools>,
        old: Option<&EndpointSet>,
        ca: Option<&std::path::Path>,
    ) -> Result<EndpointSet, TlsError> {
        let maker = PoolMaker { server: server.clone(), protocol: g.protocol, ca: ca.map(Into::into) };
        let old_set = old.map(|o| o.current.load_full());
        let same_settings = old.is_some_and(|o| o.maker.settings() == maker.settings());
        let mut endpoints = Vec::with_capacity(g.endpoints.len());
        for uri in g.endpoint_uris() {
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else { continue };
            let configured: Arc<str> = format!("{scheme}://{authority}").into();
            let adopted: Vec<&Endpoint> = match (&old_set, ip_literal(authority)) {
                (Some(set), None) => set.iter().filter(|e| e.configured == configured && e.address.is_some()).collect(),
                _ => Vec::new(),
            };
            if adopted.is_empty() {
                let pool = pools.get(server, (scheme, authority), ca, g.protocol, previous)?;
                let health = old_set
                    .as_ref()
                    .and_then(|s| s.iter().find(|e| e.origin == *configured))
                    .map_or_else(Default::default, |e| e.health.clone());
                endpoints.push(Endpoint::new(configured.to_string(), configured, None, pool, health));
                continue;
            }
            for e in adopted {
                let mut e = e.clone();
                if !same_settings {
                    if let Some(ip) = e.address {
                        e.pool = maker.pinned(&configured, ip)?;
                    }
                }
                endpoints.push(e);
            }
        }
        Ok(EndpointSet { current: ArcSwap::from_pointee(endpoints.into()), maker, writing: Mutex::new(()) })
    }

    /// The endpoints now; one read per request.
    pub fn load(&self) -> Arc<Box<[Endpoint]>> {
        self.current.load_full()
    }

    /// Each configured endpoint given by host name, as `(configured, host)`: what the DNS task looks up.
    pub fn names(g: &UpstreamGroupConfig) -> Vec<(Arc<str>, String)> {
        g.endpoint_uris()
            .iter()
            .filter_map(|uri| {
                let (scheme, authority) = (uri.scheme()?, uri.authority()?);
                ip_literal(authority)
                    .is_none()
                    .then(|| (format!("{scheme}://{authority}").into(), authority.host().to_owned()))
            })
            .collect()
    }

    /// `configured`'s host name now resolves to `ips` (sorted, not empty): its endpoints become
    /// one per address, keeping the pool and health of the addresses it had; new ones join healthy.
    pub fn resolved(&self, group: &str, configured: &Arc<str>, ips: &[IpAddr]) {
        let _one = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.current.load_full();
        let mine = |e: &&Endpoint| e.configured == *configured;
        let had: Vec<Option<IpAddr>> = now.iter().filter(mine).map(|e| e.address).collect();
        if had.len() == ips.len() && had.iter().zip(ips).all(|(a, b)| *a == Some(*b)) {
            return;
        }
        let mut fresh = Vec::with_capacity(ips.len());
        for ip in ips {
            if let Some(e) = now.iter().filter(mine).find(|e| e.address == Some(*ip)) {
                fresh.push(e.clone());
                continue;
            }
            match self.maker.pinned(configured, *ip) {
                Ok(pool) => {
                    let origin = address_origin(configured, *ip);
                    fresh.push(Endpoint::new(origin, configured.clone(), Some(*ip), pool, Default::default()));
                }
                Err(error) => tracing::warn!(%group, endpoint = %configured, %error, "upstream address left out"),
            }
        }
        if fresh.is_empty() {
            return;
        }
        let added: Vec<&str> =
            fresh.iter().filter(|f| !now.iter().any(|e| e.origin == f.origin)).map(|e| e.origin.as_str()).collect();
        let gone: Vec<&str> = now
            .iter()
            .filter(mine)
            .filter(|e| !fresh.iter().any(|f| f.origin == e.origin))
            .map(|e| e.origin.as_str())
            .collect();
        tracing::info!(%group, endpoint = %configured, added = ?added, removed = ?gone, "upstream host name resolved to new addresses");
        // The name's endpoints take the place of its first one: the order of the others stays.
        let mut next = Vec::with_capacity(now.len() - had.len() + fresh.len());
        let mut fresh = Some(fresh);
        for e in now.iter() {
            if e.configured != *configured {
                next.push(e.clone());
            } else if let Some(f) = fresh.take() {
                next.extend(f);
            }
        }
        self.current.store(Arc::new(next.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "http://orders.test:8080";

    fn origins(set: &EndpointSet) -> Vec<String> {
        set.load().iter().map(|e| e.origin.clone()).collect()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 1, 0, last])
    }

    #[test]
    fn a_name_becomes_its_addresses_keeping_those_that_stay_and_a_reload_keeps_them() {
        let text = format!("name = \"o\"\nendpoints = [\"http://10.0.0.9:80\", \"{NAME}\", \"http://10.0.0.8:80\"]");
        let g: UpstreamGroupConfig = toml::from_str(&text).expect("parses");
        assert_eq!(EndpointSet::names(&g), [(Arc::from(NAME), "orders.test".to_owned())]);
        let server = ServerConfig::default();
        let mut pools = Pools::new(None);
        let set = EndpointSet::build(&g, &server, &mut pools, None, None, None).expect("builds");
        assert_eq!(origins(&set), ["http://10.0.0.9:80", NAME, "http://10.0.0.8:80"], "unresolved: dialled by name");

        let name: Arc<str> = NAME.into();
        set.resolved("o", &name, &[ip(1), ip(2)]);
        assert_eq!(
            origins(&set),
            ["http://10.0.0.9:80", "http://10.1.0.1:8080", "http://10.1.0.2:8080", "http://10.0.0.8:80"]
        );
        let stays = set.load()[2].clone();
        assert_eq!((stays.address, &*stays.configured), (Some(ip(2)), NAME));

        set.resolved("o", &name, &[ip(2), ip(3)]);
        let now = set.load();
        assert_eq!(
            origins(&set),
            ["http://10.0.0.9:80", "http://10.1.0.2:8080", "http://10.1.0.3:8080", "http://10.0.0.8:80"]
        );
        assert!(Arc::ptr_eq(&now[1].pool, &stays.pool) && Arc::ptr_eq(&now[1].health, &stays.health));

        let next =
            EndpointSet::build(&g, &server, &mut Pools::new(None), Some(&pools), Some(&set), None).expect("builds");
        assert_eq!(origins(&next), origins(&set), "a reload keeps the resolved set");
        let kept = next.load();
        assert!(kept
            .iter()
            .zip(now.iter())
            .all(|(a, b)| Arc::ptr_eq(&a.pool, &b.pool) && Arc::ptr_eq(&a.health, &b.health)));
    }
}
