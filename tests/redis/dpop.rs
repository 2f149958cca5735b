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
