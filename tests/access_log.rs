//! The access log as users run it: the real binary, `log.file` beside the config, JSON lines.
//! Every request's line is on disk after a graceful stop, and a destination that stops taking
//! lines (a pipe nobody reads) never holds up a request: lines past `log.queue_lines` are
//! dropped and counted in `tokengate_log_dropped_lines_total`.

mod common;
#[path = "support/ports.rs"]
mod ports;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::Proc;
use common::client::{empty, raw, req, Conn};
use common::metrics::sample;
use common::{read_cert, Config, ECHO_ROUTES};
use ports::free_port;
use serde_json::Value;
use tokengate::commands::{mint, MintRequest};

/// A gateway folder whose config logs every request as JSON to `file` (relative to it).
fn folder(file: &str, queue_lines: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("format = \"json\"\nlevel = \"info\"\nfile = \"{file}\"\nqueue_lines = {queue_lines}");
    std::fs::write(dir.path().join("gateway.toml"), Config::new().log(&log).rest(ECHO_ROUTES).text()).unwrap();
    dir
}

fn token(config: &Path) -> String {
    mint(config, &MintRequest { sub: "alice", scope: "read", ttl: Some(600), aud: None, client_id: Some("c") }).unwrap()
}

/// `n` authorized GETs over `conns` keep-alive HTTPS connections to `addr`; panics on any non-200.
async fn requests(addr: std::net::SocketAddr, dir: &Path, tok: &str, n: usize, conns: usize) {
    let cert = read_cert(&dir.join("certs/gateway.crt"));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (cert, auth) = (cert.clone(), format!("Bearer {tok}"));
        let share = n / conns + usize::from(c < n % conns);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::tls(addr, std::slice::from_ref(&cert), false).await;
            for i in 0..share {
                let r = conn.send(req("GET", &format!("/api/{c}/{i}"), &[("authorization", &auth)], empty())).await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// SIGTERM, then the exit status within `secs`.
fn terminate(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within {secs} s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_in_the_log_file_after_a_graceful_stop() {
    let dir = folder("gateway.log", 65_536);
    let config = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    let mut p = Proc::spawn_logging(&config, Some(&log));
    let tok = token(&config);
    requests(p.https, dir.path(), &tok, 600, 4).await;
    // No waiting for the flush timer: the stop itself must write out what is buffered.
    assert!(terminate(&mut p.child, 10).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let access: Vec<&Value> = lines.iter().filter(|v| v["target"] == "access").collect();
    assert_eq!(access.len(), 600, "one access line per request");
    let a = access[0];
    assert_eq!(
        (a["method"].as_str(), a["status"].as_u64(), a["sub"].as_str()),
        (Some("GET"), Some(200), Some("alice"))
    );
    assert!(a["path"].as_str().is_some_and(|p| p.starts_with("/api/")), "{a}");
    assert!(lines.iter().any(|v| v["message"] == "stopped"), "the last line of a stop is there too");
    assert!(!text.contains(&tok) && !text.contains(tok.split('.').nth(2).unwrap()), "no token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_destination_never_holds_up_a_request() {
    let dir = folder("stalled.pipe", 64);
    let config = dir.path().join("gateway.toml");
    // Fixed ports: the log, where the addresses are announced, is the stalled pipe.
    let (https, plain, admin) = (free_port(), free_port(), free_port());
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{https}\""), 1)
        .replacen("listen_plain = \"127.0.0.1:0\"", &format!("listen_plain = \"127.0.0.1:{plain}\""), 1)
        .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""), 1);
    std::fs::write(&config, text).unwrap();
    let fifo = dir.path().join("stalled.pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success(), "mkfifo");
    // A reader that never reads: the pipe fills (64 KiB), then every write blocks.
    use std::os::unix::fs::OpenOptionsExt;
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(0o4000 /* O_NONBLOCK */).open(&fifo).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    common::poll::eventually(20, "the stalled-log gateway is ready", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok()
            && raw(admin, "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.status == 200
    })
    .await;
    let tok = token(&config);
    let started = Instant::now();
    // About 3,000 access lines: far more than the pipe and the queue of 64 hold.
    requests(([127, 0, 0, 1], https).into(), dir.path(), &tok, 3000, 8).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "3000 requests took {took:?}");
    let metrics = raw(admin, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let dropped = sample(&metrics.body_text(), "tokengate_log_dropped_lines_total");
    assert!(dropped > 1000, "dropped lines are counted: {dropped}");
    // The stop gives up on the stuck destination instead of hanging.
    let stopped = terminate(&mut child, 10);
    let _ = child.kill();
    assert!(stopped.success(), "{stopped}");
}

#[test]
fn a_log_file_in_a_missing_folder_is_one_sentence_naming_log_file() {
    let dir = folder("no-such-folder/gateway.log", 100);
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["serve", "--config", dir.path().join("gateway.toml").to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("log.file: ") && err.contains("no-such-folder/gateway.log"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}
