//! Routes that name hosts, methods and path templates, over the wire: precedence (host, then
//! prefix, then method), 405 with `Allow`, placeholders with `strip_prefix`, hosts through
//! HTTP/1.1 `Host` and HTTP/2 `:authority` (ours and stock curl's), and ambiguous routes
//! refused at start with both named.

#[path = "common/mod.rs"]
mod common;

use common::*;

/// Routes to one recording upstream, each under its own base path so the upstream's view of
/// the path says which route served.
fn routes(up: &Upstream) -> String {
    let r = |prefix: &str, base: &str, extra: &str| {
        route(prefix, &format!("{}/{base}", up.url()), &format!("public = true\n{extra}"))
    };
    [
        r("/", "any", ""),
        r("/orders", "orders-read", "methods = [\"GET\", \"head\"]"),
        r("/orders", "orders-write", "methods = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]"),
        r("/", "api", "hosts = [\"api.example.com\"]"),
        r("/", "shop", "hosts = [\"*.shop.example\"]"),
        r("/orders", "eu-orders", "hosts = [\"eu.shop.example\"]"),
        r("/tenants/{tenant}/orders", "tenant", "strip_prefix = true"),
        r("/tenants/acme/orders", "acme", ""),
    ]
    .concat()
}

/// The base path of the route that served the last request.
fn served_by(up: &Upstream) -> String {
    up.last().uri.trim_start_matches('/').split('/').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_then_prefix_then_method_over_http1_and_http2() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let cases: [(&str, Option<&str>, &str, &str); 10] = [
        ("GET", None, "/orders/7", "orders-read"),
        ("HEAD", None, "/orders/7", "orders-read"),
        ("DELETE", None, "/ORDERS/7", "orders-write"),
        ("GET", None, "/other", "any"),
        ("GET", Some("api.example.com"), "/orders/7", "api"),
        ("GET", Some("API.example.com:8443"), "/x", "api"),
        ("GET", Some("a.shop.example"), "/orders", "shop"),
        ("GET", Some("eu.shop.example"), "/orders/1", "eu-orders"),
        ("GET", Some("eu.shop.example"), "/other", "shop"),
        ("GET", Some("a.b.shop.example"), "/other", "any"),
    ];
    for h2 in [false, true] {
        let mut c = gw.tls(h2).await;
        for (method, host, path, want) in cases {
            let r = match (h2, host) {
                (true, Some(h)) => c.send(req(method, &format!("https://{h}{path}"), &[], empty())).await,
                (false, Some(h)) => c.send(req(method, path, &[("host", h)], empty())).await,
                (_, None) => c.send(req(method, path, &[], empty())).await,
            };
            assert_eq!(r.status, 200, "h2={h2} {method} {host:?} {path}: {}", r.text());
            assert_eq!(served_by(&up), want, "h2={h2} {method} {host:?} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_no_route_of_the_prefix_serves_is_405_with_allow() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let before = up.count();
    for h2 in [false, true] {
        let r = gw.tls(h2).await.send(req("OPTIONS", "/orders/7", &[], empty())).await;
        assert_eq!(r.status, 405, "h2={h2}: {}", r.text());
        assert_eq!(r.header("allow"), Some("DELETE, GET, HEAD, PATCH, POST, PUT"));
        assert_eq!(r.json()["error"], "method_not_allowed");
    }
    assert_eq!(up.count(), before, "a 405 never reaches the upstream, nor the shorter \"/\" route that serves OPTIONS");
    let r = gw.tls(false).await.send(req("OPTIONS", "/other", &[], empty())).await;
    assert_eq!((r.status.as_u16(), served_by(&up).as_str()), (200, "any"), "a route naming no method serves them all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_takes_one_segment_a_literal_beats_it_and_strip_prefix_removes_what_matched() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let mut c = gw.tls(false).await;
    let r = c.send(req("GET", "/tenants/glob%C3%A9x/orders/7?x=1", &[], empty())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().uri, "/tenant/7?x=1", "the template's whole match is stripped");
    c.send(req("GET", "/tenants/ACME/orders/7", &[], empty())).await;
    assert_eq!(served_by(&up), "acme", "a literal segment beats the placeholder, in any case");
    c.send(req("GET", "/tenants//orders", &[], empty())).await;
    c.send(req("GET", "/tenants/orders", &[], empty())).await;
    assert_eq!(served_by(&up), "any", "a placeholder needs a whole, non-empty segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_reaches_the_route_of_its_authority() {
    let up = Upstream::start(Mode::Ok).await;
    let gw = Gw::start("", &routes(&up)).await;
    let port = gw.https.port();
    for (host, want) in [("api.example.com", "api"), ("x.shop.example", "shop"), ("localhost", "any")] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-k", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .arg("--connect-to")
            .arg(format!("{host}:{port}:127.0.0.1:{port}"))
            .arg(format!("https://{host}:{port}/z"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2", "{host}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(served_by(&up), want, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_routes_and_bad_hosts_or_methods_stop_the_start_naming_them() {
    for (routes, says) in [
        (
            route("/o", "echo", "methods = [\"GET\"]") + &route("/o/", "echo", "methods = [\"get\", \"POST\"]"),
            "routes \"/o\" [GET] and \"/o/\" [GET, POST] both match the same requests with the same precedence",
        ),
        (
            route("/t/{a}", "echo", "hosts = [\"x.example\"]") + &route("/t/{b}", "echo", "hosts = [\"X.example\"]"),
            "routes \"/t/{a}\" on x.example and \"/t/{b}\" on X.example both match",
        ),
        (route("/", "echo", "hosts = [\"a.*.example\"]"), "hosts: \"a.*.example\" is not a host name"),
        (route("/", "echo", "methods = [\"GE T\"]"), "methods: \"GE T\" is not an HTTP method"),
        (route("/t/x{a}", "echo", ""), "a placeholder is a whole segment"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, config_text("", &routes)).unwrap();
        let e = tokengate::server::start(config).await.err().expect("refused").to_string();
        assert!(e.contains(says), "{e}");
    }
}
