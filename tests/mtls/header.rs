//! Behind a TLS-terminating load balancer: `tls.client_cert_header`, believed only from
//! `tls.client_cert_header_peers` (here 127.0.0.2; the tests' other connections come from
//! 127.0.0.1), always stripped before forwarding, malformed values refused.

use super::*;

const TRUSTED: &str = "127.0.0.2";
const UNTRUSTED: &str = "127.0.0.1";

async fn start(pki: &Pki, upstream: &Upstream) -> Gw {
    let cfg = pki
        .config(
            &format!("client_cert_header = \"x-client-cert\"\nclient_cert_header_peers = [\"{TRUSTED}/32\"]\n"),
            &upstream.url(),
        )
        .tokens("allow_plain_token_endpoint = true\n")
        .rest(&route("/open", &upstream.url(), "public = true"));
    Gw::start_config(&cfg).await
}

fn token_post(client_id: &str, cert: Option<&str>) -> String {
    let body = encode_form(&[("grant_type", "client_credentials"), ("client_id", client_id)]);
    let cert = cert.map(|c| format!("X-Client-Cert: {c}\r\n")).unwrap_or_default();
    format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n{cert}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str, token: &str, cert: Option<&str>) -> String {
    let cert = cert.map(|c| format!("X-Client-Cert: {c}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n{cert}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn a_trusted_peer_s_header_certificate_authenticates_binds_and_never_reaches_the_upstream() {
    let pki = Pki::generate();
    let upstream = Upstream::start(Mode::Ok).await;
    let gw = start(&pki, &upstream).await;
    let cert = pki.pki_app.header_value();

    let r = raw_from(TRUSTED, gw.plain, &token_post("pki-app", Some(&cert))).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.pki_app.thumbprint());

    let r = raw_from(TRUSTED, gw.plain, &get("/api/x", &token, Some(&cert))).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(upstream.last().header("x-client-cert"), None, "stripped before forwarding");
    let forwarded = upstream.count();

    // The same header from an untrusted peer is ignored: the token has no certificate to match.
    let r = raw_from(UNTRUSTED, gw.plain, &get("/api/x", &token, Some(&cert))).await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert!(r.header("www-authenticate").is_some_and(|w| w.contains("invalid_token")), "{:?}", r.headers);
    // A trusted peer that passes no certificate: refused too.
    let r = raw_from(TRUSTED, gw.plain, &get("/api/x", &token, None)).await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert_eq!(upstream.count(), forwarded);

    // Stripped whoever sent it, on a route that needs no token.
    let r = raw_from(UNTRUSTED, gw.plain, &get("/open/x", "x", Some(&cert))).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(upstream.last().header("x-client-cert"), None, "an untrusted peer's header is stripped too");

    // Nor does an untrusted peer's header authenticate at the token endpoint.
    let r = raw_from(UNTRUSTED, gw.plain, &token_post("pki-app", Some(&cert))).await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert_eq!(r.json()["error"], "invalid_client");
}

#[tokio::test]
async fn a_header_certificate_must_still_chain_to_client_ca_for_tls_client_auth() {
    let pki = Pki::generate();
    let upstream = Upstream::start(Mode::Ok).await;
    let gw = start(&pki, &upstream).await;
    for (what, cred) in [("another CA", &pki.foreign), ("self-signed lookalike", &pki.self_signed_pki)] {
        let r = raw_from(TRUSTED, gw.plain, &token_post("pki-app", Some(&cred.header_value()))).await;
        assert_eq!(r.status, 400, "{what}: a certificate was shown, so no Basic challenge: {}", r.body_text());
        assert_eq!(r.json()["error"], "invalid_client", "{what}");
    }
    // A registered self-signed certificate needs no chain.
    let r = raw_from(TRUSTED, gw.plain, &token_post("self-app", Some(&pki.self_app.header_value()))).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
}

#[tokio::test]
async fn a_malformed_header_from_a_trusted_peer_is_a_bad_request() {
    let pki = Pki::generate();
    let upstream = Upstream::start(Mode::Ok).await;
    let gw = start(&pki, &upstream).await;
    let junk = "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A";
    for bad in ["%zz", "not-a-certificate", junk] {
        let r = raw_from(TRUSTED, gw.plain, &get("/api/x", "t", Some(bad))).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body_text());
        assert_eq!(r.json()["error"], "invalid_request", "{bad}");
        let r = raw_from(TRUSTED, gw.plain, &token_post("pki-app", Some(bad))).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body_text());
        assert_eq!(r.json()["error"], "invalid_client", "{bad}");
    }
    // Empty (nginx's `$ssl_client_escaped_cert` for a client without a certificate): no
    // certificate, not a malformed one.
    let r = raw_from(TRUSTED, gw.plain, &get("/api/x", "t", Some(""))).await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    let r = raw_from(TRUSTED, gw.plain, &token_post("pki-app", Some(""))).await;
    assert_eq!(r.status, 401, "{}", r.body_text());
    assert_eq!(r.json()["error"], "invalid_client");
    let cert = pki.pki_app.header_value();
    let twice = get("/api/x", "t", Some(&cert))
        .replace("Connection: close", &format!("X-Client-Cert: {cert}\r\nConnection: close"));
    let r = raw_from(TRUSTED, gw.plain, &twice).await;
    assert_eq!(r.status, 400, "{}", r.body_text());
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
}
