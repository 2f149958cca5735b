//! The remote key set against a small JWKS server on 127.0.0.1:0 (plain http is allowed to
//! loopback): single flight, the refetch rate limit, last-good keys, staleness, generations.

use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use super::*;
use crate::auth::keys::{generate_pem, SigningKey};
use crate::config::RsaAlg;

/// What the test server answers, changeable while it runs.
struct Served {
    /// JWKS body; None answers 503.
    body: Mutex<Option<String>>,
    /// GETs of the JWKS.
    hits: AtomicUsize,
    /// Delay before each answer (to make fetches overlap).
    delay: Mutex<Duration>,
    /// `Cache-Control` sent, if any.
    cache_control: Mutex<Option<String>>,
}

async fn serve(served: Arc<Served>) -> Uri {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let served = served.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let served = served.clone();
                    async move {
                        served.hits.fetch_add(1, Ordering::SeqCst);
                        let delay = *served.delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        let body = served.body.lock().unwrap().clone();
                        let mut resp = match body {
                            Some(b) => Response::new(Full::new(Bytes::from(b))),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                r
                            }
                        };
                        if let Some(cc) = served.cache_control.lock().unwrap().clone() {
                            resp.headers_mut().insert("cache-control", cc.parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}/jwks").parse().unwrap()
}

fn key(kid: &str) -> SigningKey {
    SigningKey::from_pem(kid, generate_pem(Alg::ES256).unwrap().as_bytes(), RsaAlg::RS256).unwrap()
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>() }).to_string()
}

fn spec(uri: Uri, refetch_min: u64, max_stale: u64) -> RemoteSpec {
    RemoteSpec {
        issuer: "https://idp.test".into(),
        source: KeySource::Uri(uri),
        ca: None,
        ca_pem: None,
        algorithms: vec![Alg::ES256],
        refresh: Some(3600),
        refetch_min: Duration::from_secs(refetch_min),
        max_stale: Duration::from_secs(max_stale),
        timeout: Duration::from_secs(2),
        unknown_kid_wait: Duration::from_millis(1500),
        start_timeout: Duration::from_secs(5),
    }
}

fn setup(body: String) -> Arc<Served> {
    Arc::new(Served {
        body: Mutex::new(Some(body)),
        hits: AtomicUsize::new(0),
        delay: Mutex::new(Duration::ZERO),
        cache_control: Mutex::new(None),
    })
}

async fn started(served: &Arc<Served>, refetch_min: u64, max_stale: u64) -> (Arc<RemoteKeys>, JwksMetrics) {
    let uri = serve(served.clone()).await;
    let remote = RemoteKeys::new(spec(uri, refetch_min, max_stale)).unwrap();
    let metrics = JwksMetrics::default();
    remote.start(&metrics);
    tokio::time::timeout(Duration::from_secs(5), remote.wait_for_keys()).await.expect("first fetch");
    (remote, metrics)
}

