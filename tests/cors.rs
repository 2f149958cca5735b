//! CORS at the gateway (issue 23), over the wire: preflights answered by the gateway itself (no
//! token, never forwarded) for what the policy allows and refused without CORS headers otherwise;
//! the policy's headers on every other answer (the upstream's, whose own `Access-Control-*` are
//! replaced, and the gateway's own 401, 403, 404, 405, 429, 502); credentials and `*`; a route's
//! policy replacing the server's; a preflight finding its route by the method it asks for; a
//! route naming OPTIONS forwarding preflights; bad settings stopping the start. Stock curl over
//! HTTP/1.1 and HTTP/2 for the wire, and a real browser (Debian's chromium, headless) fetching
//! through the gateway from another origin: what the checks above are for.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use common::*;

/// The page's origin in the curl tests.
const APP: &str = "https://app.example.com";
/// An origin no policy lists.
const EVIL: &str = "https://evil.example";

/// What curl received.
#[derive(Debug)]
struct Answer {
    /// The status code.
    status: u16,
    /// Every header line, name lowercased, in order.
    headers: Vec<(String, String)>,
    /// The body, as text.
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// The `Vary` tokens, lowercased, from every `Vary` line.
    fn vary(&self) -> Vec<String> {
        let lines = self.headers.iter().filter(|(n, _)| n == "vary");
        lines.flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase())).collect()
    }
    /// The `Access-Control-*` headers, as `name: value`.
    fn cors(&self) -> Vec<String> {
        let lines = self.headers.iter().filter(|(n, _)| n.starts_with("access-control-"));
        lines.map(|(n, v)| format!("{n}: {v}")).collect()
    }
}

/// One request with stock curl to the HTTPS listener (`-k`: the gateway's own self-signed
/// certificate), over HTTP/2 or HTTP/1.1; `headers` as (name, value).
async fn curl(gw: &Gw, h2: bool, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "-i", "--max-time", "20", if h2 { "--http2" } else { "--http1.1" }, "-X", method]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("https://127.0.0.1:{}{path}", gw.https.port()));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run curl")).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl {method} {path}: no answer: {text} {}", String::from_utf8_lossy(&out.stderr)));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let want = if h2 { "HTTP/2 " } else { "HTTP/1.1 " };
    assert!(status_line.starts_with(want), "curl spoke {status_line:?}, not {want}");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: body.to_owned() }
}

/// A preflight's headers: `Origin`, the method asked for, and the request headers asked for.
fn preflight_headers<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("origin", origin), ("access-control-request-method", method)];
    if !headers.is_empty() {
        h.push(("access-control-request-headers", headers));
    }
    h
}

/// An upstream that does CORS itself (badly: `*` with credentials) and counts what reaches it.
struct CorsUpstream {
    /// Where it listens.
    addr: SocketAddr,
    /// Requests that reached it: a preflight the gateway answers must not.
    hits: Arc<AtomicUsize>,
}

impl CorsUpstream {
    async fn start() -> CorsUpstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let addr = serve(move |req| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(Full::new(Bytes::from(format!("upstream saw {}", req.method()))));
            if req.method() == Method::OPTIONS {
                *resp.status_mut() = StatusCode::NO_CONTENT;
            }
            let h = resp.headers_mut();
            h.insert("access-control-allow-origin", "*".parse().unwrap());
            h.insert("access-control-allow-credentials", "true".parse().unwrap());
            h.insert("access-control-allow-methods", "PUT".parse().unwrap());
            h.insert("x-request-id", "r-1".parse().unwrap());
            resp
        })
        .await;
        CorsUpstream { addr, hits }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A small HTTP/1.1 server on a free loopback port answering with `handle`, for as long as the
/// test runs.
async fn serve<F>(handle: F) -> SocketAddr
where
    F: Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(listener, handle)
}

