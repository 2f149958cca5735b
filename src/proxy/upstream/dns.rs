//! The task that looks a group endpoint's host name up again every `dns_refresh_secs` (sooner at
//! a shorter TTL), so that every address behind the name is an endpoint of its own
//! ([`EndpointSet::resolved`]); the resolver is [`super::lookup::resolver`]'s.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use super::endpoints::EndpointSet;

/// Shortest time between two lookups of one name, however short its TTL.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Looks `host` (the host name of `origin`, an endpoint of `group` whose endpoints are `set`) up
/// until the group is gone: every `every`, or at the answer's TTL when shorter (at least
/// [`MIN_REFRESH`]). A changed answer replaces the name's endpoints; a failed lookup keeps them,
/// logged once per outage.
pub async fn refresh(
    (group, set): (Arc<str>, Weak<EndpointSet>),
    origin: Arc<str>,
    host: String,
    resolver: Arc<TokioResolver>,
    every: Duration,
) {
    let mut failing = false;
    loop {
        let wait = match resolver.lookup_ip(host.as_str()).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = found.iter().collect();
                ips.sort_unstable();
                ips.dedup();
                if ips.is_empty() {
                    failed(&group, &origin, &mut failing, "no address records");
                    every
                } else {
                    let Some(set) = set.upgrade() else { return };
                    if std::mem::take(&mut failing) {
                        tracing::info!(%group, endpoint = %origin, "upstream host name resolves again");
                    }
                    set.resolved(&group, &origin, &ips);
                    every.min(found.valid_until().saturating_duration_since(Instant::now()))
                }
            }
            Err(e) => {
                failed(&group, &origin, &mut failing, &e.to_string());
                every
            }
        };
        if set.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(wait.max(MIN_REFRESH)).await;
    }
}

/// A lookup of `origin`'s host name failed: its last addresses stay; logged at the first failure.
fn failed(group: &str, origin: &str, failing: &mut bool, error: &str) {
    if std::mem::replace(failing, true) {
        return;
    }
    tracing::warn!(%group, endpoint = %origin, %error, "upstream host name lookup failed; its last addresses stay in use");
}
