//! Every condition kind, holding and failing, on payloads shaped like Keycloak's, Entra ID's and
//! Auth0's; placeholders; what does not compile.

use super::*;
use serde_json::json;

fn rule(toml_text: &str, placeholders: &[&str]) -> Result<Rule, String> {
    let cfg: RuleConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    cfg.compile(&placeholders.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn keycloak() -> Value {
    json!({"sub": "u1", "realm_access": {"roles": ["orders-admin", "offline_access"]},
           "resource_access": {"orders.api": {"roles": ["reader"]}}, "email_verified": true, "tenant": "glob\u{e9}x", "level": 3})
}

fn entra() -> Value {
    json!({"roles": ["Orders.Write"], "groups": ["staff", "eu", "x"], "scp": "Orders.Read User.Read", "tid": "acme"})
}

fn auth0() -> Value {
    json!({"https://example.com/roles": ["admin"], "https://example.com/tenant": "acme", "act": null})
}

/// Whether the rule holds of `payload`, the path segment `{tenant}` being `tenant`.
fn holds(r: &str, payload: &Value, tenant: &str) -> bool {
    let rule = rule(r, &["tenant"]).unwrap_or_else(|e| panic!("{r}: {e}"));
    rule.holds(payload, &|name: &str| (name == "tenant").then_some(tenant))
}

#[test]
fn every_condition_holds_and_fails_on_provider_shaped_tokens() {
    type Case = (&'static str, fn() -> Value, bool);
    let cases: &[Case] = &[
        (
            r#"claim = "realm_access.roles"
any_of = ["orders-admin", "ops"]"#,
            keycloak,
            true,
        ),
        (
            r#"claim = "realm_access.roles"
any_of = ["ops"]"#,
            keycloak,
            false,
        ),
        (
            r#"claim = ["resource_access", "orders.api", "roles"]
all_of = ["reader"]"#,
            keycloak,
            true,
        ),
        (
            r#"claim = "resource_access.orders.api.roles"
all_of = ["reader"]"#,
            keycloak,
            false,
        ),
        (
            r#"claim = "email_verified"
equals = true"#,
            keycloak,
            true,
        ),
        (
            r#"claim = "email_verified"
equals = false"#,
            keycloak,
            false,
        ),
        (
            r#"claim = "level"
equals = 3"#,
            keycloak,
            true,
        ),
        (
            r#"claim = "level"
equals = "3""#,
            keycloak,
            false,
        ),
        (
            r#"claim = "groups"
all_of = ["staff", "eu"]"#,
            entra,
            true,
        ),
        (
            r#"claim = "groups"
all_of = ["staff", "us"]"#,
            entra,
            false,
        ),
        (
            r#"claim = "scp"
any_of = ["Orders.Read"]"#,
            entra,
            true,
        ),
        (
            r#"claim = "scp"
all_of = ["Orders.Read", "Orders.Write"]"#,
            entra,
            false,
        ),
        (
            r#"claim = "roles"
any_of = ["Orders.Write"]"#,
            entra,
            true,
        ),
        (
            r#"claim = ["https://example.com/roles"]
any_of = ["admin"]"#,
            auth0,
            true,
        ),
        (
            r#"claim = "https://example.com/roles"
any_of = ["admin"]"#,
            auth0,
            true,
        ),
        (
            r#"claim = ["https://example.com/roles"]
any_of = ["owner"]"#,
            auth0,
            false,
        ),
        (
            r#"claim = "act"
present = false"#,
            auth0,
            true,
        ),
        (
            r#"claim = "https://example.com/roles"
present = false"#,
            auth0,
            false,
        ),
        (
            r#"claim = "tid"
present = true"#,
            entra,
            true,
        ),
        (
            r#"claim = "nope.deeper"
present = true"#,
            entra,
            false,
        ),
        (
            r#"claim = "realm_access"
equals = "x""#,
            keycloak,
            false,
        ),
    ];
    for (r, payload, want) in cases {
        assert_eq!(holds(r, &payload(), "acme"), *want, "{r}");
    }
}

#[test]
fn a_placeholder_compares_the_decoded_segment_exactly() {
    let tenant = r#"claim = "tenant"
equals = "{tenant}""#;
    assert!(holds(tenant, &keycloak(), "glob%C3%A9x"), "percent-encoded segment, decoded");
    assert!(!holds(tenant, &keycloak(), "GLOB%C3%A9X"), "a case difference is refused");
    assert!(!holds(tenant, &keycloak(), "globex"));
    let tid = r#"claim = "tid"
any_of = ["{tenant}", "shared"]"#;
    assert!(holds(tid, &entra(), "acme") && !holds(tid, &entra(), "other"));
    assert!(
        !holds(
            r#"claim = "level"
equals = "{tenant}""#,
            &keycloak(),
            "3"
        ),
        "only a string claim equals a segment"
    );
}

#[test]
fn rules_that_cannot_hold_or_name_no_placeholder_are_config_errors() {
    for (r, says) in [
        ("claim = \"a\"", "say one of equals, any_of, all_of or present"),
        ("claim = \"a\"\nequals = 1\npresent = true", "one of equals, any_of, all_of or present per rule"),
        ("claim = \"a\"\nany_of = []", "an empty list holds for no token"),
        ("claim = \"a..b\"\nequals = 1", "has an empty segment"),
        ("claim = []\nequals = 1", "has an empty segment"),
        ("claim = \"t\"\nequals = \"{other}\"", "{other} is not a placeholder of the route's prefix"),
        ("claim = \"t\"\nequal = 1", "unknown field"),
    ] {
        let e = rule(r, &["tenant"]).unwrap_err();
        assert!(e.contains(says), "{r}: {e}");
    }
}

#[test]
fn header_text_follows_paths_and_joins_arrays() {
    let path = |c: ClaimPathConfig| c.compile().unwrap();
    let kc = keycloak();
    assert_eq!(
        as_header_text(&kc, &path(ClaimPathConfig::Dotted("realm_access.roles".into()))).as_deref(),
        Some("orders-admin offline_access")
    );
    assert_eq!(as_header_text(&kc, &path(ClaimPathConfig::Dotted("level".into()))).as_deref(), Some("3"));
    assert_eq!(
        as_header_text(&kc, &path(ClaimPathConfig::Dotted("realm_access".into()))),
        None,
        "an object is no header"
    );
    let a0 = auth0();
    let ns = path(ClaimPathConfig::Dotted("https://example.com/tenant".into()));
    assert_eq!(as_header_text(&a0, &ns).as_deref(), Some("acme"), "a top-level name with dots, as before paths");
}
