//! Stock `curl --cert --key`, over HTTP/1.1 and HTTP/2: a token from the token endpoint with
//! `tls_client_auth`, and the proxy with the bound token, with and without the certificate.

use super::*;

/// Runs curl against the gateway (off the runtime's thread: the gateway runs in this process);
/// returns (status, body).
async fn curl(gw: &Gw, http2: bool, cred: Option<&Cred>, args: Vec<String>) -> (u16, String) {
    let mut all = vec![
        "-sS".to_string(),
        if http2 { "--http2" } else { "--http1.1" }.into(),
        "--cacert".into(),
        gw.path("certs/gateway.crt").display().to_string(),
        "-w".into(),
        "\n%{http_code} %{http_version}".into(),
    ];
    if let Some(c) = cred {
        all.extend([
            "--cert".into(),
            c.cert_path.display().to_string(),
            "--key".into(),
            c.key_path.display().to_string(),
        ]);
    }
    all.extend(args);
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(&all).output())
        .await
        .expect("curl thread")
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl said: {text} {:?}", out.stderr));
    let (code, version) = last.split_once(' ').expect("code and version");
    assert_eq!(version, if http2 { "2" } else { "1.1" }, "the HTTP version curl spoke");
    (code.parse().expect("status"), body.to_owned())
}

#[tokio::test]
async fn curl_gets_a_bound_token_and_calls_the_proxy_with_it() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let base = format!("https://localhost:{}", gw.https.port());
    for http2 in [false, true] {
        let form = ["-d", "grant_type=client_credentials", "-d", "client_id=pki-app"].map(String::from);
        let mut args = form.to_vec();
        args.push(format!("{base}/oauth2/token"));
        let (status, body) = curl(&gw, http2, Some(&pki.pki_app), args).await;
        assert_eq!(status, 200, "http2={http2}: {body}");
        let token = serde_json::from_str::<Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(cnf_of(&token)["x5t#S256"], pki.pki_app.thumbprint());

        let call = || vec!["-H".to_string(), format!("Authorization: Bearer {token}"), format!("{base}/api/hello")];
        let (status, body) = curl(&gw, http2, Some(&pki.pki_app), call()).await;
        assert_eq!(status, 200, "same certificate, http2={http2}: {body}");
        let (status, body) = curl(&gw, http2, None, call()).await;
        assert_eq!(status, 401, "no certificate, http2={http2}: {body}");
        assert!(body.contains("invalid_token"), "{body}");
        let (status, body) = curl(&gw, http2, Some(&pki.san_app), call()).await;
        assert_eq!(status, 401, "another certificate, http2={http2}: {body}");

        // A wrong certificate at the token endpoint, through curl too.
        let mut args = form.to_vec();
        args.push(format!("{base}/oauth2/token"));
        let (status, body) = curl(&gw, http2, Some(&pki.wrong_subject), args).await;
        assert_eq!(status, 400, "a certificate failed: invalid_client without a Basic challenge: {body}");
        assert!(body.contains("invalid_client"), "{body}");
    }
}
