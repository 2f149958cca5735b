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

fn args(args: &str) -> BenchArgs {
    let argv = std::iter::once("bench").chain(args.split_whitespace());
    Cli::try_parse_from(argv).unwrap().a
}

fn plan(a: &str) -> Plan {
    args(a).plan().unwrap()
}

/// The report of a single-target run.
fn run(plan: &Plan) -> Report {
    match execute(plan).unwrap() {
        Outcome::Runs(mut r) if r.len() == 1 => r.remove(0),
        _ => panic!("one report expected"),
    }
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
    if req.uri().path() == "/slow" {
        // A target that costs 10 ms more per request than the others (what --compare must show).
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"slow\n"))));
    }
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
    serve(None)
}

/// The same server over TLS (ALPN h2 and http/1.1) with a self-signed certificate for
/// 127.0.0.1, written in `dir` as cert.pem for `--cacert`.
fn tls_server(dir: &std::path::Path) -> (tokio::runtime::Runtime, SocketAddr) {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    crate::tls::write_self_signed(&cert, &key).unwrap();
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
}

fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handle);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => builder.serve_connection(TokioIo::new(stream), svc).await,
                        Err(_) => return,
                    },
                };
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
    let r = run(&plan(&format!("--url http://{addr}/x --token-file {} -c 2 -d 1 --warmup 0.1", file.display())));
    only_200(&r);
    assert!(r.duration.as_secs_f64() >= 0.95 && r.duration.as_secs_f64() < 3.0, "{:?}", r.duration);
    let j = r.to_json();
    assert_eq!(j["requests"], r.requests);
    assert_eq!(j["status"]["200"], r.requests);

    // The server really checks: without a token every answer is 401.
    let r = run(&plan(&format!("--url http://{addr}/x --no-token -c 1 -d 0.2 --warmup 0")));
    assert!(r.requests > 0 && r.status.keys().eq([401].iter()), "{}", r.to_text());
}

#[test]
fn open_loop_run_keeps_the_schedule() {
    let (_rt, addr) = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, TOKENS[1]).unwrap();
    let args = format!("--url http://{addr}/ --token-file {} -c 2 -d 0.5 --warmup 0 --rate 200", file.display());
    let r = run(&plan(&args));
    only_200(&r);
    // 200 req/s for 0.5 s: 100 due. On a busy machine a few may still be unsent at the end.
    assert!((90..=101).contains(&(r.requests + r.unsent)), "{}", r.to_text());
    assert!(r.requests >= 50, "{}", r.to_text());
}

#[test]
fn h2_issue_and_token_endpoint_modes() {
    let (_rt, addr) = server();
    let r = run(&plan(&format!(
        "--url http://{addr}/ --h2 --token-endpoint http://{addr}/token --client-id a --client-secret b \
         -c 2 -d 0.3 --warmup 0"
    )));
    only_200(&r);
    let r = run(&plan(&format!("--issue http://{addr}/token --client-id a --client-secret b -c 1 -d 0.3 --warmup 0")));
    only_200(&r);
    assert!(r.to_text().starts_with(&format!("POST http://{addr}/token")), "{}", r.to_text());
}

#[test]
fn refresh_mode_logs_in_once_per_connection_then_rotates() {
    let (_rt, addr) = server();
    let r =
        run(&plan(&format!("--issue http://{addr}/rotate --username u --password p --refresh -c 3 -d 0.3 --warmup 0")));
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
    let r = run(&plan(&format!("--url http://{addr}/ --no-token -c 1 -d 0.1 --warmup 0")));
    assert_eq!(r.requests, 0);
    assert!(r.errors["connect"] > 0, "{}", r.to_text());
}

