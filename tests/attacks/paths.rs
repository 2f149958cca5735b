//! Path confusion against a protected prefix (`/admin`, scope `admin`) behind a public root
//! route (`/`): no spelling of `/admin` may be forwarded to the public upstream, and none may
//! reach the protected upstream without a valid token.

use crate::common::*;
use crate::support::*;

const CONFUSED: &[&str] = &[
    "/%61dmin",
    "/%61dmin/x",
    "/adm%69n",
    "/%2561dmin",
    "//admin",
    "//admin/x",
    "/pub//admin",
    "/public/../admin",
    "/./admin",
    "/pub/./../admin",
    "/pub/%2e%2e/admin",
    "/pub/%2E%2E/admin",
    "/pub/.%2e/admin",
    "/pub/..%2fadmin",
    "/pub%2f..%2fadmin",
    "/pub/%252e%252e/admin",
    "/public\\..\\admin",
    "/public%5c..%5cadmin",
    "/%5cadmin",
    "/\\admin",
    "/admin;x",
    "/admin;/x",
    "/public;/../admin",
    "/admin%3bx",
    "/admin..;/",
    "/ADMIN",
    "/Admin/x",
    "/aDmIn/users",
    "/%EF%BC%8Fadmin",
    "/pub%EF%BC%8F..%EF%BC%8Fadmin",
    "/%EF%BC%A1dmin",
    "/%E2%80%8Badmin",
    "/%c0%ae%c0%ae/admin",
    "/pub/%c0%ae%c0%ae/admin",
    "/%c0%afadmin",
    "/%e0%80%afadmin",
    "/admin%00",
    "/admin%00/x",
    "/admin%2f",
    "/admin/..",
    "/admin/.",
    "/pub/...",
    "/admin%",
    "/admin%zz",
    "/admin?x=1",
    "/admin/",
];

async fn probe(lab: &Lab, path: &str, auth: Option<&str>, tls: bool) -> Vec<u16> {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n");
    let out = if tls { raw_tls(&lab.gw, req.as_bytes()).await } else { raw_plain(lab.gw.plain, req.as_bytes()).await };
    statuses(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confused_spellings_of_a_protected_prefix_are_refused() {
    let lab = Lab::start().await;
    let weak = token(&lab.k1, &claims("m", "read"));
    let mut report = Vec::new();
    for (i, path) in CONFUSED.iter().enumerate() {
        for auth in [None, Some(weak.as_str())] {
            let st = probe(&lab, path, auth, i % 4 == 0).await;
            assert!(
                st.len() == 1 && matches!(st[0], 400 | 401 | 403 | 404),
                "{path} (token: {}): {st:?}",
                auth.is_some()
            );
            assert_eq!(
                lab.public.count(),
                0,
                "{path}: forwarded to the public upstream: {:?}",
                lab.public.seen().iter().map(|s| &s.uri).collect::<Vec<_>>()
            );
            assert_eq!(lab.admin.count(), 0, "{path}: reached the protected upstream without the admin scope");
            report.push(format!("{path}{}: {st:?}", if auth.is_some() { " +read token" } else { "" }));
        }
    }
    eprintln!("paths:\n  {}", report.join("\n  "));
    lab.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_spellings_are_forwarded_canonical_with_a_valid_token_only() {
    let lab = Lab::start().await;
    let admin = token(&lab.k1, &claims("root", "admin"));
    for (path, forwarded) in
        [("/%61dmin/x", "/admin/x"), ("/adm%69n", "/admin"), ("/ADMIN", "/ADMIN"), ("/Admin/x", "/Admin/x")]
    {
        assert_eq!(probe(&lab, path, None, false).await, [401], "{path} without a token");
        assert_eq!(probe(&lab, path, Some(&admin), true).await, [200], "{path} with an admin token");
        assert_eq!(lab.admin.last().uri, forwarded, "{path}");
    }
    assert_eq!(lab.public.count(), 0);
}

/// Spellings that a lenient upstream (trailing-whitespace or trailing-dot trimming, as in some
/// Java and Windows stacks) resolves to `/admin`, while the gateway matches them to `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_space_or_dot_variants_do_not_reach_the_public_upstream() {
    let lab = Lab::start().await;
    let mut leaked = Vec::new();
    for path in ["/admin%20", "/admin%20/x", "/admin.", "/admin./x", "/admin%09", "/admin%C2%A0"] {
        let st = probe(&lab, path, None, false).await;
        if lab.public.count() > leaked.len() {
            leaked.push(format!("{path} -> {st:?}, upstream saw {}", lab.public.last().uri));
        }
    }
    assert_eq!(lab.admin.count(), 0);
    assert!(leaked.is_empty(), "protected-prefix look-alikes forwarded to the public route: {leaked:#?}");
}
