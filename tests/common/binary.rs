//! The real `tokengate` binary as a user runs it: JSON logs on stderr, every line kept for the
//! test to search.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The real binary with JSON logs on stderr, every line kept.
pub struct Proc {
    /// The process, killed on drop.
    pub child: Child,
    /// Its HTTPS listener.
    pub https: SocketAddr,
    /// Its admin listener.
    pub admin: SocketAddr,
    /// Every stderr line so far.
    lines: mpsc::Receiver<String>,
    /// Lines already taken off `lines`.
    pub seen: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every line appended to `path` (waiting for it to appear), like `tail -F`, until the
/// receiver is gone.
fn follow_file(path: &Path, tx: mpsc::Sender<String>) {
    let file = loop {
        match std::fs::File::open(path) {
            Ok(f) => break f,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) if line.ends_with('\n') => {
                if tx.send(line.trim_end().to_owned()).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {} // a partial line: the rest comes with the next flush
            Err(_) => return,
        }
    }
}

impl Proc {
    /// Starts `tokengate serve --config config` (its config must log JSON, with
    /// `tokengate::listener=info`) and waits for its "tokengate listening" line.
    pub fn spawn(config: &Path) -> Proc {
        Self::spawn_logging(config, None)
    }

    /// Like [`Proc::spawn`] for a config with `log.file = log`: its lines are read from that
    /// file as they are appended (the file must exist or be created by the start).
    pub fn spawn_logging(config: &Path, log: Option<&Path>) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokengate");
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        match log {
            None => drop(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            })),
            Some(path) => drop(std::thread::spawn({
                let path = path.to_owned();
                move || follow_file(&path, tx)
            })),
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("tokengate exited with {status}: {seen:#?}");
                }
                continue;
            };
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            seen.push(line);
            if v["message"] == "tokengate listening" {
                let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{k}: {v}"));
                return Proc { https: addr("https_addr"), admin: addr("admin_addr"), child, lines: rx, seen };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("no 'tokengate listening' line within 20 s: {seen:#?}");
    }

    /// The first JSON line satisfying `pred`, waiting up to 10 s for it.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.seen.iter().map(|l| serde_json::from_str(l).unwrap_or_default()).find(|v| pred(v)) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no log line for {what} within 10 s:\n{}", self.seen.join("\n")),
            }
        }
    }
}