fn serve_on<F>(listener: TcpListener, handle: F) -> SocketAddr
where
    F: Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let addr = listener.local_addr().expect("addr");
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = r.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handle(Request::from_parts(parts, body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}

/// `cors = { ... }` for APP: DELETE and X-Custom beyond the defaults, a max age, WWW-Authenticate
/// and X-Request-Id readable.
const API_CORS: &str = concat!(
    r#"cors = { origins = ["https://app.example.com"], methods = ["GET", "POST", "DELETE"], "#,
    r#"headers = ["Authorization", "X-Custom"], expose_headers = ["X-Request-Id", "WWW-Authenticate"], "#,
    r#"max_age_secs = 600 }"#
);

/// Routes: `/api` (own policy) to the CORS-doing upstream; the rest inherit `[server] cors`
/// (APP, WWW-Authenticate exposed), but `/elsewhere`'s own policy lists another origin and the
/// `/passthrough` route naming OPTIONS leaves CORS to its upstream.
async fn gateway(up: &CorsUpstream) -> Gw {
    let down = closed_port().await;
    let routes = [
        route("/api", &up.url(), API_CORS),
        route("/admin", "echo", "scopes = [\"admin\"]"),
        route("/limited", "echo", "public = true\nrate_limit = { key = \"ip\", per_second = 0.01, burst = 1 }"),
        route("/down", &format!("http://{down}"), "public = true"),
        route("/orders", "echo", "public = true\nmethods = [\"GET\"]"),
        route("/elsewhere", "echo", "cors = { origins = [\"https://other.example\"] }"),
        route("/passthrough", &up.url(), "public = true\nmethods = [\"OPTIONS\"]"),
        route("/passthrough", &up.url(), "methods = [\"GET\"]"),
    ]
    .concat();
    let server = "cors = { origins = [\"https://app.example.com\"], expose_headers = [\"WWW-Authenticate\"] }";
    Gw::start_config(&Config::new().server(server).rest(&routes)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_from_an_allowed_origin_is_answered_without_a_token_and_never_forwarded() {
    let up = CorsUpstream::start().await;
    let gw = gateway(&up).await;
    for h2 in [false, true] {
        let a = curl(&gw, h2, "OPTIONS", "/api/x", &preflight_headers(APP, "DELETE", "authorization,x-custom")).await;
        assert_eq!(a.status, 204, "h2={h2}: {a:?}");
        assert_eq!(a.header("access-control-allow-origin"), Some(APP));
        assert_eq!(a.header("access-control-allow-methods"), Some("GET, POST, DELETE"));
        assert_eq!(a.header("access-control-allow-headers"), Some("authorization, x-custom"));
        assert_eq!(a.header("access-control-max-age"), Some("600"));
        assert_eq!(a.header("access-control-allow-credentials"), None, "credentials are off");
        assert_eq!(a.vary(), ["origin", "access-control-request-method", "access-control-request-headers"]);
        assert!(a.body.is_empty(), "{a:?}");
        // A route inheriting the server's policy: its defaults (GET, HEAD, POST; Authorization).
        let a = curl(&gw, h2, "OPTIONS", "/admin", &preflight_headers(APP, "GET", "authorization")).await;
        assert_eq!((a.status, a.header("access-control-allow-methods")), (204, Some("GET, HEAD, POST")), "{a:?}");
        assert_eq!(a.header("access-control-allow-headers"), Some("authorization"));
    }
    assert_eq!(up.hits(), 0, "a preflight the gateway answers never reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_from_another_origin_or_for_more_than_allowed_is_refused_without_cors_headers() {
    let up = CorsUpstream::start().await;
    let gw = gateway(&up).await;
    for h2 in [false, true] {
        for (path, origin, method, headers, why) in [
            ("/api/x", EVIL, "GET", "authorization", "this origin may not call this route"),
            ("/api/x", "https://app.example.com.evil.example", "GET", "", "this origin may not call"),
            ("/api/x", "http://app.example.com", "GET", "", "this origin may not call"),
            ("/api/x", APP, "PUT", "authorization", "does not allow this method"),
            ("/api/x", APP, "GET", "authorization,x-other", "does not allow the request header \\\"x-other\\\""),
            // The route's own policy replaces the server's, which lists APP.
            ("/elsewhere", APP, "GET", "", "this origin may not call"),
        ] {
            let a = curl(&gw, h2, "OPTIONS", path, &preflight_headers(origin, method, headers)).await;
            assert_eq!(a.status, 403, "h2={h2} {origin} {method} {headers}: {a:?}");
            assert!(a.cors().is_empty(), "a refused preflight carries no CORS header: {:?}", a.cors());
            assert!(a.body.contains("cors_refused") && a.body.contains(why), "{}", a.body);
        }
    }
    assert_eq!(up.hits(), 0, "refused preflights are not forwarded either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_an_allowed_origin_carries_the_policy_the_upstreams_and_the_gateways_own() {
    let up = CorsUpstream::start().await;
    let gw = gateway(&up).await;
    let token = gw.mint("alice", "read");
    let bearer = format!("Bearer {token}");
    for h2 in [false, true] {
        // The upstream's answer: its own `*` and credentials replaced by the route's policy.
        let a = curl(&gw, h2, "GET", "/api/x", &[("origin", APP), ("authorization", &bearer)]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "upstream saw GET"));
        assert_eq!(
            a.cors(),
            [
                format!("access-control-allow-origin: {APP}"),
                "access-control-expose-headers: x-request-id, www-authenticate".into()
            ],
        );
        assert_eq!(a.header("x-request-id"), Some("r-1"));
        assert!(a.vary().contains(&"origin".into()), "{:?}", a.headers);
        // The gateway's own refusals, so that a script reads them instead of a network error.
        let _ = curl(&gw, h2, "GET", "/limited", &[]).await;
        for (method, path, auth, status) in [
            ("GET", "/api/x", None, 401),
            ("GET", "/admin", Some(bearer.as_str()), 403),
            ("GET", "/nowhere", None, 404),
            ("POST", "/orders", None, 405),
            ("GET", "/limited", None, 429),
            ("GET", "/down", None, 502),
        ] {
            let mut headers = vec![("origin", APP)];
            headers.extend(auth.map(|a| ("authorization", a)));
            let a = curl(&gw, h2, method, path, &headers).await;
            assert_eq!(a.status, status, "h2={h2} {method} {path}: {a:?}");
            assert_eq!(a.header("access-control-allow-origin"), Some(APP), "{status}: {a:?}");
            assert!(a.vary().contains(&"origin".into()), "{status}: {a:?}");
            let exposed = a.header("access-control-expose-headers").unwrap_or_default();
            assert!(exposed.contains("www-authenticate"), "{status}: {a:?}");
            if status == 401 {
                assert!(a.header("www-authenticate").is_some_and(|w| w.starts_with("Bearer")), "{a:?}");
            }
        }
        // Another origin reads nothing, not even what the upstream itself would have allowed.
        for (path, auth) in [("/api/x", Some(bearer.as_str())), ("/api/x", None), ("/nowhere", None)] {
            let mut headers = vec![("origin", EVIL)];
            headers.extend(auth.map(|a| ("authorization", a)));
            let a = curl(&gw, h2, "GET", path, &headers).await;
            assert!(a.cors().is_empty(), "{path}: {:?}", a.cors());
            assert!(a.vary().contains(&"origin".into()), "a cache must not hand this to APP: {a:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echo_the_origin_and_a_wildcard_answers_star() {
    let routes = [
        route("/cred", "echo", "cors = { origins = [\"https://app.example.com\"], credentials = true }"),
        route("/any", "echo", "public = true\ncors = { origins = [\"*\"] }"),
    ]
    .concat();
    let gw = Gw::start_config(&Config::new().rest(&routes)).await;
    let token = gw.mint("alice", "read");
    let a = curl(&gw, true, "OPTIONS", "/cred", &preflight_headers(APP, "POST", "authorization")).await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(a.header("access-control-allow-origin"), Some(APP), "never * with credentials");
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    for auth in [Some(format!("Bearer {token}")), None] {
        let mut headers = vec![("origin", APP)];
        headers.extend(auth.as_deref().map(|a| ("authorization", a)));
        let a = curl(&gw, false, "GET", "/cred", &headers).await;
        assert_eq!(a.header("access-control-allow-origin"), Some(APP), "{a:?}");
        assert_eq!(a.header("access-control-allow-credentials"), Some("true"), "{a:?}");
    }
    let a = curl(&gw, false, "OPTIONS", "/any", &preflight_headers(EVIL, "GET", "authorization")).await;
    assert_eq!((a.status, a.header("access-control-allow-origin")), (204, Some("*")), "{a:?}");
    let a = curl(&gw, false, "GET", "/any", &[("origin", EVIL)]).await;
    assert_eq!((a.status, a.header("access-control-allow-origin")), (200, Some("*")), "{a:?}");
    assert_eq!(a.header("access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_finds_its_route_by_the_method_it_asks_for_and_options_routes_forward_it() {
    let up = CorsUpstream::start().await;
    let gw = gateway(&up).await;
    // `/orders` serves GET only: a plain OPTIONS is a 405, a preflight asking for GET is answered.
    let a = curl(&gw, false, "OPTIONS", "/orders", &[("origin", APP)]).await;
    assert_eq!((a.status, a.header("allow")), (405, Some("GET")), "{a:?}");
    let a = curl(&gw, false, "OPTIONS", "/orders", &preflight_headers(APP, "GET", "")).await;
    assert_eq!((a.status, a.header("access-control-allow-origin")), (204, Some(APP)), "{a:?}");
    // Asking for a method no route of the prefix serves: the 405 the real request would get.
    let a = curl(&gw, false, "OPTIONS", "/orders", &preflight_headers(APP, "DELETE", "")).await;
    assert_eq!(a.status, 405, "{a:?}");
    // A route naming OPTIONS: its upstream answers its own preflights, untouched by the gateway.
    let a = curl(&gw, true, "OPTIONS", "/passthrough", &preflight_headers(EVIL, "PUT", "x-anything")).await;
    assert_eq!((a.status, a.body.as_str()), (204, ""), "{a:?}");
    assert_eq!(up.hits(), 1, "the preflight reached the upstream");
    assert_eq!(a.header("access-control-allow-origin"), Some("*"), "the upstream's own answer: {a:?}");
    assert_eq!(a.header("access-control-allow-methods"), Some("PUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cors_settings_stop_the_start_naming_the_route_and_key() {
    let policy = |p: &str| format!("cors = {{ {p} }}");
    for (server, routes, says) in [
        (
            String::new(),
            route("/api", "echo", &policy("origins = [\"https://app.example.com/\"]")),
            "route \"/api\": cors.origins: \"https://app.example.com/\" has a path: an origin is scheme://host[:port], \
             with no path (not even a trailing /)",
        ),
        (
            String::new(),
            route("/api", "echo", &policy("origins = [\"*\"], credentials = true")),
            "route \"/api\": cors.origins: \"*\" cannot go with credentials = true",
        ),
        (
            policy("origins = [\"app.example.com\"]"),
            String::new(),
            "server.cors.origins: \"app.example.com\" is not scheme://host[:port]",
        ),
        (
            String::new(),
            route("/api", "echo", &format!("methods = [\"OPTIONS\"]\n{}", policy("origins = [\"https://a.example\"]"))),
            "route \"/api\": cors: a route whose methods name OPTIONS forwards preflights to its upstream",
        ),
        (
            String::new(),
            route("/api", "echo", &policy("origins = [\"https://a.example\"], expose_headers = [\"bad header\"]")),
            "route \"/api\": cors.expose_headers: \"bad header\" is not a header name",
        ),
        (String::new(), route("/api", "echo", &policy("origin = [\"https://a.example\"]")), "unknown field `origin`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, Config::new().server(&server).rest(&routes).text()).unwrap();
        let e = tokengate::server::start(config).await.err().expect("refused").to_string();
        assert!(e.contains(says), "{e}\nwanted: {says}");
    }
}

// ---------------------------------------------------------------------------------------------
// A real browser.

/// The chromium binary: `$CHROMIUM`, else Debian's `chromium` (or `chromium-browser`) on PATH.
/// None found fails the test, saying how to get it: a browser test that skips proves nothing.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium not found on PATH: the browser CORS test needs a real browser (`apt-get install chromium`; \
         `bash .ci/run` installs it; or set CHROMIUM to a Chrome/Chromium binary)"
    )
}

/// Headless chromium on `url` with a fresh profile; killed on drop. Its output goes to `log`.
struct Browser {
    /// The browser process (Debian's wrapper `exec`s chromium when given a profile).
    child: Child,
    /// A fresh profile, so no cache or earlier preflight answer is reused; removed after the kill.
    _profile: tempfile::TempDir,
    /// Its stdout and stderr, shown when the page never reports back.
    log: PathBuf,
}

impl Browser {
    fn open(url: &str, log: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let out = std::fs::File::create(log).expect("browser log");
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromium: {e}"));
        Browser { child, _profile: profile, log: log.to_owned() }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page: three fetches through the gateway (another origin: another port), the result POSTed
/// back to the page's own server as JSON.
fn page(gateway: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><title>cors</title><script>
const gw = {gateway:?};
async function call(path, headers) {{
  try {{
    const r = await fetch(gw + path, {{ headers }});
    return {{ status: r.status, body: await r.text(), challenge: r.headers.get('WWW-Authenticate') }};
  }} catch (e) {{
    return {{ error: String(e) }};
  }}
}}
(async () => {{
  const out = {{
    token: await call('/api/x', {{ Authorization: 'Bearer ' + {token:?}, 'X-Custom': '1' }}),
    noToken: await call('/api/x', {{ 'X-Custom': '1' }}),
    closed: await call('/closed/x', {{ Authorization: 'Bearer ' + {token:?} }}),
  }};
  await fetch('/result', {{ method: 'POST', body: JSON.stringify(out) }});
}})();
</script>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_calls_through_the_gateway_from_another_origin() {
    let browser_bin = chromium();
    // The page's server first: its origin goes into the gateway's policy.
    let page_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://127.0.0.1:{}", page_listener.local_addr().unwrap().port());
    let routes = [
        route(
            "/api",
            "echo",
            &format!(
                "cors = {{ origins = [{origin:?}], headers = [\"authorization\", \"x-custom\"], expose_headers = \
                 [\"www-authenticate\"] }}"
            ),
        ),
        route("/closed", "echo", "cors = { origins = [\"https://elsewhere.example\"] }"),
    ]
    .concat();
    let gw = Gw::start_config(&Config::new().rest(&routes)).await;
    let token = gw.mint("alice", "read");
    // The plain listener: both origins http://, no certificate to trust.
    let html = page(&format!("http://127.0.0.1:{}", gw.plain.port()), &token);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    serve_on(page_listener, move |req| match (req.method().as_str(), req.uri().path()) {
        ("GET", "/") => {
            let mut r = Response::new(Full::new(Bytes::from(html.clone())));
            r.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            r
        }
        ("POST", "/result") => {
            let _ = tx.send(req.into_body());
            Response::new(Full::new(Bytes::new()))
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    });
    let log = gw.path("chromium.log");
    let browser = Browser::open(&format!("{origin}/"), &log);
    let got = tokio::time::timeout(Duration::from_secs(90), rx.recv()).await;
    let Ok(Some(body)) = got else {
        panic!("{} never reported back; its output:\n{}", browser_bin.display(), browser.output())
    };
    drop(browser);
    let out: Value = serde_json::from_slice(&body).expect("the page's JSON");

    // With a token: the preflight (Authorization and X-Custom are not safelisted) answered by
    // the gateway, then the real request forwarded with both headers, its answer readable.
    let with = &out["token"];
    assert_eq!(with["status"], 200, "the browser's fetch with a token: {out:#}");
    let echoed: Value = serde_json::from_str(with["body"].as_str().unwrap()).expect("echo's JSON");
    let seen = &echoed["headers"];
    assert_eq!(seen["x-custom"], "1", "the upstream got X-Custom: {echoed:#}");
    assert_eq!(seen["x-auth-subject"], "alice", "and the token was verified (echo redacts it): {echoed:#}");
    // Without one: the gateway's 401, readable by the script, its challenge exposed.
    let without = &out["noToken"];
    assert_eq!(without["status"], 401, "the script reads the 401 itself: {out:#}");
    assert!(without["challenge"].as_str().is_some_and(|c| c.starts_with("Bearer")), "{out:#}");
    // From an origin the route's policy does not list: the browser refuses (a network error).
    let closed = &out["closed"];
    assert!(closed["error"].as_str().is_some_and(|e| e.contains("TypeError")), "{out:#}");
}
