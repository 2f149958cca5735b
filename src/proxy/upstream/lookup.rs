//! How upstream host names become addresses: the resolver the connectors use (the system's
//! `getaddrinfo`, the DNS servers of `[server] resolvers`, or one address a group endpoint is
//! pinned to), and the resolver of the group endpoints' background lookups ([`super::dns`]).
//!
//! Why hickory-resolver: the async resolver the Rust ecosystem keeps (hyper's and reqwest's
//! optional one), reads `/etc/resolv.conf`, and tells each answer's TTL, which `getaddrinfo` does not.
//! Built without its DNS-over-TLS/HTTPS/QUIC and DNSSEC features.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

/// How long one query to a `[server] resolvers` server waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no resolver could be made.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system's DNS configuration could not be read.
    #[error("the system's DNS configuration (/etc/resolv.conf) could not be read: {0}")]
    System(String),
}

/// How a connector turns the host name of its URI into addresses.
#[derive(Clone)]
pub enum Lookup {
    /// The system's `getaddrinfo` (on tokio's blocking pool), as without `[server] resolvers`.
    System(GaiResolver),
    /// The DNS servers of `[server] resolvers`.
    Dns(Arc<TokioResolver>),
    /// One address a group endpoint resolved to: the URI keeps the host name (the `Host` header and
    /// TLS server name), the connection goes to this address.
    Pinned(IpAddr),
}

impl Lookup {
    /// The lookup of every upstream connector: `resolvers` when set, else the system's.
    pub fn for_server(resolvers: Option<&Arc<TokioResolver>>) -> Lookup {
        match resolvers {
            Some(r) => Lookup::Dns(r.clone()),
            None => Lookup::System(GaiResolver::new()),
        }
    }
}

/// Addresses with port 0: the connector sets the URI's port.
type Addrs = std::vec::IntoIter<SocketAddr>;

impl Service<Name> for Lookup {
    type Response = Addrs;
    type Error = io::Error;
    // Boxed: a lookup happens per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Lookup::Pinned(ip) => {
                let addrs = vec![SocketAddr::new(*ip, 0)].into_iter();
                Box::pin(std::future::ready(Ok(addrs)))
            }
            Lookup::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
            Lookup::Dns(resolver) => {
                let resolver = resolver.clone();
                Box::pin(async move {
                    let found = resolver.lookup_ip(name.as_str()).await.map_err(io::Error::other)?;
                    Ok(found.iter().map(|ip| SocketAddr::new(ip, 0)).collect::<Vec<_>>().into_iter())
                })
            }
        }
    }
}

/// The resolver of group endpoints' host names: `servers` (UDP, then TCP for truncated answers)
/// when given, else the system's configuration.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, DnsError> {
    let builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| DnsError::System(e.to_string()))?
    } else {
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                ns.connections.iter_mut().for_each(|c| c.port = addr.port());
                ns
            })
            .collect();
        let mut b = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        b.options_mut().timeout = QUERY_TIMEOUT;
        b.options_mut().attempts = 2;
        b
    };
    let mut builder = builder;
    // No answer cache: a name is asked again every `dns_refresh_secs` even when its TTL is longer,
    // and the refresh loop keeps the last answer itself.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| DnsError::System(e.to_string()))
}
