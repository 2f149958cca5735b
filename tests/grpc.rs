//! gRPC through the gateway with a real gRPC stack on both sides (grpcio, see
//! `support/grpc_stack.rs`): a grpcio server behind an `[[upstreams]]` group with `protocol =
//! "h2c"`, a grpcio client in front over TLS (h2 by ALPN) and over plain h2c. Unary and
//! server-streaming calls pass with their metadata, trailers and deadline; refused calls reach
//! the client as gRPC statuses.

mod common;
#[path = "support/grpc_stack.rs"]
mod grpc_stack;
#[path = "support/test_ca.rs"]
mod test_ca;

use std::collections::HashSet;

use common::*;
use grpc_stack::{call, GrpcServer};
use serde_json::{json, Value};

/// A group `orders` (h2c) over `server`, and the route of the `test.Echo` service to it, which
/// needs the scope `orders.read`.
fn config(server: &GrpcServer) -> String {
    let rest = format!(
        "\n[[upstreams]]\nname = \"orders\"\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n{}",
        server.url(),
        route("/test.Echo", "orders", "scopes = [\"orders.read\"]")
    );
    Config::new().rest(&rest).text()
}

/// Where a client reaches `gw`: TLS (trusting its certificate) or the plain listener.
fn target(gw: &Gw, tls: bool) -> Value {
    if tls {
        json!({ "target": gw.https.to_string(), "ca": gw.path("certs/gateway.crt") })
    } else {
        json!({ "target": gw.plain.to_string() })
    }
}

/// One call of `method` with `extra` spec keys (`request`, `token`, `timeout`, `stream`).
async fn grpc(gw: &Gw, tls: bool, method: &str, extra: Value) -> Value {
    let mut spec = target(gw, tls);
    spec["method"] = json!(format!("/test.Echo/{method}"));
    for (k, v) in extra.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    tokio::task::spawn_blocking(move || call(&spec)).await.expect("client.py ran")
}

