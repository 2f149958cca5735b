//! In-process runs against a tiny hyper server on 127.0.0.1:0 that insists on the bearer token.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: BenchArgs,
}

fn plan(args: &str) -> Plan {
    let argv = std::iter::once("bench").chain(args.split_whitespace());
    Cli::try_parse_from(argv).unwrap().a.plan().unwrap()
}

const TOKENS: [&str; 2] = ["tok.en.one", "tok.en.two"];

/// Refresh tokens issued and not yet used, and how many password logins came in: `/rotate`
/// answers like a rotating token endpoint, refusing a spent token as the real one does.
static ROTATION: std::sync::Mutex<(Vec<String>, u64, u64)> = std::sync::Mutex::new((Vec::new(), 0, 0));

fn rotate(form: &[u8]) -> (u16, String) {
    let pairs: std::collections::HashMap<String, String> = form_urlencoded::parse(form).into_owned().collect();
    let mut r = ROTATION.lock().unwrap();
    let (live, logins, serial) = &mut *r;
    match pairs.get("grant_type").map(String::as_str) {
        Some("password") => *logins += 1,
        Some("refresh_token") => match live.iter().position(|t| Some(t) == pairs.get("refresh_token")) {
            Some(i) => {
                live.swap_remove(i);
            }
            None => return (400, r#"{"error":"invalid_grant"}"#.into()),
        },
        _ => return (400, r#"{"error":"unsupported_grant_type"}"#.into()),
    }
    *serial += 1;
    live.push(format!("r{serial}"));
    (200, format!(r#"{{"access_token":"a.b.c","refresh_token":"r{serial}"}}"#))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/rotate" {
        use http_body_util::BodyExt;
        let form = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let (status, body) = rotate(&form);
        return Ok(Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap());
    }
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let (status, body) = if req.uri().path() == "/token" {
        let form = req.headers().get("content-type").is_some_and(|v| v == "application/x-www-form-urlencoded");
        if req.method() == "POST" && form && auth.starts_with("Basic ") {
            (200, r#"{"access_token":"tok.en.one","token_type":"Bearer"}"#)
        } else {
            (400, r#"{"error":"invalid_request"}"#)
        }
    } else if TOKENS.iter().any(|t| auth.strip_prefix("Bearer ") == Some(t)) {
        (200, "ok\n")
    } else {
        (401, "no\n")
    };
    Ok(Response::builder().status(status).body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap())
}

/// Starts the server (HTTP/1.1 and h2 prior knowledge) on its own runtime.
fn server() -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handle);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    (rt, addr)
}

fn only_200(r: &Report) {
    assert!(r.requests > 0, "{}", r.to_text());
    assert_eq!(r.status.keys().copied().collect::<Vec<_>>(), [200], "{}", r.to_text());
    assert!(r.errors.values().all(|n| *n == 0), "{}", r.to_text());
}

#[test]
fn closed_loop_run_against_a_token_checking_server() {
    let (_rt, addr) = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.txt");
    std::fs::write(&file, TOKENS.join("\n")).unwrap();
    let r = execute(&plan(&format!("--url http://{addr}/x --token-file {} -c 2 -d 1 --warmup 0.1", file.display())))
        .unwrap();
    only_200(&r);
    assert!(r.duration.as_secs_f64() >= 0.95 && r.duration.as_secs_f64() < 3.0, "{:?}", r.duration);
    let j = r.to_json();
    assert_eq!(j["requests"], r.requests);
    assert_eq!(j["status"]["200"], r.requests);

    // The server really checks: without a token every answer is 401.
    let r = execute(&plan(&format!("--url http://{addr}/x --no-token -c 1 -d 0.2 --warmup 0"))).unwrap();
    assert!(r.requests > 0 && r.status.keys().eq([401].iter()), "{}", r.to_text());
}

#[test]
fn open_loop_run_keeps_the_schedule() {
    let (_rt, addr) = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, TOKENS[1]).unwrap();
    let args = format!("--url http://{addr}/ --token-file {} -c 2 -d 0.5 --warmup 0 --rate 200", file.display());
    let r = execute(&plan(&args)).unwrap();
    only_200(&r);
    // 200 req/s for 0.5 s: 100 due. On a busy machine a few may still be unsent at the end.
    assert!((90..=101).contains(&(r.requests + r.unsent)), "{}", r.to_text());
    assert!(r.requests >= 50, "{}", r.to_text());
}

#[test]
fn h2_issue_and_token_endpoint_modes() {
    let (_rt, addr) = server();
    let r = execute(&plan(&format!(
        "--url http://{addr}/ --h2 --token-endpoint http://{addr}/token --client-id a --client-secret b \
         -c 2 -d 0.3 --warmup 0"
    )))
    .unwrap();
    only_200(&r);
    let r =
        execute(&plan(&format!("--issue http://{addr}/token --client-id a --client-secret b -c 1 -d 0.3 --warmup 0")))
            .unwrap();
    only_200(&r);
    assert!(r.to_text().starts_with(&format!("POST http://{addr}/token")), "{}", r.to_text());
}

#[test]
fn refresh_mode_logs_in_once_per_connection_then_rotates() {
    let (_rt, addr) = server();
    let r = execute(&plan(&format!(
        "--issue http://{addr}/rotate --username u --password p --refresh -c 3 -d 0.3 --warmup 0"
    )))
    .unwrap();
    // Every counted request was a refresh with the token of the answer before it: a spent token
    // would have been answered 400.
    only_200(&r);
    let (_, logins, serial) = *ROTATION.lock().unwrap();
    assert_eq!(logins, 3, "one uncounted login per connection");
    assert!(serial >= r.requests + 3, "{serial} answers, {} counted", r.requests);
    assert!(r.to_text().contains("3 refresh chains"), "{}", r.to_text());
}

#[test]
fn dead_target_counts_connect_errors() {
    // Bind then drop a listener: the port is very likely closed for the next instant.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = execute(&plan(&format!("--url http://{addr}/ --no-token -c 1 -d 0.1 --warmup 0"))).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors["connect"] > 0, "{}", r.to_text());
}
