//! Endpoints given by host name, over the wire: a DNS server this file starts on loopback
//! (tests/support/dns_server.rs, set as `[server] resolvers`) answers for `orders.test`, and the
//! endpoints behind it are stubs bound to 127.0.0.1 and 127.0.0.2 on one port. A changed answer
//! moves the traffic within `dns_refresh_secs` (or within the record's TTL when that is shorter);
//! a failing or stopped DNS server keeps the last address in use; two addresses are two
//! endpoints, balanced round robin, and a reload keeps them.

mod common;
#[path = "support/dns_server.rs"]
mod dns_server;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use dns_server::DnsServer;
use serde_json::Value;

const LOCAL1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const LOCAL2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Two stubs on one free port, one on 127.0.0.1 and one on 127.0.0.2 (a host name's addresses
/// share the endpoint's port).
async fn two_instances() -> (Instance, Instance) {
    for _ in 0..20 {
        let a = Instance::start_on(SocketAddr::from((LOCAL1, 0)), Duration::ZERO).await;
        let second = SocketAddr::from((LOCAL2, a.addr.port()));
        if tokio::net::TcpListener::bind(second).await.is_ok() {
            // Free a moment ago: bound for real now (the probe listener is dropped).
            let b = Instance::start_on(second, Duration::ZERO).await;
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// A config whose group `svc` is `http://orders.test:<port>`, looked up at `dns`.
fn config(dns: &DnsServer, port: u16, refresh_secs: u64) -> Config {
    let rest = format!(
        "\n[[upstreams]]\nname = \"svc\"\nendpoints = [\"http://orders.test:{port}\"]\ndns_refresh_secs = \
         {refresh_secs}\n{}",
        route("/svc", "svc", "public = true")
    );
    Config::new().server(&format!("resolvers = [\"{}\"]", dns.addr)).rest(&rest)
}

async fn gateway(dns: &DnsServer, port: u16, refresh_secs: u64) -> Gw {
    Gw::start_config(&config(dns, port, refresh_secs)).await
}

/// The `svc` group's endpoints as `/upstreams` lists them.
async fn endpoints(gw: &Gw) -> Vec<Value> {
    let (status, body) = gw.admin_get("/upstreams").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("/upstreams is JSON");
    doc["upstreams"][0]["endpoints"].as_array().expect("endpoints").clone()
}

/// The `address` of each resolved endpoint, in order.
async fn addresses(gw: &Gw) -> Vec<String> {
    endpoints(gw).await.iter().map(|e| e["address"].as_str().unwrap_or("unresolved").to_owned()).collect()
}

/// Which stub answers `/svc/x` now.
async fn served_by(conn: &mut Conn) -> String {
    let r = conn.send(req("GET", "/svc/x", &[], empty())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-instance-addr").expect("x-instance-addr").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_answer_is_used_within_dns_refresh_secs_and_a_failed_lookup_keeps_the_last() {
    let (a, b) = two_instances().await;
    let dns = DnsServer::start().await;
    dns.set("orders.test", &[LOCAL1]);
    // A TTL far longer than dns_refresh_secs: the refresh decides, no cached answer hides the change.
    dns.set_ttl(300);
    let refresh = 2;
    let gw = gateway(&dns, a.addr.port(), refresh).await;
    poll_until(10, "orders.test resolved to 127.0.0.1", || async {
        let now = addresses(&gw).await;
        if now == ["127.0.0.1"] {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let listed = &endpoints(&gw).await[0];
    assert_eq!(listed["configured"], format!("http://orders.test:{}", a.addr.port()), "{listed}");
    assert_eq!(listed["endpoint"], a.url(), "{listed}");
    let mut conn = gw.plain_conn().await;
    assert_eq!(served_by(&mut conn).await, a.addr.to_string());

    // The answer changes: within dns_refresh_secs (plus a lookup's time) 127.0.0.2 serves.
    dns.set("orders.test", &[LOCAL2]);
    let changed = Instant::now();
    poll_until(refresh + 3, "requests served by 127.0.0.2", || async {
        let mut conn = gw.plain_conn().await;
        let by = served_by(&mut conn).await;
        if by == b.addr.to_string() {
            Ok(())
        } else {
            Err(by)
        }
    })
    .await;
    eprintln!(
        "new address in use {:.2}s after the answer changed (dns_refresh_secs = {refresh})",
        changed.elapsed().as_secs_f64()
    );
    assert_eq!(addresses(&gw).await, ["127.0.0.2"], "127.0.0.1 left the set");
    let requests_at_a = a.requests();

    // Lookups fail (SERVFAIL), then the server is gone: the last address keeps serving.
    dns.fail(true);
    let asked = dns.queries();
    eventually(refresh * 3 + 5, "two failed lookups", || async { dns.queries() >= asked + 2 }).await;
    assert_eq!(served_by(&mut gw.plain_conn().await).await, b.addr.to_string());
    dns.stop();
    tokio::time::sleep(Duration::from_secs(refresh + 1)).await; // at least one lookup to a closed port
    for _ in 0..5 {
        assert_eq!(served_by(&mut gw.plain_conn().await).await, b.addr.to_string());
    }
    assert_eq!(addresses(&gw).await, ["127.0.0.2"]);
    assert_eq!(a.requests(), requests_at_a, "nothing went back to the old address");
}

/// A TTL shorter than `dns_refresh_secs` decides when the name is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_is_asked_again_before_dns_refresh_secs() {
    let (a, b) = two_instances().await;
    let dns = DnsServer::start().await;
    dns.set("orders.test", &[LOCAL1]);
    dns.set_ttl(1);
    let gw = gateway(&dns, a.addr.port(), 60).await;
    poll_until(10, "orders.test resolved to 127.0.0.1", || async {
        let now = addresses(&gw).await;
        if now == ["127.0.0.1"] {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    dns.set("orders.test", &[LOCAL2]);
    let changed = Instant::now();
    poll_until(5, "requests served by 127.0.0.2 within a few TTLs", || async {
        let by = served_by(&mut gw.plain_conn().await).await;
        if by == b.addr.to_string() {
            Ok(())
        } else {
            Err(by)
        }
    })
    .await;
    eprintln!(
        "new address in use {:.2}s after the answer changed (TTL 1 s, dns_refresh_secs = 60)",
        changed.elapsed().as_secs_f64()
    );
}

/// Two addresses are two endpoints; a reload that keeps the group keeps them, with their pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_addresses_are_two_endpoints_balanced_round_robin() {
    let (a, b) = two_instances().await;
    let dns = DnsServer::start().await;
    dns.set("orders.test", &[LOCAL1, LOCAL2]);
    let gw = gateway(&dns, a.addr.port(), 30).await;
    poll_until(10, "orders.test resolved to both addresses", || async {
        let now = addresses(&gw).await;
        if now == ["127.0.0.1", "127.0.0.2"] {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let (before_a, before_b) = (a.requests(), b.requests());
    let mut conn = gw.plain_conn().await;
    for _ in 0..20 {
        served_by(&mut conn).await;
    }
    assert_eq!((a.requests() - before_a, b.requests() - before_b), (10, 10));
    let metrics = gw.metrics().await;
    for inst in [&a, &b] {
        let series = format!("tokengate_upstream_endpoint_healthy{{group=\"svc\",endpoint=\"{}\"}}", inst.url());
        assert_eq!(sample(&metrics, &series), 1, "{metrics}");
    }
    assert_eq!((a.conns(), b.conns()), (1, 1));

    let g0 = gw.wait_watcher_ready().await;
    let text = config(&dns, a.addr.port(), 30).rest(&route("/other", "echo", "public = true")).text();
    replace_file(&gw.config, text.as_bytes());
    gw.wait_generation_above(g0, 10).await;
    assert_eq!(addresses(&gw).await, ["127.0.0.1", "127.0.0.2"], "the resolved set is kept");
    for _ in 0..4 {
        served_by(&mut conn).await;
    }
    assert_eq!((a.requests() - before_a, b.requests() - before_b), (12, 12));
    assert_eq!((a.conns(), b.conns()), (1, 1), "the addresses' pools were adopted");
}
