//! Rules on claims (`[[routes]] require`) over the wire, with tokens shaped like Keycloak's
//! (`realm_access`, `resource_access.<client>.roles`), Entra ID's (`roles`, `groups`, `scp`) and
//! Auth0's (namespaced claims): every condition kind holding and failing, tenant binding to a
//! path placeholder (percent-encoded, and a case difference), `claims_to_headers` with paths, the
//! 403's challenge and body (the claim named, never the values), the metric, and a reload that
//! changes rules with zero failed requests.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use common::*;

const RULES: &str = r#"
[[routes]]
prefix = "/orders"
upstream = "echo"
require = [
  { claim = "realm_access.roles", any_of = ["orders-admin", "ops"] },
  { claim = ["resource_access", "orders.api", "roles"], all_of = ["reader"] },
  { claim = "email_verified", equals = true },
]
claims_to_headers = { "X-Roles" = "realm_access.roles", "X-Client-Roles" = ["resource_access", "orders.api", "roles"] }

[[routes]]
prefix = "/tenants/{tenant}/orders"
upstream = "echo"
require = [{ claim = "tenant", equals = "{tenant}" }]

[[routes]]
prefix = "/entra"
upstream = "echo"
require = [
  { claim = "groups", all_of = ["staff", "eu"] },
  { claim = "scp", any_of = ["Orders.Read"] },
  { claim = "roles", any_of = ["Orders.Reader", "Orders.Admin"] },
]

[[routes]]
prefix = "/auth0"
upstream = "echo"
require = [
  { claim = ["https://example.com/roles"], any_of = ["admin"] },
  { claim = "act", present = false },
]
"#;

/// A token of the gateway's own key with `extra` claims merged in.
fn token_with(gw: &Gw, extra: Value) -> String {
    let mut c = claims("alice", "read");
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    token(&gw.key("k1"), &c)
}

