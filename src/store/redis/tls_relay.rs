//! Redis over TLS with tokengate's own certificate check (`tls::verify`). redis-rs's TLS takes
//! no custom verifier, so it would refuse what curl accepts (an `openssl req -x509` certificate
//! pinned in `state.ca`) and word its refusals as Rust debug text. Instead redis-rs speaks plain
//! RESP to a Unix socket in a private folder, and each connection it opens there is carried
//! over a new TLS connection to the server, verified like every other connection tokengate
//! opens. The relay runs on the store's runtime and dies with the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsConnector;

/// The relay of one store: see the module documentation.
pub struct TlsRelay {
    /// The private folder (mode 0700) holding the socket; removed on drop.
    dir: PathBuf,
    /// Where redis-rs connects.
    socket: PathBuf,
    /// The last failure to reach the server, in words: redis-rs sees only a closed connection.
    last_error: Arc<Mutex<Option<String>>>,
    /// The accept loop, stopped on drop.
    task: tokio::task::JoinHandle<()>,
}

/// What each relayed connection needs.
struct Target {
    /// Host and port of the server, from `state.url`.
    host: String,
    port: u16,
    /// The name its certificate must show.
    name: ServerName<'static>,
    /// rustls client config with tokengate's verifier.
    tls: TlsConnector,
    /// Bound on the TCP connect and the handshake.
    timeout: Duration,
    /// Shared with [`TlsRelay::last_error`].
    last_error: Arc<Mutex<Option<String>>>,
}

impl TlsRelay {
    /// Listens on a new private socket, on `handle`'s runtime, relaying to `host:port`.
    pub fn start(
        handle: &tokio::runtime::Handle,
        host: &str,
        port: u16,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<TlsRelay, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("{host} is not a host name"))?;
        let dir = private_dir()
            .map_err(|e| format!("cannot make the TLS relay's folder: {}", crate::reason::io_reason(&e)))?;
        let socket = dir.join("redis.sock");
        let listener = {
            let _runtime = handle.enter();
            UnixListener::bind(&socket)
        }
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot open the TLS relay's socket: {}", crate::reason::io_reason(&e))
        })?;
        let last_error = Arc::new(Mutex::new(None));
        let target = Arc::new(Target {
            host: host.to_owned(),
            port,
            name,
            tls: TlsConnector::from(Arc::new(tls)),
            timeout,
            last_error: last_error.clone(),
        });
        let task = handle.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target.clone()));
            }
        });
        Ok(TlsRelay { dir, socket, last_error, task })
    }

    /// The socket redis-rs connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Why the last connection to the server failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A folder only this user can enter, under the system's temporary folder.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| std::io::Error::other("no randomness"))?;
    let name = format!("tokengate-redis-{}-{}", std::process::id(), u64::from_le_bytes(random));
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// One of redis-rs's connections, carried over TLS until either side closes.
async fn relay(mut client: UnixStream, t: Arc<Target>) {
    let mut server = match connect(&t).await {
        Ok(s) => s,
        Err(why) => {
            let mut last = t.last_error.lock().unwrap_or_else(|e| e.into_inner());
            // Said once per new reason: redis-rs reconnects in a loop while the server is away.
            if last.as_deref() != Some(why.as_str()) {
                tracing::warn!(error = %why, "state store: cannot reach redis over TLS");
            }
            *last = Some(why);
            return;
        }
    };
    *t.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn connect(t: &Target) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let dial = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("{}:{}: {}", t.host, t.port, crate::reason::io_reason(&e)))?;
        let _ = tcp.set_nodelay(true);
        t.tls.connect(t.name.clone(), tcp).await.map_err(|e| crate::tls::verify::describe(&e))
    };
    tokio::time::timeout(t.timeout, dial)
        .await
        .unwrap_or_else(|_| Err(format!("{}:{}: no TLS handshake within {} ms", t.host, t.port, t.timeout.as_millis())))
}
