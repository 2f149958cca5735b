//! RFC 6749 5.2 and RFC 9110 15.5.2 at the OAuth endpoints: a failed client authentication that
//! used Basic, or none at all, answers 401 with a `Basic` challenge; one made in the body (a
//! secret or an assertion) answers 400 without a challenge, so that a strict client reads the
//! `invalid_client` code instead of a challenge for a scheme it never used.

use crate::common::*;
use crate::support::*;

const CHALLENGE: &str = "Basic realm=\"tokengate\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_client_authentication_answers_by_the_method_used_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = assertion_key("pk");
    let stranger = assertion_key("other");
    let pem = dir.path().join("pk.pub.pem");
    write_file(&pem, &key.spki_pem);
    let pk = client("pk", &format!("public_key = \"{}\"", pem.display()), &["client_credentials"], &["read"], &[]);
    let gw = start(&Opts { tables: tables() + &pk + "introspect = true\n", ..Opts::default() }).await;
    let ep = Ep::of(&gw);
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    for path in ["/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"] {
        let forged = assertion(&stranger, None, "pk", TOKEN_URL, 120, &format!("forged-{path}"));
        let expired = assertion(&key, None, "pk", TOKEN_URL, -120, &format!("expired-{path}"));
        let fixed = [("grant_type", "client_credentials"), ("token", "whatever")];
        let cases = vec![
            ("client_secret_basic, wrong secret", true, Auth::Basic("svc", "wrong"), vec![]),
            ("client_secret_basic, unknown client", true, Auth::Basic("ghost", SECRET), vec![]),
            ("client_secret_post, wrong secret", false, Auth::Post("svc", "wrong"), vec![]),
            ("client_secret_post, unknown client", false, Auth::Post("ghost", SECRET), vec![]),
            (
                "private_key_jwt, signed by another key",
                false,
                Auth::None,
                vec![("client_assertion_type", jwt_bearer), ("client_assertion", &forged)],
            ),
            (
                "private_key_jwt, expired",
                false,
                Auth::None,
                vec![("client_assertion_type", jwt_bearer), ("client_assertion", &expired)],
            ),
            (
                "private_key_jwt, not a JWT",
                false,
                Auth::None,
                vec![("client_assertion_type", jwt_bearer), ("client_assertion", "not.a.jwt")],
            ),
            ("a confidential client naming itself without credentials", true, Auth::None, vec![("client_id", "svc")]),
            ("an unknown public client", true, Auth::None, vec![("client_id", "ghost")]),
            ("no client authentication at all", true, Auth::None, vec![]),
        ];
        for (what, basic, auth, extra) in cases {
            let params: Vec<(&str, &str)> = fixed.iter().copied().chain(extra).collect();
            let r = ep.form(path, auth, &params).await;
            let (status, challenge) = if basic { (401, Some(CHALLENGE)) } else { (400, None) };
            assert_oauth_error(&r, status, "invalid_client");
            assert_eq!(r.header("www-authenticate"), challenge, "{path}: {what}");
        }
    }
    // Refusals that are not about the client's credentials stay 400 without a challenge (a client
    // the failures above did not lock out).
    let r = ep.token(Auth::Basic(SPECIAL_ID, SPECIAL_SECRET), &[("grant_type", "password")]).await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    assert_eq!(r.header("www-authenticate"), None);
}