#[test]
fn tls_with_http1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = tls_server(dir.path());
    let ca = dir.path().join("cert.pem");
    let port = addr.port();
    for proto in ["", "--h2"] {
        let r = run(&plan(&format!(
            "--url https://127.0.0.1:{port}/ --cacert {} --token-endpoint https://127.0.0.1:{port}/token \
             --client-id a --client-secret b -c 2 -d 0.3 --warmup 0 {proto}",
            ca.display()
        )));
        only_200(&r);
        assert!(r.label.contains(if proto.is_empty() { "HTTP/1.1" } else { "h2" }), "{}", r.label);
    }
    // Without the CA the certificate is refused: the TLS path really verifies.
    let r = run(&plan(&format!("--url https://127.0.0.1:{port}/ --no-token -c 1 -d 0.1 --warmup 0")));
    assert_eq!(r.requests, 0);
    assert!(r.first_error.as_deref().is_some_and(|e| e.contains("certificate")), "{:?}", r.first_error);
}

/// A and B: the same server, B's path 10 ms slower per request.
#[test]
fn compare_reports_both_medians_and_the_ratio() {
    let (_rt_a, a) = server();
    let (_rt_b, b) = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, TOKENS[0]).unwrap();
    let p = plan(&format!(
        "--compare http://{a}/ http://{b}/slow --token-file {} --rounds 3 -c 2 -d 0.3 --warmup 0 --json",
        file.display()
    ));
    let Outcome::Compare(c) = execute(&p).unwrap() else { panic!("a comparison expected") };
    assert_eq!((c.a.len(), c.b.len()), (3, 3), "three rounds of each");
    for r in c.a.iter().chain(&c.b) {
        only_200(r);
    }
    assert!(
        c.a.iter().all(|r| r.url == format!("http://{a}/")) && c.b.iter().all(|r| r.url == format!("http://{b}/slow"))
    );
    let j = c.to_json();
    let cmp = &j["compare"];
    let (ra, rb) = (cmp["a"]["rps_median"].as_f64().unwrap(), cmp["b"]["rps_median"].as_f64().unwrap());
    // 2 connections, each waiting >= 10 ms for B: at most 200 req/s; A answers at once.
    assert!(rb > 0.0 && rb <= 200.0 && ra > 2.0 * rb, "A {ra}, B {rb}");
    let ratio = &cmp["ratio_b_over_a"];
    let (med, min, max) =
        (ratio["median"].as_f64().unwrap(), ratio["min"].as_f64().unwrap(), ratio["max"].as_f64().unwrap());
    assert!(min <= med && med <= max && max < 0.5, "{ratio}");
    assert!(cmp["b"]["latency_us"]["p50"].as_u64().unwrap() >= 10_000, "{cmp}");
    let text = c.to_text();
    assert!(text.contains("compare: 3 rounds of A then B") && text.contains("B/A 0."), "{text}");
}

/// Two --urls and --plot: the chart read back has a curve per URL, through `main` as a user runs it.
#[test]
fn plot_draws_one_curve_per_url() {
    let (_rt_a, a) = server();
    let (_rt_b, b) = server();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("lat.svg");
    let (ua, ub) = (format!("http://{a}/"), format!("http://{b}/slow"));
    main(args(&format!("--url {ua} --url {ub} --no-token -c 2 -d 0.3 --warmup 0 --json --plot {}", svg.display())))
        .unwrap();
    let chart = super::plot::tests::check(&std::fs::read_to_string(&svg).unwrap(), &[&ua, &ub]);
    assert!(chart.titles[1].contains("2 connections") && chart.titles[1].contains("closed loop"), "{:?}", chart.titles);
    // B's curve starts above A's (10 ms more for every answer): a higher pixel row, a smaller y.
    assert!(chart.curves[1].1[0].1 < chart.curves[0].1[0].1, "{:?}", chart.curves);

    // Several targets in one --compare chart: A and B.
    let svg2 = dir.path().join("cmp.svg");
    main(args(&format!(
        "--compare {ua} {ub} --rounds 1 --no-token -c 1 -d 0.2 --warmup 0 --plot {} --plot-scale linear",
        svg2.display()
    )))
    .unwrap();
    super::plot::tests::check(&std::fs::read_to_string(&svg2).unwrap(), &[&format!("A {ua}"), &format!("B {ub}")]);
}