#[tokio::test]
async fn forged_kids_within_the_interval_cost_no_fetch() {
    let k1 = key("k1");
    let served = setup(jwks(&[&k1]));
    let (remote, _) = started(&served, 60, 86_400).await;
    assert_eq!(remote.keys.load().kids(), ["k1"]);
    assert_eq!(served.hits.load(Ordering::SeqCst), 1);
    // The first fetch was just now: 200 unknown-kid requests are refused at once, none fetches.
    let t = Instant::now();
    let refetched = futures_all((0..200).map(|_| {
        let r = remote.clone();
        async move { r.refetch_unknown_kid().await }
    }))
    .await;
    assert!(refetched.iter().all(|r| !r), "rate-limited");
    assert!(t.elapsed() < Duration::from_millis(500), "nobody waited: {:?}", t.elapsed());
    assert_eq!(served.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let (k1, k2) = (key("k1"), key("k2"));
    let served = setup(jwks(&[&k1]));
    let (remote, _) = started(&served, 0, 86_400).await;
    let epoch_before = remote.current().1;
    // The provider rotates; its answers are slow enough for every request to join one fetch.
    *served.body.lock().unwrap() = Some(jwks(&[&k2, &k1]));
    *served.delay.lock().unwrap() = Duration::from_millis(300);
    let refetched = futures_all((0..50).map(|_| {
        let r = remote.clone();
        async move { r.refetch_unknown_kid().await }
    }))
    .await;
    assert!(refetched.iter().all(|r| *r), "every waiter saw the fetch complete");
    assert_eq!(served.hits.load(Ordering::SeqCst), 2, "one fetch for 50 unknown kids (single flight)");
    assert_eq!(remote.keys.load().kids(), ["k1", "k2"]);
    assert!(!epoch_before.is_current(), "a changed set invalidates cached validations");
}

#[tokio::test]
async fn a_failing_provider_keeps_the_last_good_keys_until_max_stale() {
    let k1 = key("k1");
    let served = setup(jwks(&[&k1]));
    let (remote, metrics) = started(&served, 0, 86_400).await;
    let epoch = remote.current().1;
    *served.body.lock().unwrap() = None;
    assert!(remote.refetch_unknown_kid().await);
    assert_eq!(remote.keys.load().kids(), ["k1"], "kept");
    assert!(epoch.is_current(), "a failure changes nothing cached");
    let status = remote.status_json();
    assert!(status["last_error"].as_str().unwrap().contains("HTTP status 503"), "{status}");
    assert_eq!(status["consecutive_failures"], 1);
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"tokengate_jwks_fetches_total{issuer="https://idp.test",result="error"} 1"#), "{text}");
    assert!(text.contains(r#"tokengate_jwks_fetches_total{issuer="https://idp.test",result="ok"} 1"#), "{text}");
    assert!(text.contains(r#"tokengate_jwks_keys{issuer="https://idp.test"} 1"#), "{text}");
    assert!(
        text.contains(r#"tokengate_jwks_refetches_total{issuer="https://idp.test",outcome="triggered"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn keys_older_than_max_stale_are_dropped() {
    let k1 = key("k1");
    let served = setup(jwks(&[&k1]));
    let (remote, _) = started(&served, 0, 0).await;
    *served.body.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(remote.refetch_unknown_kid().await);
    assert!(remote.keys.load().is_empty(), "stale keys no longer verify anything");
    // The provider comes back: the next fetch restores them.
    *served.body.lock().unwrap() = Some(jwks(&[&k1]));
    assert!(remote.refetch_unknown_kid().await);
    assert_eq!(remote.keys.load().kids(), ["k1"]);
}

#[tokio::test]
async fn a_set_with_no_usable_key_is_a_failure_not_an_empty_set() {
    let k1 = key("k1");
    let served = setup(jwks(&[&k1]));
    let (remote, _) = started(&served, 0, 86_400).await;
    let rsa_only = SigningKey::from_pem("r", generate_pem(Alg::RS256).unwrap().as_bytes(), RsaAlg::RS256).unwrap();
    *served.body.lock().unwrap() = Some(jwks(&[&rsa_only]));
    assert!(remote.refetch_unknown_kid().await);
    assert_eq!(remote.keys.load().kids(), ["k1"], "an ES256-only issuer keeps its last good keys");
    assert!(remote.status_json()["last_error"].as_str().unwrap().contains("no usable signing key"));
}

#[tokio::test]
async fn cache_control_sets_the_next_fetch_unless_configured() {
    let k1 = key("k1");
    let served = setup(jwks(&[&k1]));
    *served.cache_control.lock().unwrap() = Some("public, max-age=7200".into());
    let uri = serve(served.clone()).await;
    let mut s = spec(uri, 0, 86_400);
    s.refresh = None;
    let remote = RemoteKeys::new(s).unwrap();
    remote.start(&JwksMetrics::default());
    tokio::time::timeout(Duration::from_secs(5), remote.wait_for_keys()).await.unwrap();
    let st = remote.status_json();
    let wait = st["next_fetch"].as_u64().unwrap() - st["last_fetch"].as_u64().unwrap();
    assert!((7199..=7201).contains(&wait), "{st}");
}

#[tokio::test]
async fn a_dropped_set_ends_its_task() {
    let served = setup(jwks(&[&key("k1")]));
    let (remote, _) = started(&served, 0, 86_400).await;
    let weak = Arc::downgrade(&remote);
    drop(remote);
    assert!(weak.upgrade().is_none());
    // The task woke, found nothing to refresh and ended: no more fetches.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served.hits.load(Ordering::SeqCst), 1);
}

/// Runs futures concurrently on this runtime and collects their outputs in order.
async fn futures_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
