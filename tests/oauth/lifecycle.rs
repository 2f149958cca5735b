//! State across a restart (refresh families, revocations in the redb file) and hot reload of
//! the client and user tables (inline and in clients_file / users_file).

use std::time::Duration;

use crate::common::*;
use crate::support::*;

/// Starts a gateway again on the config (and state file) of a stopped one. The previous process
/// state may take a moment to release the file: retry briefly.
async fn restart(gw: &Gw) -> (tokengate::server::Running, Ep) {
    let mut last = None;
    for _ in 0..50 {
        match tokengate::server::start(gw.config.clone()).await {
            Ok(running) => {
                let ep = Ep {
                    https: running.https_addr,
                    plain: running.plain_addr.expect("plain"),
                    cert: read_cert(&gw.path("certs/gateway.crt")),
                };
                return (running, ep);
            }
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("restart failed: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_families_and_revocations_survive_a_restart() {
    let mut gw = start_default().await;
    let ep = Ep::of(&gw);
    assert!(gw.path("state/tokengate.redb").exists(), "a real state file");
    let rt = ep.password_ok("app", "alice", ALICE_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let revoked = ep.cc_token("svc").await;
    let kept = ep.cc_token("svc").await;
    assert_eq!(ep.form("/oauth2/revoke", Auth::Basic("svc", SECRET), &[("token", &revoked)]).await.status, 200);
    // A rotated-away token, to check reuse detection after the restart too.
    let old_rt = ep.password_ok("app", "bob", BOB_PW, None).await["refresh_token"].as_str().unwrap().to_owned();
    let r = ep.refresh("app", &old_rt).await;
    assert_eq!(r.status, 200);
    let new_rt = r.json()["refresh_token"].as_str().unwrap().to_owned();
    gw.shutdown().await;

    let (running, ep2) = restart(&gw).await;
    let r = ep2.refresh("app", &rt).await;
    assert_eq!(r.status, 200, "the refresh token survived the restart: {}", r.text());
    let r = ep2.api(&revoked).await;
    assert_eq!(r.status, 401, "still revoked after the restart: {}", r.text());
    assert_eq!(ep2.api(&kept).await.status, 200, "the signing key and other tokens survived");
    assert_oauth_error(&ep2.refresh("app", &old_rt).await, 400, "invalid_grant");
    assert_oauth_error(&ep2.refresh("app", &new_rt).await, 400, "invalid_grant");
    running.shutdown().await;
}

fn extra_client() -> String {
    client("late", &secret_hash(SECRET), &["client_credentials"], &["read"], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_tables_reload_add_and_remove_a_client() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    gw.wait_watcher_ready().await;
    let base = std::fs::read_to_string(&gw.config).unwrap();
    let late = || ep.token(Auth::Basic("late", SECRET), &[("grant_type", "client_credentials")]);
    assert_oauth_error(&late().await, 401, "invalid_client");

    replace_file(&gw.config, format!("{base}{}", extra_client()).as_bytes());
    eventually(5, "the added client gets tokens", || async { late().await.status == 200 }).await;

    replace_file(&gw.config, base.as_bytes());
    eventually(5, "the removed client is refused", || async { late().await.status == 401 }).await;
    assert_oauth_error(&late().await, 401, "invalid_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_files_reload_clients_and_password_changes() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("clients.toml");
    let users = dir.path().join("users.toml");
    let user_table = |password: &str| user("dave", password, &["read"], "");
    write_file(&clients, "");
    write_file(&users, user_table(ALICE_PW));
    let gw = start(&Opts {
        top_extra: format!("clients_file = \"{}\"\nusers_file = \"{}\"\n", clients.display(), users.display()),
        ..Opts::default()
    })
    .await;
    let ep = Ep::of(&gw);
    gw.wait_watcher_ready().await;
    let dave = |p: &'static str| {
        let ep = ep.clone();
        async move {
            ep.token(Auth::Basic("app", SECRET), &[("grant_type", "password"), ("username", "dave"), ("password", p)])
                .await
        }
    };
    let r = dave(ALICE_PW).await;
    assert_eq!(r.status, 200, "a user from users_file: {}", r.text());
    let rt = r.json()["refresh_token"].as_str().unwrap().to_owned();

    // A client added to clients_file gets tokens.
    let late = || ep.token(Auth::Basic("late", SECRET), &[("grant_type", "client_credentials")]);
    assert_oauth_error(&late().await, 401, "invalid_client");
    replace_file(&clients, extra_client().as_bytes());
    eventually(5, "the client from clients_file gets tokens", || async { late().await.status == 200 }).await;

    // A changed password_hash: the old password fails, the new one works.
    replace_file(&users, user_table(NEW_PW).as_bytes());
    eventually(5, "the new password works", || async { dave(NEW_PW).await.status == 200 }).await;
    assert_oauth_error(&dave(ALICE_PW).await, 400, "invalid_grant");
    let r = ep.refresh("app", &rt).await;
    assert_eq!(r.status, 200, "a password change alone keeps refresh families: {}", r.text());

    // The client removed from clients_file: invalid_client.
    replace_file(&clients, b"");
    eventually(5, "the removed client is refused", || async { late().await.status == 401 }).await;
}
