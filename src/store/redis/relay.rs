//! A local relay redis-rs connects to instead of the server: it listens on a Unix socket in a
//! private folder, and carries each connection redis-rs opens there to wherever a [`Dial`]
//! decides at that moment. That is how tokengate puts its own steps between redis-rs and the
//! server without redis-rs knowing: its own TLS and certificate check ([`super::tls_relay`]),
//! and a primary found anew through the sentinels on every connection ([`super::sentinel`]), so
//! that the reconnection redis-rs makes after a failover reaches the new primary. The relay runs
//! on the store's runtime and dies with the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};

/// A connection to the server, as a dialer made it (plain TCP, or TLS over it).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where each relayed connection goes: asked once per connection redis-rs opens.
#[async_trait::async_trait]
pub trait Dial: Send + Sync + 'static {
    /// A new connection to the server; Err says why in words (redis-rs sees only a closed
    /// connection, so the store reports this instead).
    async fn dial(&self) -> Result<Box<dyn Stream>, String>;
}

/// The relay of one store: see the module documentation.
pub struct Relay {
    /// The private folder (mode 0700) holding the socket; removed on drop.
    dir: PathBuf,
    /// Where redis-rs connects.
    socket: PathBuf,
    /// The last failure to reach the server, in words: redis-rs sees only a closed connection.
    last_error: Arc<Mutex<Option<String>>>,
    /// The accept loop, stopped on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a new private socket, on `handle`'s runtime, relaying through `dial`.
    pub fn start(handle: &tokio::runtime::Handle, dial: Arc<dyn Dial>) -> Result<Relay, String> {
        let dir =
            private_dir().map_err(|e| format!("cannot make the relay's folder: {}", crate::reason::io_reason(&e)))?;
        let socket = dir.join("redis.sock");
        let listener = {
            let _runtime = handle.enter();
            UnixListener::bind(&socket)
        }
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot open the relay's socket: {}", crate::reason::io_reason(&e))
        })?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let task = handle.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, dial.clone(), errors.clone()));
            }
        });
        Ok(Relay { dir, socket, last_error, task })
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

impl Drop for Relay {
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

/// One of redis-rs's connections, carried until either side closes.
async fn relay(mut client: UnixStream, dial: Arc<dyn Dial>, last_error: Arc<Mutex<Option<String>>>) {
    let mut server = match dial.dial().await {
        Ok(s) => s,
        Err(why) => {
            let mut last = last_error.lock().unwrap_or_else(|e| e.into_inner());
            // Said once per new reason: redis-rs reconnects in a loop while the server is away.
            if last.as_deref() != Some(why.as_str()) {
                tracing::warn!(error = %why, "state store: cannot reach redis");
            }
            *last = Some(why);
            return;
        }
    };
    *last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
