//! A real gRPC stack for the tests: grpcio from PyPI (pinned in `tests/support/grpc/
//! requirements.txt`, installed by `.ci/run` into `tests/support/grpc/.venv`). `server.py` is a
//! gRPC service on a free loopback port, killed when dropped; `client.py` makes one call and
//! reports what grpcio saw. A missing venv fails the test with what to run: never a skip.
//!
//! Blocking on purpose (std processes): async tests call it through `spawn_blocking`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc")
}

/// The venv's Python, with grpcio importable.
fn python() -> PathBuf {
    let python = dir().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: the gRPC tests need grpcio from PyPI in tests/support/grpc/.venv; run \
         `bash .ci/run` (or `python3 -m venv tests/support/grpc/.venv && \
         tests/support/grpc/.venv/bin/pip install -r tests/support/grpc/requirements.txt`)",
        python.display()
    );
    python
}

/// `server.py`: the gRPC service `test.Echo` (methods `Unary` and `Stream`), speaking h2c.
pub struct GrpcServer {
    /// The Python process; killed on drop.
    child: Child,
    /// The loopback port it serves.
    pub port: u16,
}

impl GrpcServer {
    /// In plaintext: h2c.
    pub fn start() -> GrpcServer {
        GrpcServer::spawn(&[])
    }

    /// Over TLS with the certificate and key in these PEM files (h2 by ALPN, as gRPC requires).
    #[allow(dead_code)]
    pub fn start_tls(cert: &Path, key: &Path) -> GrpcServer {
        GrpcServer::spawn(&[cert, key])
    }

    fn spawn(args: &[&Path]) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(dir().join("server.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start server.py: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read server.py's port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("server.py printed {line:?}, not its port"));
        GrpcServer { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call by `client.py` (`spec`: `target`, `ca`, `method`, `stream`, `request`, `token`,
/// `timeout`); what grpcio reported: `code` (a status name), `details`, `responses`,
/// `initial_metadata`, `trailing_metadata`.
pub fn call(spec: &Value) -> Value {
    let out = Command::new(python())
        .arg(dir().join("client.py"))
        .arg(spec.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot start client.py: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client.py: not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}
