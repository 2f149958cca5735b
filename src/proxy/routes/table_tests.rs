//! The route table: precedence (host, prefix, method), placeholders, 405, ambiguity, and the
//! path-confusion cases the prefix matching has always had to get right.

use super::*;

/// Whitespace-separated test data keeps long case lists compact.
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn spec(prefix: &str, hosts: &[&str], methods: &[&str], value: usize) -> RouteSpec<usize> {
    RouteSpec {
        prefix: prefix.to_owned(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        methods: methods.iter().map(|m| Method::from_bytes(m.as_bytes()).unwrap()).collect(),
        value,
    }
}

/// Prefix-only routes, valued by their position.
fn table(prefixes: &str) -> Result<RouteTable<usize>, RouteTableError> {
    RouteTable::new(words(prefixes).into_iter().zip(0..).map(|(p, i)| spec(p, &[], &[], i)).collect())
}

/// The value of the route serving GET `path` on no particular host.
fn value(t: &RouteTable<usize>, path: &str) -> Option<usize> {
    at(t, None, "GET", path)
}

fn at(t: &RouteTable<usize>, host: Option<&str>, method: &str, path: &str) -> Option<usize> {
    match t.find(host, &Method::from_bytes(method.as_bytes()).unwrap(), path) {
        Lookup::Found(f) => Some(*f.value),
        _ => None,
    }
}

/// Checks "path=>prefix" cases ("-" for no match).
fn routes_to(prefixes: &str, cases: &str) {
    let t = table(prefixes).unwrap();
    let names = words(prefixes);
    for case in words(cases) {
        let (path, want) = case.split_once("=>").unwrap();
        assert_eq!(value(&t, path).map_or("-", |i| names[i]), want, "{path:?}");
    }
}

#[test]
fn matches_on_segment_boundaries_longest_first_ignoring_case() {
    let nested = "/ /api /api/admin /api/admin/keys";
    routes_to(
        nested,
        "/=>/ /apix=>/ /ap=>/ /api=>/api /api/=>/api /api/x=>/api /api/adminx/keys=>/api \
         /api/admin=>/api/admin /api/admin/keysx=>/api/admin /API/Admin/x=>/api/admin \
         /api/admin/keys/1=>/api/admin/keys /aPi=>/api",
    );
    routes_to("/api/ /Public", "/apix=>- /other=>- /=>- api=>- =>- /api=>/api/ /public/x=>/Public");
    routes_to("/caf%c3%a9", "/caf%C3%A9/x=>/caf%c3%a9");
    let t = table(nested).unwrap();
    assert_eq!((value(&t, "/api/x"), t.len()), (Some(1), 4));
    let empty = table("").unwrap();
    assert!(empty.is_empty() && value(&empty, "/").is_none());
}

#[test]
fn trailing_dots_and_encoded_spaces_get_the_trimmed_routes_rules() {
    let t = table("/ /admin /admin/keys").unwrap();
    for p in ["/admin.", "/admin./x", "/admin%20", "/admin%20/x", "/admin.%20.", "/ADMIN.."] {
        assert_eq!(value(&t, p), Some(1), "{p}");
    }
    assert_eq!(value(&t, "/admin./keys."), Some(2), "every segment, not only the last");
    assert_eq!(value(&t, "/adminx."), Some(0));
    assert_eq!(value(&t, "/."), Some(0), "the root is never an alias target");
}

#[test]
fn attacks_on_a_protected_prefix_are_refused_or_routed_to_it() {
    let t = table("/ /public /admin").unwrap();
    let attacks = "/admin /ADMIN/ /%61dmin /%41DMIN/x /public/../admin /public/..%2fadmin \
        //admin /admin;x/y /admin%3b /.%2e/admin /%2e/admin /admin%2f /\\admin /%ef%bc%8fadmin \
        /ad%00min /public%2f..%2fadmin /%2561dmin /%c0%afadmin /./admin /admin%09 \
        /public/%2e%2e/admin /%EF%BD%81dmin /ad%E2%80%8Bmin /Admin\\..\\public";
    for p in words(attacks) {
        if let Ok(n) = normalize_path(p) {
            assert_eq!(value(&t, &n), Some(2), "{p:?} -> {n:?}");
        }
    }
}

/// Bad route tables ("prefixes | error").
const BAD_TABLES: &str = r#"
    /api /api/ | Ambiguous { first: "\"/api\"", second: "\"/api/\"" }
    /api /API | Ambiguous { first: "\"/api\"", second: "\"/API\"" }
    / / | Ambiguous { first: "\"/\"", second: "\"/\"" }
    /t/{a}/x /t/{b}/x | Ambiguous { first: "\"/t/{a}/x\"", second: "\"/t/{b}/x\"" }
    api | InvalidPrefix { prefix: "api", reason: NotAbsolute }
    /a//b | InvalidPrefix { prefix: "/a//b", reason: EmptySegment }
    /api// | InvalidPrefix { prefix: "/api//", reason: EmptySegment }
    /a;b | InvalidPrefix { prefix: "/a;b", reason: Semicolon }
    /%61pi | NonCanonical { prefix: "/%61pi", canonical: "/api" }
    /t/x{a} | BadPlaceholder { prefix: "/t/x{a}", why: "a placeholder is a whole segment, {name}" }
    /t/{a-b} | BadPlaceholder { prefix: "/t/{a-b}", why: "a placeholder's name is letters, digits and _" }
    /t/{a}/{a} | BadPlaceholder { prefix: "/t/{a}/{a}", why: "placeholder {a} appears twice" }"#;

#[test]
fn table_construction_errors() {
    for (prefixes, want) in BAD_TABLES.lines().filter_map(|l| l.split_once('|')) {
        assert_eq!(format!("{:?}", table(prefixes).unwrap_err()), want.trim(), "{prefixes}");
    }
}

#[test]
fn matched_length_is_what_strip_prefix_removes() {
    let t =
        RouteTable::new(vec![spec("/", &[], &[], 0), spec("/api", &[], &[], 1), spec("/t/{id}", &[], &[], 2)]).unwrap();
    for (path, len) in [("/x", 0), ("/api", 4), ("/api/", 4), ("/API/v1/x", 4), ("/t/acme/o", 7), ("/t/acme", 7)] {
        let Lookup::Found(f) = t.find(None, &Method::GET, path) else { panic!("{path}") };
        assert_eq!(f.matched_len, len, "{path}");
    }
}

#[test]
fn placeholders_match_one_segment_and_literals_beat_them() {
    let t = RouteTable::new(vec![
        spec("/tenants/{tenant}/orders", &[], &[], 0),
        spec("/tenants/acme/orders", &[], &[], 1),
        spec("/tenants/{tenant}", &[], &[], 2),
        spec("/a/{x}/c", &[], &[], 3),
        spec("/{y}/b/c", &[], &[], 4),
    ])
    .unwrap();
    let path = "/tenants/glob%C3%A9x/orders/7";
    let Lookup::Found(f) = t.find(None, &Method::GET, path) else { panic!() };
    assert_eq!((*f.value, f.capture(path, "tenant")), (0, Some("glob%C3%A9x")));
    assert_eq!(f.capture(path, "other"), None);
    assert_eq!(at(&t, None, "GET", "/tenants/ACME/orders"), Some(1), "literal beats placeholder, any case");
    assert_eq!(at(&t, None, "GET", "/tenants/x"), Some(2));
    assert_eq!(at(&t, None, "GET", "/tenants/x/other"), Some(2), "the longest prefix");
    assert_eq!(at(&t, None, "GET", "/tenants"), None, "a placeholder needs a segment");
    assert_eq!(at(&t, None, "GET", "/a/b/c"), Some(3), "literal first at the first place they differ");
}

#[test]
fn hosts_come_first_exact_then_wildcard_then_none_and_ports_and_case_are_ignored() {
    let t = RouteTable::new(vec![
        spec("/", &[], &[], 0),
        spec("/admin", &[], &[], 1),
        spec("/", &["api.example.com"], &[], 2),
        spec("/", &["*.shop.example"], &[], 3),
        spec("/orders", &["eu.shop.example"], &[], 4),
    ])
    .unwrap();
    assert_eq!(at(&t, Some("api.example.com"), "GET", "/admin"), Some(2), "the host beats a longer prefix");
    assert_eq!(at(&t, Some("API.Example.COM:8443"), "GET", "/x"), Some(2));
    assert_eq!(at(&t, Some("api.example.com."), "GET", "/x"), Some(2), "a trailing dot");
    assert_eq!(at(&t, Some("a.shop.example"), "GET", "/x"), Some(3));
    assert_eq!(at(&t, Some("a.b.shop.example"), "GET", "/x"), Some(0), "a wildcard is one label");
    assert_eq!(at(&t, Some("shop.example"), "GET", "/x"), Some(0));
    assert_eq!(at(&t, Some("eu.shop.example"), "GET", "/orders/1"), Some(4), "exact beats wildcard");
    assert_eq!(at(&t, Some("eu.shop.example"), "GET", "/x"), Some(3), "a tier with no path match is passed over");
    assert_eq!(at(&t, Some("other.example"), "GET", "/admin"), Some(1));
    assert_eq!(at(&t, None, "GET", "/admin"), Some(1));
    assert_eq!(at(&t, Some("[::1]:8443"), "GET", "/x"), Some(0));
    for bad in ["*", "*.", "a.*.b", "exa mple.com", "http://x"] {
        let e = RouteTable::new(vec![spec("/", &[bad], &[], 0)]).unwrap_err();
        assert!(matches!(e, RouteTableError::BadHost { .. }), "{bad}: {e}");
    }
}

#[test]
fn a_method_picks_among_the_routes_of_one_prefix_and_never_falls_back() {
    let t = RouteTable::new(vec![
        spec("/", &[], &[], 0),
        spec("/orders", &[], &["GET", "HEAD"], 1),
        spec("/orders", &[], &["POST", "PUT", "PATCH", "DELETE"], 2),
        spec("/items", &[], &["GET"], 3),
        spec("/items", &[], &[], 4),
    ])
    .unwrap();
    assert_eq!(at(&t, None, "GET", "/orders/1"), Some(1));
    assert_eq!(at(&t, None, "DELETE", "/orders/1"), Some(2));
    match t.find(None, &Method::OPTIONS, "/orders/1") {
        Lookup::MethodNotAllowed(allow) => assert_eq!(allow, "DELETE, GET, HEAD, PATCH, POST, PUT"),
        other => panic!("{other:?}"),
    }
    assert_eq!(at(&t, None, "GET", "/items"), Some(3), "naming the method beats naming none");
    assert_eq!(at(&t, None, "POST", "/items"), Some(4));
    assert!(matches!(table("/x").unwrap().find(None, &Method::GET, "/y"), Lookup::NotFound));
    let clash = RouteTable::new(vec![spec("/o", &[], &["GET", "HEAD"], 0), spec("/o", &[], &["HEAD"], 1)]);
    assert_eq!(
        clash.unwrap_err().to_string(),
        r#"routes "/o" [GET, HEAD] and "/o" [HEAD] both match the same requests with the same precedence"#
    );
    let hosts =
        RouteTable::new(vec![spec("/o", &["a.example", "b.example"], &[], 0), spec("/o", &["B.example"], &[], 1)]);
    assert!(matches!(hosts, Err(RouteTableError::Ambiguous { .. })), "one host in common");
    let fine = RouteTable::new(vec![spec("/o", &["a.example"], &[], 0), spec("/o", &["*.example"], &[], 1)]);
    assert!(fine.is_ok(), "exact and wildcard are different precedences");
}

#[test]
fn ten_thousand_routes() {
    let mut specs: Vec<_> = (0..10_000).map(|i| spec(&format!("/svc{i}"), &[], &[], i)).collect();
    specs.extend((0..10_000).step_by(10).map(|i| spec(&format!("/svc{i}/admin/"), &[], &[], 100_000 + i)));
    let t = RouteTable::new(specs).unwrap();
    assert_eq!(t.len(), 11_000);
    for i in (0..10_000).step_by(7) {
        let admin = if i % 10 == 0 { 100_000 + i } else { i };
        assert_eq!(value(&t, &format!("/svc{i}")), Some(i));
        assert_eq!(value(&t, &format!("/SVC{i}/x/y")), Some(i));
        assert_eq!(value(&t, &format!("/svc{i}/admin/k")), Some(admin));
    }
    for miss in ["/svc10000", "/svc1x", "/"] {
        assert!(value(&t, miss).is_none(), "{miss}");
    }
    let long = format!("/svc5/{}", "a/".repeat(3000));
    assert_eq!(value(&t, &long), Some(5));
}
