//! `tls.client_ca` and `tls.client_auth` reload like the server certificate: the next handshake
//! and the next token request use the new ones, with no restart pending.

use super::*;

#[tokio::test]
async fn client_ca_and_client_auth_apply_to_the_next_handshake_after_a_reload() {
    let pki = Pki::generate();
    let gw = Gw::start_config(&pki.config("", "echo")).await;
    let g = gw.wait_watcher_ready().await;
    assert!(refused(&gw, Some(&pki.foreign)).await);
    assert!(!refused(&gw, Some(&pki.pki_app)).await);
    assert!(!refused(&gw, None).await);
    // An open connection keeps what its handshake decided.
    let mut open = mtls(&gw, Some(&pki.pki_app), false).await;

    // Swap the CA file's contents for the other CA, and insist on a certificate.
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace("client_auth = \"optional\"", "client_auth = \"required\"");
    replace_file(&pki.ca_path, &std::fs::read(&pki.other_ca_path).unwrap());
    replace_file(&gw.config, text.as_bytes());
    let doc = gw
        .wait_reload(10, "both changes", |d| d["generation"].as_u64().unwrap_or(0) > g && d["last_error"].is_null())
        .await;
    assert_eq!(doc["restart_required"], serde_json::json!([]), "nothing waits for a restart: {doc}");
    // The two writes may have been two reloads: wait until the required mode is in force.
    poll_until(10, "client_auth = required in force", || async {
        if refused(&gw, None).await {
            Ok(())
        } else {
            Err("a handshake without certificate still passes".to_string())
        }
    })
    .await;
    assert!(refused(&gw, Some(&pki.pki_app)).await, "the old CA's certificate is refused now");
    assert!(!refused(&gw, Some(&pki.foreign)).await, "the new CA's certificate is accepted");
    // The token endpoint's chain check follows too: the other CA's `CN=pki-app,O=Acme` is pki-app now.
    let token = token_for(&gw, &pki.foreign, "pki-app").await;
    assert_eq!(cnf_of(&token)["x5t#S256"], pki.foreign.thumbprint());
    let r = call(&mut open, "/pub/x", "unused").await;
    assert_eq!(r.status, 200, "the connection opened before the reload still serves");
}
