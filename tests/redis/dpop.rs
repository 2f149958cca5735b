//! DPoP proofs across instances (RFC 9449 11.1): a proof accepted by one instance is a replay at
//! every other, through one `SET NX EX` on the shared Redis; with Redis down each instance falls
//! back to its own memory, as docs/sender-constrained.md says (Replay memory).

use serde_json::Value;

use super::*;
use crate::dpop_client::{proofs, spec};

/// One request with `proof` as its only DPoP header.
fn with_proof(
    method: &str,
    path: &str,
    auth: Option<String>,
    proof: &str,
    body: Option<&str>,
) -> http::Request<ReqBody> {
    let mut headers = vec![("dpop", proof.to_owned())];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    if body.is_some() {
        headers.push(("content-type", "application/x-www-form-urlencoded".into()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    req(method, path, &headers, body.map_or_else(empty, |b| full(b.to_owned())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_used_at_one_instance_is_a_replay_at_the_other() {
    let mut redis = RedisServer::start(true);
    let keys = tempfile::tempdir().unwrap();
    let gws = fleet(&redis, keys.path(), 2, 10).await;
    let (a, b) = (&gws[0], &gws[1]);
    let htu = "https://localhost/oauth2/token";
    let key = proofs("ES256", None, &[spec("POST", htu, None)]);

    // The token endpoint: a proof used at A is refused at B.
    let token_req =
        |proof: &str| with_proof("POST", "/oauth2/token", Some(basic()), proof, Some("grant_type=client_credentials"));
    let r = a.conn().await.send(token_req(&key.proofs[0])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = field(&r, "access_token");
    let r = b.conn().await.send(token_req(&key.proofs[0])).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].clone()), (400, Value::from("invalid_dpop_proof")));

    // The proxy, both ways round.
    let api = |t: &str| spec("GET", "https://localhost/api/x", Some(t));
    let p = proofs("ES256", Some(&key.private_jwk), &[api(&token), api(&token)]).proofs;
    let call = |g: &Inst, proof: String| {
        let (auth, https, cert) = (format!("DPoP {token}"), g.https, g.cert.clone());
        async move {
            let mut conn = Conn::tls(https, std::slice::from_ref(&cert), false).await;
            conn.send(with_proof("GET", "/api/x", Some(auth), &proof, None)).await
        }
    };
    assert_eq!(call(a, p[0].clone()).await.status, 200);
    let r = call(b, p[0].clone()).await;
    assert_eq!(r.status, 401, "replayed at B: {}", r.text());
    assert!(r.text().contains("already used"), "{}", r.text());
    assert_eq!(call(b, p[1].clone()).await.status, 200);
    assert_eq!(call(a, p[1].clone()).await.status, 401, "replayed at A");
    let m = b.metrics().await;
    assert!(sample(&m, r#"tokengate_store_duration_seconds_count{op="remember_proof"}"#) >= 2, "{m}");

    // Redis down: each instance still refuses its own replays, within the store's bound.
    redis.kill9();
    let p = proofs("ES256", Some(&key.private_jwk), &[api(&token)]).proofs;
    let t = Instant::now();
    assert_eq!(call(a, p[0].clone()).await.status, 200, "Redis down: local memory only");
    assert!(t.elapsed() < Duration::from_millis(3000), "answered after {:?}", t.elapsed());
    assert_eq!(call(a, p[0].clone()).await.status, 401, "a replay to the same instance");
    redis.restart();
}

/// A token-endpoint request with `body` of the public client `pub` at `g`, with one DPoP proof.
async fn public_grant(g: &Inst, body: &str, proof: &str) -> Resp {
    let body = format!("{body}&client_id=pub");
    g.conn().await.send(with_proof("POST", "/oauth2/token", None, proof, Some(&body))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_familys_grace_retry_at_the_other_instance_needs_the_same_key() {
    let redis = RedisServer::start(false);
    let keys = tempfile::tempdir().unwrap();
    let public = "\n[[clients]]\nid = \"pub\"\npublic = true\ngrants = [\"password\", \"refresh_token\"]\n\
                  scopes = [\"read\"]\ndefault_scopes = [\"read\"]\n";
    let text = config_plus(&redis.url(), keys.path(), 10, public)
        .replace("refresh_reuse_grace_secs = 0", "refresh_reuse_grace_secs = 30");
    let (a, b) = (instance(&text).await.expect("starts"), instance(&text).await.expect("starts"));
    let htu = "https://localhost/oauth2/token";
    let key = proofs("ES256", None, &vec![spec("POST", htu, None); 7]);
    let other = proofs("ES256", None, &[spec("POST", htu, None)]);

    // Rotated at A, the answer lost, retried at B with the same key: a fresh pair bound to it,
    // which then rotates at A.
    let rt1 = field(&public_grant(&a, PASSWORD, &key.proofs[0]).await, "refresh_token");
    field(&public_grant(&a, &refresh_body(&rt1), &key.proofs[1]).await, "refresh_token");
    let r = public_grant(&b, &refresh_body(&rt1), &key.proofs[2]).await;
    let rt2 = field(&r, "refresh_token");
    assert_eq!(r.json()["token_type"], "DPoP");
    field(&public_grant(&a, &refresh_body(&rt2), &key.proofs[3]).await, "refresh_token");

    // Retried at B with another key: reuse, and the family is revoked at A too.
    let rt1 = field(&public_grant(&a, PASSWORD, &key.proofs[4]).await, "refresh_token");
    let kept = field(&public_grant(&a, &refresh_body(&rt1), &key.proofs[5]).await, "refresh_token");
    let r = public_grant(&b, &refresh_body(&rt1), &other.proofs[0]).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].clone()), (400, Value::from("invalid_grant")), "{}", r.text());
    let r = public_grant(&a, &refresh_body(&kept), &key.proofs[6]).await;
    assert_eq!(r.status, 400, "another key's retry revoked the family: {}", r.text());
    let graced: u64 =
        [a.metrics().await, b.metrics().await].iter().map(|m| sample(m, "tokengate_refresh_reuse_grace_total")).sum();
    assert_eq!(graced, 1);
}