fn keycloak(roles: &[&str], client_roles: &[&str], verified: bool) -> Value {
    json!({"realm_access": {"roles": roles}, "resource_access": {"orders.api": {"roles": client_roles}},
           "email_verified": verified, "preferred_username": "alice", "azp": "orders-spa"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_entra_and_auth0_shaped_tokens_pass_only_when_every_rule_holds() {
    let gw = Gw::start_text(&Config::new().rest(RULES).text()).await;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("/orders/1", keycloak(&["orders-admin"], &["reader"], true), None),
        ("/orders/1", keycloak(&["ops", "x"], &["reader", "writer"], true), None),
        ("/orders/1", keycloak(&["user"], &["reader"], true), Some("realm_access.roles")),
        ("/orders/1", keycloak(&["ops"], &["writer"], true), Some("[\"resource_access\", \"orders.api\", \"roles\"]")),
        ("/orders/1", keycloak(&["ops"], &["reader"], false), Some("email_verified")),
        ("/orders/1", json!({}), Some("realm_access.roles")),
        (
            "/entra/x",
            json!({"groups": ["staff", "eu"], "scp": "Orders.Read User.Read", "roles": ["Orders.Admin"]}),
            None,
        ),
        ("/entra/x", json!({"groups": ["staff"], "scp": "Orders.Read", "roles": ["Orders.Admin"]}), Some("groups")),
        ("/entra/x", json!({"groups": ["staff", "eu"], "scp": "User.Read", "roles": ["Orders.Admin"]}), Some("scp")),
        ("/entra/x", json!({"groups": ["staff", "eu"], "scp": "Orders.Read", "roles": "Orders.Reader"}), None),
        ("/entra/x", json!({"groups": ["staff", "eu"], "scp": "Orders.Read", "roles": ["Guest"]}), Some("roles")),
        ("/auth0/x", json!({"https://example.com/roles": ["admin"]}), None),
        ("/auth0/x", json!({"https://example.com/roles": ["admin"], "act": {"sub": "impersonator"}}), Some("act")),
        ("/auth0/x", json!({"https://example.com/roles": ["viewer"]}), Some("[\"https://example.com/roles\"]")),
    ];
    let mut c = gw.tls(true).await;
    for (path, extra, refused_on) in &cases {
        let auth = format!("Bearer {}", token_with(&gw, extra.clone()));
        let r = c.send(req("GET", path, &[("authorization", &auth)], empty())).await;
        match refused_on {
            None => assert_eq!(r.status, 200, "{path} {extra}: {}", r.text()),
            Some(claim) => {
                assert_eq!(r.status, 403, "{path} {extra}: {}", r.text());
                assert!(r.www_auth().contains("error=\"insufficient_scope\""), "{}", r.www_auth());
                assert_eq!(r.json()["error"], "insufficient_scope");
                let desc = r.json()["error_description"].as_str().unwrap().to_owned();
                assert!(desc.contains(claim), "{path}: names the claim: {desc}");
                for secret in ["orders-admin", "ops", "reader", "staff", "Orders.Read", "admin\"", "Orders.Admin"] {
                    assert!(
                        !desc.contains(secret) && !r.www_auth().contains(secret),
                        "{path}: never the values: {desc}"
                    );
                }
            }
        }
    }
    let refused = cases.iter().filter(|c| c.2.is_some()).count() as u64;
    let m = gw.metrics().await;
    assert_eq!(sample(&m, r#"tokengate_token_rejections_total{reason="claim_rule"}"#), refused, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_one_tenant_is_refused_on_another_tenants_path() {
    let gw = Gw::start_text(&Config::new().rest(RULES).text()).await;
    let mut c = gw.tls(false).await;
    let get = |tenant_claim: &str, path: &str| {
        let auth = format!("Bearer {}", token_with(&gw, json!({ "tenant": tenant_claim })));
        req("GET", path, &[("authorization", &auth)], empty())
    };
    for (claim, path, status) in [
        ("acme", "/tenants/acme/orders/7", 200),
        ("acme", "/tenants/globex/orders/7", 403),
        ("globéx", "/tenants/glob%C3%A9x/orders", 200),
        ("globéx", "/tenants/glob%c3%a9x/orders", 200),
        ("acme", "/tenants/ACME/orders", 403),
        ("ACME", "/tenants/acme/orders", 403),
        ("acme", "/tenants/%61cme/orders", 200),
    ] {
        let r = c.send(get(claim, path)).await;
        assert_eq!(r.status, status, "tenant {claim} on {path}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_to_headers_follow_paths_into_the_payload() {
    let gw = Gw::start_text(&Config::new().rest(RULES).text()).await;
    let auth = format!("Bearer {}", token_with(&gw, keycloak(&["ops", "orders-admin"], &["reader", "writer"], true)));
    // A client's own copy of the header is dropped whatever the token says.
    let r = gw.get("/orders/1", &[("authorization", &auth), ("x-roles", "root")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json()["headers"].clone();
    assert_eq!(seen["x-roles"], "ops orders-admin");
    assert_eq!(seen["x-client-roles"], "reader writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_rules_fails_no_request() {
    let gw = Gw::start_text(&Config::new().rest(RULES).text()).await;
    // Holds under both rule sets; `ops` alone holds only under the first.
    let both = format!("Bearer {}", token_with(&gw, keycloak(&["orders-admin"], &["reader"], true)));
    let ops = format!("Bearer {}", token_with(&gw, keycloak(&["ops"], &["reader"], true)));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed, conn) = (stop.clone(), sent.clone(), failed.clone(), gw.tls(true).await);
        tokio::spawn(async move {
            let mut conn = conn;
            while !stop.load(Ordering::Relaxed) {
                let r = conn.send(req("GET", "/orders/x", &[("authorization", &both)], empty())).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The watcher must be watching before the file changes, or the change could go unseen.
    let base = gw.wait_watcher_ready().await;
    let tightened = RULES.replace(r#"any_of = ["orders-admin", "ops"]"#, r#"any_of = ["orders-admin"]"#);
    replace_file(&gw.config, Config::new().rest(&tightened).text().as_bytes());
    gw.wait_generation_above(base, 10).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {} requests during the reload", sent.load(Ordering::Relaxed));
    let r = gw.get("/orders/x", &[("authorization", &ops)]).await;
    assert_eq!(r.status, 403, "the new rules apply: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_stops_the_start_naming_the_route_and_key() {
    for (rest, says) in [
        (
            "require = [{ claim = \"t\", equals = \"{tenant}\" }]",
            "route \"/x\": require: {tenant} is not a placeholder",
        ),
        ("require = [{ claim = \"roles\" }]", "route \"/x\": require: claim roles: say one of"),
        (
            "claims_to_headers = { \"X-A\" = \"a..b\" }",
            "route \"/x\": claims_to_headers: claim a..b has an empty segment",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, config_text("", &route("/x", "echo", rest))).unwrap();
        let e = tokengate::server::start(config).await.err().expect("refused").to_string();
        assert!(e.contains(says), "{e}");
    }
}