/// The server's JSON answer to a unary call.
fn answer(out: &Value) -> Value {
    let text = out["responses"][0].as_str().unwrap_or_else(|| panic!("no answer: {out}"));
    serde_json::from_str(text).expect("server.py answers JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_pass_over_tls_and_h2c_with_trailers() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("alice", "orders.read");
    for tls in [true, false] {
        let out = grpc(&gw, tls, "Unary", json!({ "request": "hello", "token": token })).await;
        assert_eq!(out["code"], "OK", "tls={tls}: {out}");
        let a = answer(&out);
        assert_eq!(a["echo"], "hello");
        // The gateway's identity headers reach the service as metadata.
        assert_eq!(a["metadata"]["x-auth-subject"], "alice", "{a}");
        assert_eq!(out["trailing_metadata"]["x-trailer"], "unary-done", "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_keeps_its_status_message_and_trailers() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("alice", "orders.read");
    let out = grpc(&gw, true, "Unary", json!({ "request": "fail", "token": token })).await;
    assert_eq!(out["code"], "FAILED_PRECONDITION", "{out}");
    // Percent-encoded by the server, decoded by the client: the gateway passed it untouched.
    assert_eq!(out["details"], "order 42 is 50% shipped, not cancellable: ü");
    assert_eq!(out["trailing_metadata"]["x-trailer"], "after-failure", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_passes_every_message_and_the_trailers() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("alice", "orders.read");
    for tls in [true, false] {
        let out = grpc(&gw, tls, "Stream", json!({ "request": "5", "stream": true, "token": token })).await;
        assert_eq!(out["code"], "OK", "tls={tls}: {out}");
        let parts: Vec<Value> = out["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(parts, (0..5).map(|i| json!({ "part": i })).collect::<Vec<_>>());
        assert_eq!(out["trailing_metadata"]["x-trailer"], "streamed 5", "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_reaches_the_server() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("alice", "orders.read");
    let out = grpc(&gw, true, "Unary", json!({ "request": "x", "token": token, "timeout": 7.0 })).await;
    assert_eq!(out["code"], "OK", "{out}");
    // `grpc-timeout` arrived: the server knows how long the caller waits (less the trip so far).
    let left = answer(&out)["time_remaining"].as_f64().unwrap_or_else(|| panic!("no deadline at the server: {out}"));
    assert!(left > 1.0 && left <= 7.0, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_one_multiplexed_h2c_connection() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("alice", "orders.read");
    // Eight clients at once, the first calls of the pool: all must ride one connection.
    let mut spec = target(&gw, false);
    spec["method"] = json!("/test.Echo/Unary");
    spec["token"] = json!(token);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || call(&spec))
        })
        .collect();
    let mut outs = Vec::new();
    for c in calls {
        outs.push(c.await.expect("client.py ran"));
    }
    let peers: HashSet<String> = outs
        .iter()
        .map(|out| {
            assert_eq!(out["code"], "OK", "{out}");
            answer(out)["peer"].as_str().expect("peer").to_owned()
        })
        .collect();
    assert_eq!(peers.len(), 1, "the gateway opened several connections: {peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_unauthenticated() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    for (token, details) in [(None, "a bearer token is required"), (Some("not-a-jwt"), "")] {
        let mut extra = json!({ "request": "x" });
        if let Some(t) = token {
            extra["token"] = json!(t);
        }
        let out = grpc(&gw, true, "Unary", extra).await;
        assert_eq!(out["code"], "UNAUTHENTICATED", "{out}");
        assert!(out["details"].as_str().unwrap().contains(details), "{out}");
        // A trailers-only answer: every header arrives as trailing metadata, the RFC 6750
        // challenge among them.
        let www = out["trailing_metadata"]["www-authenticate"].as_str().unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_scope_is_permission_denied() {
    let server = GrpcServer::start();
    let gw = Gw::start_text(&config(&server)).await;
    let token = gw.mint("bob", "orders.write");
    let out = grpc(&gw, false, "Unary", json!({ "request": "x", "token": token })).await;
    assert_eq!(out["code"], "PERMISSION_DENIED", "{out}");
    assert_eq!(out["details"], "requires scope: orders.read", "{out}");
    // Sent as HTTP 200, counted as the refusal it is.
    let refused = metric(&gw, r#"tokengate_requests_total{route="/test.Echo",status="403"}"#).await;
    assert_eq!(refused, 1);
    let www = out["trailing_metadata"]["www-authenticate"].as_str().unwrap_or_default();
    assert!(www.contains("error=\"insufficient_scope\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_unavailable() {
    let server = GrpcServer::start();
    let url = server.url();
    drop(server);
    let rest = format!(
        "\n[[upstreams]]\nname = \"orders\"\nendpoints = [\"{url}\"]\nprotocol = \"h2c\"\n{}",
        route("/test.Echo", "orders", "public = true")
    );
    let gw = Gw::start_text(&Config::new().rest(&rest).text()).await;
    let out = grpc(&gw, true, "Unary", json!({ "request": "x" })).await;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    assert_eq!(out["details"], "the upstream could not be reached", "{out}");
}

/// A route's URL upstream says `upstream_protocol = "h2c"` itself, without a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_route_speaks_h2c_with_upstream_protocol() {
    let server = GrpcServer::start();
    let rest = route("/test.Echo", &server.url(), "public = true\nupstream_protocol = \"h2c\"");
    let gw = Gw::start_text(&Config::new().rest(&rest).text()).await;
    let out = grpc(&gw, true, "Unary", json!({ "request": "direct" })).await;
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(answer(&out)["echo"], "direct");
}

/// An `https://` upstream: unset (`auto`) gets h2 by ALPN, so gRPC over TLS passes; `http1` offers
/// only HTTP/1.1, which a gRPC server refuses, so the call fails as UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_gets_h2_by_alpn_unless_http1() {
    let ca = test_ca::TestCa::new("grpc test CA");
    let (cert, key) = ca.server_cert(&["127.0.0.1"]);
    let files = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (files.path().join("server.crt"), files.path().join("server.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let server = GrpcServer::start_tls(&cert_file, &key_file);
    for (protocol, code) in
        [("", "OK"), ("upstream_protocol = \"auto\"", "OK"), ("upstream_protocol = \"http1\"", "UNAVAILABLE")]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("grpc-ca.pem"), &ca.pem).unwrap();
        let url = format!("https://127.0.0.1:{}", server.port);
        let rest = route("/test.Echo", &url, &format!("public = true\nupstream_ca = \"grpc-ca.pem\"\n{protocol}"));
        let gw = Gw::start_in(dir, &Config::new().rest(&rest).text()).await;
        let out = grpc(&gw, false, "Unary", json!({ "request": "tls" })).await;
        assert_eq!(out["code"], code, "{protocol}: {out}");
    }
}
