//! A group of three endpoint *processes* (tests/support/upstream_endpoint.py) under steady load
//! of GETs and POSTs; one is killed with SIGKILL mid-load and restarted on its port. Not one GET
//! fails (connect failures and resets are retried on another endpoint), no POST reaches the
//! endpoints twice (each process records every POST before answering it), the dead endpoint is
//! ejected and comes back.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Client tasks, each with one request in flight at a time.
const CLIENTS: usize = 6;

/// How late the endpoints answer GETs: the kill finds one in flight, written and unanswered.
const GET_DELAY_MS: u64 = 100;

/// One endpoint process; SIGKILLed when dropped.
struct Endpoint {
    child: Child,
    port: u16,
}

impl Endpoint {
    /// Starts the script on `port` (0: any), recording into `record`.
    fn start(port: u16, record: &Path) -> Endpoint {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/upstream_endpoint.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(record)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/support/upstream_endpoint.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the port line");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("endpoint printed {line:?}, not its port"));
        Endpoint { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the process dies at once, the kernel closes its sockets.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the endpoint");
        self.child.wait().expect("reap the endpoint");
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines every record file holds.
fn records(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

async fn endpoint_status(gw: &Gw, url: &str) -> Value {
    let (status, body) = gw.admin_get("/upstreams").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("/upstreams is JSON");
    let list = doc["upstreams"][0]["endpoints"].as_array().expect("endpoints").clone();
    list.into_iter().find(|e| e["endpoint"] == url).unwrap_or_else(|| panic!("{url} in {doc}"))
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// GETs answered 200, and not.
    get_ok: AtomicUsize,
    get_failed: AtomicUsize,
    /// POST ids answered 200, and the ids of POSTs that failed.
    post_ok: Mutex<Vec<String>>,
    post_failed: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_endpoint_process_fails_no_get_and_sends_no_post_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The three endpoints' records, and endpoint 1's after its restart.
    let files: Vec<PathBuf> =
        ["endpoint-0", "endpoint-1", "endpoint-2", "endpoint-1-restarted"].iter().map(|n| dir.path().join(n)).collect();
    let mut eps: Vec<Endpoint> = files[..3].iter().map(|f| Endpoint::start(0, f)).collect();
    let urls: Vec<String> = eps.iter().map(Endpoint::url).collect();
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    // Passive health (ejection after 3 failures for 2 s) and active probes every second: the
    // restarted endpoint is back once both agree.
    let health = "eject = { consecutive_failures = 3, base_secs = 2, max_secs = 10 }\n\
                  health_check = { path = \"/healthz\", interval_secs = 1, timeout_ms = 500, healthy = 1, unhealthy = 2 }";
    let group = format!("\n[[upstreams]]\nname = \"svc\"\nendpoints = [{}]\n{health}\n", list.join(", "));
    let text = Config::new().rest(&format!("{group}{}", route("/svc", "svc", "public = true"))).text();
    let gw = Arc::new(Gw::start_text(&text).await);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for client in 0..CLIENTS {
        let (gw, stop, tally) = (gw.clone(), stop.clone(), tally.clone());
        load.push(tokio::spawn(async move {
            let mut conn = gw.plain_conn().await;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let r = conn
                    .send(req("GET", &format!("/svc/get/{client}/{n}?delay_ms={GET_DELAY_MS}"), &[], empty()))
                    .await;
                if r.status == 200 {
                    tally.get_ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    eprintln!("GET failed: {} {}", r.status, r.text());
                    tally.get_failed.fetch_add(1, Ordering::SeqCst);
                }
                let id = format!("c{client}-{n}");
                let r = conn.send(req("POST", "/svc/orders", &[], full(id.clone()))).await;
                let list = if r.status == 200 { &tally.post_ok } else { &tally.post_failed };
                list.lock().unwrap().push(id);
            }
        }));
    }
    let served = |i: usize| records(&files[i..=i]).len();
    eventually(10, "load flowing to endpoint 1", || async { served(1) > 50 }).await;

    // Killed just as a GET reached it: that GET was written and gets no answer (a reset).
    let gets = |i: usize| records(&files[i..=i]).into_iter().filter(|l| l.starts_with("GET ")).collect::<Vec<_>>();
    let before = gets(1).len();
    let in_flight = loop {
        if let Some(get) = gets(1).get(before) {
            break get.clone();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let killed = Instant::now();
    eps[1].kill();
    poll_until(10, "endpoint 1 ejected", || async {
        let e = endpoint_status(&gw, &urls[1]).await;
        if e["healthy"] == false {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
    .await;
    let to_eject = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await; // load goes on without it for a moment

    // Restarted on the same port, recording into a new file.
    let port = eps[1].port;
    eps[1] = Endpoint::start(port, &files[3]);
    let restarted = Instant::now();
    eventually(10, "endpoint 1 back and serving", || async { served(3) > 0 }).await;
    let to_readmit = restarted.elapsed();
    let out_for = killed.elapsed() - to_eject;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("client task");
    }

    let (get_ok, get_failed) = (tally.get_ok.load(Ordering::SeqCst), tally.get_failed.load(Ordering::SeqCst));
    let post_ok = tally.post_ok.lock().unwrap().clone();
    let post_failed = tally.post_failed.lock().unwrap().clone();
    let mut received: HashMap<String, usize> = HashMap::new();
    for line in records(&files) {
        if let Some(id) = line.strip_prefix("POST ") {
            *received.entry(id.to_owned()).or_default() += 1;
        }
    }
    let status = endpoint_status(&gw, &urls[1]).await;
    eprintln!(
        "kill test (processes): {get_ok} GETs ok, {get_failed} failed; {} POSTs ok, {} failed; ejected {to_eject:?} \
         after the SIGKILL; serving again {to_readmit:?} after the restart, {out_for:?} after its ejection \
         (base_secs = 2); endpoint 1: {status}",
        post_ok.len(),
        post_failed.len()
    );
    assert_eq!(get_failed, 0, "a GET failed: resets and connect failures of GETs are retried");
    let retried = [0, 2].iter().any(|&i| gets(i).contains(&in_flight));
    assert!(retried, "{in_flight}, in flight at endpoint 1 when it was killed, was retried on another");
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs received more than once: {twice:?}");
    for id in &post_ok {
        assert_eq!(received.get(id), Some(&1), "POST {id} answered 200 but not on record once");
    }
    // A POST fails only when it was written to endpoint 1 before its death showed: on a
    // connection to it that was open at the kill. The pool opens a connection only when none is
    // idle, so there are at most as many as requests were ever in flight: one per client.
    assert!(post_failed.len() <= CLIENTS, "{} POSTs failed: {post_failed:?}", post_failed.len());
    assert!(status["ejections"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["health_check"], "up", "its probes pass again: {status}");
    assert!(to_eject < Duration::from_secs(2), "{to_eject:?}");
    assert!(get_ok > 50 && post_ok.len() > 50, "steady load: {get_ok} GETs, {} POSTs", post_ok.len());
}
