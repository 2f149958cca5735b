//! A real `redis-server` (Debian's package) on a free loopback port, in its own temporary folder,
//! killed when dropped. Shared by the store's unit tests and the over-the-wire tests (included by
//! `#[path]`). A missing `redis-server` fails the test with a message saying how to get it: the
//! Redis tests never pass by skipping.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "ports.rs"]
mod ports;
pub use ports::free_port;
#[path = "test_ca.rs"]
mod test_ca;
use test_ca::TestCa;

/// One server process; `kill9` and `restart` keep its port and folder (and so its AOF).
pub struct RedisServer {
    /// The running process; None between `kill9` and `restart`.
    child: Option<Child>,
    /// Loopback port it listens on.
    pub port: u16,
    /// Its working folder (AOF files); removed on drop.
    pub dir: tempfile::TempDir,
    /// Whether it persists every write to an append-only file.
    aof: bool,
    /// With TLS: the TLS port (the plain `port` stays open for the harness's own commands).
    pub tls_port: Option<u16>,
    /// More command-line options (e.g. `--replicaof`), given on every start.
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server; `aof` turns on `appendonly yes` (with `appendfsync everysec`, Debian's
    /// default), RDB snapshots are always off.
    pub fn start(aof: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        let mut s = RedisServer { child: None, port: free_port(), dir, aof, tls_port: None, args: Vec::new() };
        s.start_here();
        s
    }

    /// A server (no AOF) with more command-line options, e.g. `["--replicaof", "127.0.0.1 6379"]`.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut s = RedisServer { child: None, port: free_port(), dir, aof: false, tls_port: None, args };
        s.start_here();
        s
    }

    /// A Sentinel (`redis-server <conf> --sentinel`, which Debian's redis-server package runs
    /// without the redis-sentinel package) whose config file starts as `conf`; it rewrites that
    /// file as it learns.
    pub fn start_sentinel(conf: &str) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-sentinel");
        let file = dir.path().join("sentinel.conf");
        std::fs::write(&file, conf).expect("write sentinel.conf");
        let args = vec![path_str(&file).to_owned(), "--sentinel".to_owned()];
        let mut s = RedisServer { child: None, port: free_port(), dir, aof: false, tls_port: None, args };
        s.start_here();
        s
    }

    /// Spawns on `port`, or on another free port when that one was taken meanwhile.
    fn start_here(&mut self) {
        let s = self;
        // Another process may take the port between free_port and the bind: then another port.
        for _ in 0..5 {
            match s.spawn() {
                Ok(()) => return,
                Err(e) => eprintln!("{e}; trying another port"),
            }
            s.port = free_port();
        }
        s.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// A server that also listens with TLS on another port, with a certificate for `localhost`
    /// signed by its own CA (`ca.pem` in its folder; see [`RedisServer::ca_pem`]).
    pub fn start_tls() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        write_tls_files(dir.path());
        Self::spawn_tls(dir)
    }

    /// A server presenting `cert_pem` (with its key) on its TLS port, as made elsewhere (by the
    /// `openssl` command line, say); `ca_pem()` then holds that certificate itself.
    pub fn start_tls_with(cert_pem: &str, key_pem: &str) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        for (file, pem) in [("ca.pem", cert_pem), ("redis.crt", cert_pem), ("redis.key", key_pem)] {
            std::fs::write(dir.path().join(file), pem).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        Self::spawn_tls(dir)
    }

    fn spawn_tls(dir: tempfile::TempDir) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            aof: false,
            tls_port: Some(free_port()),
            args: Vec::new(),
        };
        s.spawn().unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// The CA that signed the TLS certificate.
    pub fn ca_pem(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `rediss://localhost:<tls_port>/0`.
    pub fn rediss_url(&self) -> String {
        format!("rediss://localhost:{}/0", self.tls_port.expect("started with start_tls"))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill redis-server");
            c.wait().expect("reap redis-server");
        }
    }

    /// Starts it again on the same port and folder (loading its AOF when `aof`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGSTOP / SIGCONT: a server that holds its connections but answers nothing.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if paused { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([sig, &pid]).status().expect("kill(1)").success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Sends one command (inline protocol) and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        command(self.addr(), line).expect("redis-server answers")
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Starts the process and waits for PING; Err when it exited at start (e.g. port taken).
    fn spawn(&mut self) -> Result<(), String> {
        let aof = if self.aof { "yes" } else { "no" };
        let dir = path_str(self.dir.path());
        let tls: Vec<String> = match self.tls_port {
            Some(p) => [
                ("--tls-port", p.to_string()),
                ("--tls-cert-file", format!("{dir}/redis.crt")),
                ("--tls-key-file", format!("{dir}/redis.key")),
                ("--tls-ca-cert-file", format!("{dir}/ca.pem")),
                ("--tls-auth-clients", "no".into()),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect(),
            None => Vec::new(),
        };
        // A config file (a sentinel's) must come first.
        let (first, more) = match self.args.first() {
            Some(a) if a.ends_with(".conf") => self.args.split_at(2),
            _ => self.args.split_at(0),
        };
        let child = Command::new("redis-server")
            .args(first)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", aof])
            .args(&tls)
            .args(more)
            .args(["--dir", path_str(self.dir.path()), "--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found on PATH: the Redis backend's tests need Debian's redis-server \
                 (`apt-get install redis-server`; `bash .ci/run` installs it)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("redis-server on port {} exited at start: {status}", self.port));
            }
            // Ours, not another test's server that got the port first.
            let pid = self.child.as_ref().map_or(0, Child::id);
            if command(self.addr(), "INFO server").is_ok_and(|r| r.contains(&format!("process_id:{pid}\r\n"))) {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer INFO within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A CA (`ca.pem`) and a `localhost` certificate it signs (`redis.crt`, `redis.key`) in `dir`.
fn write_tls_files(dir: &Path) {
    let ca = TestCa::new("tokengate test Redis CA");
    let (cert, key) = ca.server_cert(&["localhost"]);
    for (file, pem) in [("ca.pem", &ca.pem), ("redis.crt", &cert), ("redis.key", &key)] {
        std::fs::write(dir.join(file), pem).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// One inline command to the server on `port` of 127.0.0.1, on a fresh connection; the first
/// reply chunk.
pub fn command_at(port: u16, line: &str) -> std::io::Result<String> {
    command(([127, 0, 0, 1], port).into(), line)
}

/// One inline command on a fresh connection; the first reply chunk.
fn command(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
