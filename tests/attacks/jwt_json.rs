//! Duplicate JSON keys in a token's header and payload (docs/validation.md "Strict structure": JSON objects
//! without duplicate keys), for modelled and for unmodelled members.

use crate::common::*;
use crate::jwt::{named, refuse_all};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_in_header_and_payload() {
    let lab = Lab::start().await;
    let n = now();
    let good_h = r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#;
    let body = |extra: &str| {
        format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUD}","sub":"m","scope":"read","iat":{},"exp":{}{extra}}}"#,
            n - 5,
            n + 600
        )
    };
    let v = named(vec![
        (
            "header: alg twice",
            sign_raw(&lab.k1, br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","alg":"none"}"#, body("").as_bytes()),
        ),
        (
            "header: kid twice",
            sign_raw(&lab.k1, br#"{"alg":"ES256","kid":"k9","typ":"at+jwt","kid":"k1"}"#, body("").as_bytes()),
        ),
        (
            "header: typ twice",
            sign_raw(&lab.k1, br#"{"alg":"ES256","kid":"k1","typ":"JWT","typ":"at+jwt"}"#, body("").as_bytes()),
        ),
        ("payload: sub twice", sign_raw(&lab.k1, good_h.as_bytes(), body(r#","sub":"root""#).as_bytes())),
        ("payload: scope twice", sign_raw(&lab.k1, good_h.as_bytes(), body(r#","scope":"read admin""#).as_bytes())),
        (
            "payload: exp twice",
            sign_raw(&lab.k1, good_h.as_bytes(), body(&format!(r#","exp":{}"#, n + 99999)).as_bytes()),
        ),
        ("payload: iss twice", sign_raw(&lab.k1, good_h.as_bytes(), body(r#","iss":"https://evil""#).as_bytes())),
        ("payload: aud twice", sign_raw(&lab.k1, good_h.as_bytes(), body(r#","aud":"other""#).as_bytes())),
    ]);
    refuse_all(&lab, v).await;
    let mut conn = lab.gw.tls(false).await;
    assert_eq!(
        lab.status_of(&mut conn, &sign_raw(&lab.k1, good_h.as_bytes(), body("").as_bytes())).await,
        200,
        "control"
    );
}

/// docs/validation.md "Strict structure": JSON objects without duplicate keys. A claim the validator does
/// not model (here `tenant`, forwarded as `X-Tenant`) must not be exempt: first-wins and
/// last-wins parsers would disagree on the identity the upstream is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_unmodelled_claim_or_header_key_is_refused() {
    let lab = Lab::start().await;
    let n = now();
    let good_h = r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#;
    let p = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUD}","sub":"m","scope":"read","iat":{},"exp":{},"tenant":"acme","tenant":"root-tenant"}}"#,
        n - 5,
        n + 600
    );
    let dup_claim = sign_raw(&lab.k1, good_h.as_bytes(), p.as_bytes());
    let p_ok =
        format!(r#"{{"iss":"{ISSUER}","aud":"{AUD}","sub":"m","scope":"read","iat":{},"exp":{}}}"#, n - 5, n + 600);
    let dup_header = sign_raw(&lab.k1, br#"{"alg":"ES256","kid":"k1","typ":"at+jwt","x":1,"x":2}"#, p_ok.as_bytes());
    let mut conn = lab.gw.tls(false).await;
    let s1 = lab.status_of(&mut conn, &dup_claim).await;
    let tenant = (lab.api.count() > 0).then(|| lab.api.last().header("x-tenant").map(str::to_owned));
    let s2 = lab.status_of(&mut conn, &dup_header).await;
    assert_eq!(
        (s1, s2),
        (401, 401),
        "duplicate `tenant` claim -> {s1} (upstream X-Tenant: {tenant:?}); duplicate unknown header key -> {s2}"
    );
}
