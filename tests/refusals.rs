//! Answers the gateway makes itself before or instead of reading a request body (proxy refusals,
//! token-endpoint refusals): they reach widely installed clients intact over h2 (curl 7.88 itself
//! is run), HTTP/1.1 keeps working, and refusals are logged with their reason but never a secret.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use common::*;

/// Tries per case: before the fix curl 7.88 failed most, not all, of them.
const TRIES: usize = 8;

/// What one `curl` run printed and how it ended.
struct CurlRun {
    /// Exit code (0: the whole answer was received).
    code: i32,
    /// The response body.
    body: String,
    /// `%{http_code}`.
    status: u16,
    /// `%{http_version}`: "2" or "1.1".
    version: String,
    /// curl's own error text.
    stderr: String,
}

/// POSTs `file` with the system curl (`--http2` or `--http1.1`, `-k`); `headers` are `-H` lines.
async fn curl_post(addr: SocketAddr, path: &str, h2: bool, headers: &[&str], file: &Path) -> CurlRun {
    let mut cmd = Command::new("curl");
    cmd.args([if h2 { "--http2" } else { "--http1.1" }, "-k", "-sS", "--max-time", "20"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args(["-w", "\n%{http_code} %{http_version}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("https://localhost:{}{path}", addr.port()))
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", addr.port()));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run curl")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = tail.split_once(' ').unwrap_or(("0", ""));
    CurlRun {
        code: out.status.code().unwrap_or(-1),
        body: body.to_owned(),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One refused POST and the answer expected for it.
struct Case<'a> {
    /// Label for failures.
    what: &'a str,
    /// Request path.
    path: &'a str,
    /// `-H` lines.
    headers: &'a [&'a str],
    /// The body.
    file: &'a Path,
    /// Expected status.
    status: u16,
    /// Expected JSON `error`.
    error: &'a str,
}

/// Runs `case` `TRIES` times; every try must exit 0 with its status and JSON `error`.
async fn assert_curl_answers(addr: SocketAddr, h2: bool, case: Case<'_>) {
    let Case { what, path, headers, file, status, error } = case;
    let what = format!("{}: {what}", if h2 { "h2" } else { "http/1.1" });
    let mut failures = Vec::new();
    for i in 0..TRIES {
        let run = curl_post(addr, path, h2, headers, file).await;
        let json: Value = serde_json::from_str(&run.body).unwrap_or_default();
        let version_ok = if h2 { run.version == "2" } else { run.version == "1.1" };
        if run.code != 0 || run.status != status || json["error"] != error || !version_ok {
            failures.push(format!(
                "try {i}: exit {} status {} http/{} body {:?} curl: {}",
                run.code,
                run.status,
                run.version,
                run.body,
                run.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{what}: {} of {TRIES} tries failed:\n{}", failures.len(), failures.join("\n"));
}

fn body_file(dir: &Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
    let p = dir.join(name);
    write_file(&p, bytes);
    p
}

/// A JSON document of about `n` bytes.
fn json_body(n: usize) -> Vec<u8> {
    let mut s = String::from("{\"pad\":\"");
    s.push_str(&"x".repeat(n.saturating_sub(10)));
    s.push_str("\"}");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_h2_gets_every_early_refusal_intact() {
    let gw = Gw::start("", &(ECHO_ROUTES.to_owned() + &tables())).await;
    let dir = tempfile::tempdir().unwrap();
    let json20k = body_file(dir.path(), "20k.json", json_body(20 * 1024));
    let blob100k = body_file(dir.path(), "100k.bin", vec![b'a'; 100 * 1024]);
    let form20k = body_file(
        dir.path(),
        "20k.form",
        format!("grant_type=client_credentials&pad={}", "x".repeat(20 * 1024)).into_bytes(),
    );
    let json_ct = "Content-Type: application/json";
    let form_ct = "Content-Type: application/x-www-form-urlencoded";
    for h2 in [true, false] {
        let cases = [
            Case {
                what: "20 KB JSON to the token endpoint",
                path: "/oauth2/token",
                headers: &[json_ct],
                file: &json20k,
                status: 400,
                error: "invalid_request",
            },
            Case {
                what: "20 KB form to the token endpoint (over its 16 KiB limit)",
                path: "/oauth2/token",
                headers: &[form_ct],
                file: &form20k,
                status: 413,
                error: "invalid_request",
            },
            Case {
                what: "100 KB without a token to a protected route",
                path: "/api/upload",
                headers: &[],
                file: &blob100k,
                status: 401,
                error: "unauthorized",
            },
            Case {
                what: "100 KB to no route",
                path: "/nowhere",
                headers: &[],
                file: &blob100k,
                status: 404,
                error: "not_found",
            },
        ];
        for case in cases {
            assert_curl_answers(gw.https, h2, case).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_are_read_within_both_bounds_and_past_them_the_answer_goes_out_anyway() {
    let gw = Gw::start("discard_body_bytes = 65536\ndiscard_body_timeout_secs = 2", ECHO_ROUTES).await;
    let tok = gw.mint("alice", "read");
    // Within the bound: the refused body is read off the connection, which then serves the next
    // request (a body left unread would desynchronize or close it).
    let mut c = gw.tls(false).await;
    let r = c.send(req("POST", "/api/x", &[], full(vec![b'a'; 60 * 1024]))).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unauthorized");
    let r = c.send(req("GET", "/api/x", &[("authorization", &format!("Bearer {tok}"))], empty())).await;
    assert_eq!(r.status, 200, "the same connection after a refused body: {}", r.text());
    // Past the byte bound, declared or sent, the answer goes out without waiting for the rest;
    // within it, a client that stalls gets the answer when the time bound ends. The clients
    // below send part of a body and stop, then read.
    let long = Duration::from_millis(1500);
    let cases = [
        ("declared past the bound", "Content-Length: 204800\r\n", vec![b'a'; 1024], Duration::ZERO..long),
        ("sent past the bound", "Transfer-Encoding: chunked\r\n", chunk(70 * 1024), Duration::ZERO..long),
        ("stalled within the bound", "Content-Length: 10240\r\n", vec![b'a'; 1024], long..Duration::from_secs(6)),
    ];
    for (what, framing, sent, took) in cases {
        let mut s = tls_connect(gw.https, std::slice::from_ref(&gw.cert), &[b"http/1.1"]).await;
        let head = format!("POST /api/x HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&sent).await.unwrap();
        s.flush().await.unwrap();
        let t = Instant::now();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 401 "), "{what}: {head}");
        assert!(took.contains(&t.elapsed()), "{what}: answered after {:?}, expected {took:?}", t.elapsed());
    }
    // h2, declared and streamed past the bound.
    for what in ["declared", "streamed"] {
        let body = if what == "declared" { full(vec![b'a'; 200 * 1024]) } else { streamed(200 * 1024) };
        let mut c = gw.tls(true).await;
        let t = Instant::now();
        let r = c.send(req("POST", "/api/x", &[], body)).await;
        assert_eq!(r.status, 401, "h2 {what}: {}", r.text());
        assert!(t.elapsed() < long, "h2 {what}: the answer waited {:?}", t.elapsed());
    }
}

/// One HTTP/1.1 chunk of `n` bytes (no final chunk: the body goes on).
fn chunk(n: usize) -> Vec<u8> {
    let mut v = format!("{n:x}\r\n").into_bytes();
    v.extend(std::iter::repeat_n(b'a', n));
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads a response head (up to the blank line), waiting at most 10 s.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let read = async {
        let mut b = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a response head within 10 s");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A refused token request's line: target `token`, this endpoint, error and client.
fn refusal<'a>(error: &'a str, client_id: &'a str, grant_type: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| {
        v["target"] == "token"
            && v["error"] == error
            && v["client_id"] == client_id
            && v["grant_type"] == grant_type
            && v["endpoint"] == "/oauth2/token"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_upstream_failures_are_logged_with_their_reason_and_never_a_secret() {
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let text = Config::new()
        .log("format = \"json\"\nlevel = \"warn,tokengate::listener=info,token=info,access=info\"")
        .rest(&route("/down", &format!("http://{closed}"), "public = true"))
        .rest(&tables())
        .text();
    write_file(&config, text);
    let mut p = Proc::spawn(&config);
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let post = |auth: Option<String>, params: Vec<(&'static str, &'static str)>| {
        let cert = cert.clone();
        let https = p.https;
        async move {
            let mut headers = vec![("content-type", "application/x-www-form-urlencoded".to_owned())];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut c = Conn::tls(https, std::slice::from_ref(&cert), false).await;
            c.send(req("POST", "/oauth2/token", &h, full(encode_form(&params)))).await
        }
    };
    const WRONG_SECRET: &str = "Wr0ng-Client-Secret-7731";
    const WRONG_PW: &str = "Wr0ng-Password-9920";
    const FAKE_RT: &str = "Fake-Refresh-Token-5518";
    let cc = ("grant_type", "client_credentials");

    let r = post(None, vec![cc, ("client_id", "svc"), ("client_secret", WRONG_SECRET)]).await;
    assert_eq!(r.status, 400, "a secret in the body: invalid_client without a challenge: {}", r.text());
    let basic = Some(basic_header("app", SECRET));
    let r = post(basic.clone(), vec![("grant_type", "password"), ("username", "alice"), ("password", WRONG_PW)]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(basic.clone(), vec![("grant_type", "refresh_token"), ("refresh_token", FAKE_RT)]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        Some(basic_header("svc", SECRET)),
        vec![("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW)],
    )
    .await;
    assert_eq!(r.json()["error"], "unauthorized_client", "{}", r.text());
    let r = post(Some(basic_header("svc", SECRET)), vec![cc, ("scope", "admin")]).await;
    assert_eq!(r.json()["error"], "invalid_scope", "{}", r.text());
    let mut c = Conn::tls(p.https, std::slice::from_ref(&cert), false).await;
    assert_eq!(c.send(req("GET", "/down/x", &[], empty())).await.status, 502);

    let line = p.wait_line("invalid_client", refusal("invalid_client", "svc", "client_credentials"));
    assert_eq!(line["reason"], "wrong secret or client locked out", "{line}");
    let line = p.wait_line("invalid_grant (password)", refusal("invalid_grant", "app", "password"));
    assert_eq!(line["reason"], "invalid username or password", "{line}");
    let line = p.wait_line("invalid_grant (refresh)", refusal("invalid_grant", "app", "refresh_token"));
    assert!(line["reason"].as_str().is_some_and(|r| r.contains("refresh token")), "{line}");
    let line = p.wait_line("unauthorized_client", refusal("unauthorized_client", "svc", "password"));
    assert!(line["reason"].as_str().is_some_and(|r| r.contains("password grant")), "{line}");
    let line = p.wait_line("invalid_scope", refusal("invalid_scope", "svc", "client_credentials"));
    assert_eq!(line["scope"], "admin", "{line}");
    assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
    // The access line names the token endpoint's path.
    p.wait_line("the access line of a token request", |v| v["target"] == "access" && v["path"] == "/oauth2/token");

    let upstream = closed.to_string();
    let line = p.wait_line("the 502", |v| v["message"] == "upstream request failed");
    assert_eq!(line["upstream"], upstream.as_str(), "{line}");
    let os = line["os_error"].as_str().unwrap_or_else(|| panic!("no os_error: {line}"));
    assert!(os.contains("refused") && os.contains("os error"), "{line}");

    // Nothing secret anywhere in the log: not the secrets, the password or the refresh token.
    let all = p.seen.join("\n");
    for secret in [WRONG_SECRET, WRONG_PW, FAKE_RT, SECRET, ALICE_PW] {
        assert!(!all.contains(secret), "{secret:?} was logged:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_grace_retry_is_logged_at_info_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let text = Config::new()
        .reuse_grace_secs(30)
        .log("format = \"json\"\nlevel = \"warn,tokengate::listener=info,tokengate::oauth=info\"")
        .rest(&tables())
        .text();
    write_file(&config, text);
    let mut p = Proc::spawn(&config);
    let cert = read_cert(&dir.path().join("certs/gateway.crt"));
    let post = |params: Vec<(&'static str, String)>| {
        let (cert, https) = (cert.clone(), p.https);
        async move {
            let auth = basic_header("app", SECRET);
            let h = [("content-type", "application/x-www-form-urlencoded"), ("authorization", auth.as_str())];
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut c = Conn::tls(https, std::slice::from_ref(&cert), false).await;
            c.send(req("POST", "/oauth2/token", &h, full(encode_form(&params)))).await
        }
    };
    let rt_of = |r: &Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["refresh_token"].as_str().unwrap().to_owned()
    };
    let login = vec![("grant_type", "password".into()), ("username", "alice".into()), ("password", ALICE_PW.into())];
    let rt1 = rt_of(&post(login).await);
    let refresh = |rt: &str| vec![("grant_type", "refresh_token".into()), ("refresh_token", rt.to_owned())];
    let lost = rt_of(&post(refresh(&rt1)).await);
    let rt2 = rt_of(&post(refresh(&rt1)).await);

    let line = p.wait_line("the grace retry", |v| {
        v["message"].as_str().is_some_and(|m| m.contains("retried within the reuse grace"))
    });
    assert_eq!((line["level"].as_str(), line["client_id"].as_str()), (Some("INFO"), Some("app")), "{line}");
    assert!(line["family_id"].as_str().is_some_and(|f| !f.is_empty()), "{line}");
    let all = p.seen.join("\n");
    for token in [&rt1, &lost, &rt2] {
        assert!(!all.contains(token.as_str()), "a refresh token was logged:\n{all}");
    }
}
