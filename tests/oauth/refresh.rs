//! Refresh tokens: rotation, reuse detection revoking the family, client binding, scope
//! narrowing, idle and absolute expiry, and concurrent use.

use std::time::Duration;

use oauth2::basic::BasicErrorResponseType as E;
use oauth2::{RefreshToken, ResourceOwnerPassword, ResourceOwnerUsername, Scope, TokenResponse};

use crate::common::*;
use crate::support::*;

fn rt_of(v: &serde_json::Value) -> String {
    v["refresh_token"].as_str().expect("refresh_token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_of_an_old_token_kills_the_family() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let client = ep.oauth2_client("app", Some(SECRET));
    let jwks = ep.jwks().await;
    let first = client
        .exchange_password(&ResourceOwnerUsername::new("alice".into()), &ResourceOwnerPassword::new(ALICE_PW.into()))
        .add_scope(Scope::new("read".into()))
        .request_async(&http)
        .await
        .expect("password grant");
    let rt1 = first.refresh_token().expect("rt1").clone();

    let second = client.exchange_refresh_token(&rt1).request_async(&http).await.expect("refresh via oauth2 crate");
    let rt2 = second.refresh_token().expect("rotation hands out a new refresh token").clone();
    assert_ne!(rt2.secret(), rt1.secret());
    assert_ne!(second.access_token().secret(), first.access_token().secret());
    let (_, claims) = verify_with_jwks(&jwks, second.access_token().secret(), AUD);
    assert_eq!(claims["sub"], "alice-sub");
    assert_eq!(claims["scope"], "read", "refresh keeps the granted scope");
    assert_eq!(ep.api(second.access_token().secret()).await.status, 200);

    let third = client.exchange_refresh_token(&rt2).request_async(&http).await.expect("rt2 is current");
    let rt3 = third.refresh_token().expect("rt3").clone();

    // Reuse of a rotated token: invalid_grant, and the family's newest token is dead too.
    let err = client.exchange_refresh_token(&rt1).request_async(&http).await.expect_err("rt1 was rotated");
    assert_eq!(server_error(&err), E::InvalidGrant);
    let r = ep.refresh("app", rt2.secret()).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let err = client.exchange_refresh_token(&rt3).request_async(&http).await.expect_err("family revoked");
    assert_eq!(server_error(&err), E::InvalidGrant);
    // An unknown token is just invalid_grant.
    let err = client
        .exchange_refresh_token(&RefreshToken::new("not-a-refresh-token".into()))
        .request_async(&http)
        .await
        .expect_err("garbage");
    assert_eq!(server_error(&err), E::InvalidGrant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_of_another_client_is_invalid_grant_and_does_not_hurt_the_owner() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
    let r = ep.refresh("app2", &rt).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = ep.refresh("app2", &rt).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    // A client without the refresh grant is told so.
    let r = ep.refresh("norefresh", &rt).await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    let r = ep.refresh("app", &rt).await;
    assert_eq!(r.status, 200, "the owner's family still works: {}", r.text());
    let r = ep.refresh("app", &rt_of(&r.json())).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_may_narrow_scope_but_not_widen_it() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let http = ep.http();
    let client = ep.oauth2_client("app", Some(SECRET));
    let rt = RefreshToken::new(rt_of(&ep.password_ok("app", "alice", ALICE_PW, Some("read write")).await));
    let narrowed = client
        .exchange_refresh_token(&rt)
        .add_scope(Scope::new("read".into()))
        .request_async(&http)
        .await
        .expect("narrowing");
    assert_eq!(claims_of(narrowed.access_token().secret())["scope"], "read");
    let rt = narrowed.refresh_token().expect("rotated").clone();
    let err = client
        .exchange_refresh_token(&rt)
        .add_scope(Scope::new("read".into()))
        .add_scope(Scope::new("openid".into()))
        .request_async(&http)
        .await
        .expect_err("openid was never granted");
    assert_eq!(server_error(&err), E::InvalidScope);
    // (A fresh grant: whether a refused request consumes its token is tested on its own below.)
    let rt = rt_of(&ep.password_ok("app", "bob", BOB_PW, Some("read")).await);
    let r = ep
        .token(
            Auth::Basic("app", SECRET),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("scope", "admin")],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_scope");
}

/// A refused request is an error answer: it must not consume the presented refresh token, or
/// the client (which never saw a new one) loses its grant on the next, legitimate refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scope_widening_does_not_consume_the_refresh_token() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, Some("read")).await);
    let r = ep
        .token(
            Auth::Basic("app", SECRET),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("scope", "read write")],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    let r = ep.refresh("app", &rt).await;
    assert_eq!(r.status, 200, "the refresh token must survive a refused request: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_die_when_idle_and_at_their_absolute_end() {
    let idle = async {
        let gw =
            start(&Opts { tokens_extra: "refresh_idle_secs = 2\nrefresh_ttl_secs = 100".into(), ..Opts::default() })
                .await;
        let ep = Ep::of(&gw);
        let rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
        let r = ep.refresh("app", &rt).await;
        assert_eq!(r.status, 200, "used within the idle time: {}", r.text());
        let rt = rt_of(&r.json());
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let r = ep.refresh("app", &rt).await;
        assert_oauth_error(&r, 400, "invalid_grant");
    };
    let absolute = async {
        let gw =
            start(&Opts { tokens_extra: "refresh_idle_secs = 100\nrefresh_ttl_secs = 3".into(), ..Opts::default() })
                .await;
        let ep = Ep::of(&gw);
        let granted = now();
        let mut rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
        // Keep it busy: refreshed well within the idle time, it still dies at created + ttl.
        let mut refreshed = 0;
        // (The first refresh comes at once: on a loaded machine the argon2 grant alone can take
        // a second, which must not leave the loop with nothing refreshed.)
        for _ in 0..2 {
            if now() >= granted + 2 {
                break;
            }
            let r = ep.refresh("app", &rt).await;
            assert_eq!(r.status, 200, "before the absolute end: {}", r.text());
            rt = rt_of(&r.json());
            refreshed += 1;
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        assert!(refreshed >= 1);
        while now() < granted + 4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = ep.refresh("app", &rt).await;
        assert_oauth_error(&r, 400, "invalid_grant");
    };
    tokio::join!(idle, absolute);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_eight_concurrent_refreshes_with_one_token_exactly_one_succeeds() {
    let gw = start_default().await;
    let ep = Ep::of(&gw);
    let rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
    // (The password grant above left app's secret in the verified record: the eight race on
    // the store, not on argon2.)
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (ep, rt, barrier) = (ep.clone(), rt.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let body = encode_form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
            let auth = basic_header("app", SECRET);
            let mut c = Conn::tls(ep.https, std::slice::from_ref(&ep.cert), false).await;
            barrier.wait().await;
            c.send(req("POST", "/oauth2/token", &[FORM_CT, ("authorization", &auth)], full(body))).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("task");
        if r.status == 200 {
            ok += 1;
        } else {
            assert_oauth_error(&r, 400, "invalid_grant");
        }
    }
    assert_eq!(ok, 1, "exactly one of eight concurrent refreshes wins");
}

/// The gateway of [`start_default`] with `[tokens] refresh_reuse_grace_secs = secs`.
async fn start_with_grace(secs: u64) -> Gw {
    let text =
        config(&Opts::default()).replace("refresh_reuse_grace_secs = 0", &format!("refresh_reuse_grace_secs = {secs}"));
    Gw::start_text(&text).await
}

/// Whether introspection calls `rt` active (a refresh token is active while it is its family's
/// current one): a way to look at a token without presenting it, which would be reuse.
async fn active(ep: &Ep, rt: &str) -> bool {
    let v = ep.form("/oauth2/introspect", Auth::Basic("app", SECRET), &[("token", rt)]).await.json();
    v["active"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_refresh_answer_is_retried_within_the_reuse_grace() {
    let gw = start_with_grace(30).await;
    let ep = Ep::of(&gw);
    let rt1 = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
    let r = ep.refresh("app", &rt1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // This answer never reaches the client.
    let lost = r.json();
    let lost_rt = rt_of(&lost);

    // The client retries with rt1: a fresh pair, and the lost one's refresh token is dead.
    let r = ep.refresh("app", &rt1).await;
    assert_eq!(r.status, 200, "a retry within the grace: {}", r.text());
    let rt2 = rt_of(&r.json());
    assert_ne!(rt2, lost_rt);
    assert_eq!(ep.api(r.json()["access_token"].as_str().unwrap()).await.status, 200);
    assert!(active(&ep, &rt2).await);
    assert!(!active(&ep, &lost_rt).await, "the pair issued before the retry is dead");
    // The lost answer's access token lives until its exp, as after any rotation (docs say so).
    assert_eq!(ep.api(lost["access_token"].as_str().unwrap()).await.status, 200);

    // A second retry: the same again, rt2 dies.
    let r = ep.refresh("app", &rt1).await;
    assert_eq!(r.status, 200, "a second retry within the grace: {}", r.text());
    let rt3 = rt_of(&r.json());
    assert!(!active(&ep, &rt2).await && active(&ep, &rt3).await);
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 2);

    // The client goes on with rt3; rt1 is then older than the token just rotated: reuse.
    let r = ep.refresh("app", &rt3).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rt4 = rt_of(&r.json());
    assert_oauth_error(&ep.refresh("app", &rt1).await, 400, "invalid_grant");
    assert!(!active(&ep, &rt4).await, "reuse of an older token revoked the family");
    assert_oauth_error(&ep.refresh("app", &rt4).await, 400, "invalid_grant");
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reuse_grace_is_for_the_same_client_within_the_window_only() {
    let gw = start_with_grace(1).await;
    let ep = Ep::of(&gw);
    // Another client presenting the just-rotated token: refused, and the owner keeps its pair.
    let rt1 = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
    let r = ep.refresh("app", &rt1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rt2 = rt_of(&r.json());
    assert_oauth_error(&ep.refresh("app2", &rt1).await, 400, "invalid_grant");
    assert!(active(&ep, &rt2).await, "another client's retry changes nothing");

    // Past the window, the retry is reuse: the family is revoked as without a grace.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_oauth_error(&ep.refresh("app", &rt1).await, 400, "invalid_grant");
    assert!(!active(&ep, &rt2).await);
    assert_oauth_error(&ep.refresh("app", &rt2).await, 400, "invalid_grant");
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_grace_eight_concurrent_refreshes_all_succeed_and_leave_one_live_token() {
    let gw = start_with_grace(30).await;
    let ep = Ep::of(&gw);
    let rt = rt_of(&ep.password_ok("app", "alice", ALICE_PW, None).await);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (ep, rt, barrier) = (ep.clone(), rt.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let body = encode_form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
            let auth = basic_header("app", SECRET);
            let mut c = Conn::tls(ep.https, std::slice::from_ref(&ep.cert), false).await;
            barrier.wait().await;
            c.send(req("POST", "/oauth2/token", &[FORM_CT, ("authorization", &auth)], full(body))).await
        }));
    }
    let mut fresh = Vec::new();
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, 200, "one rotation, seven retries within the grace: {}", r.text());
        fresh.push(rt_of(&r.json()));
    }
    let mut live = Vec::new();
    for t in &fresh {
        if active(&ep, t).await {
            live.push(t.clone());
        }
    }
    assert_eq!(live.len(), 1, "exactly one live refresh token after the race");
    assert_eq!(metric(&gw, "tokengate_refresh_reuse_grace_total").await, 7);
    let r = ep.refresh("app", &live[0]).await;
    assert_eq!(r.status, 200, "the family is not revoked: {}", r.text());
}
