//! Finding the primary through Redis Sentinel (`state.sentinels`, `state.sentinel_master`), as a
//! [`Dial`] for the [`Relay`](super::relay::Relay): every connection redis-rs opens asks the
//! sentinels anew, so the reconnection that follows a failover reaches the promoted replica
//! without a restart, for the store's commands and the denylist follower alike.
//!
//! The sentinels' answer is checked before it is used: a sentinel that has not yet heard of a
//! failover names the demoted node, now a replica, and writes there would fail (or worse, a
//! partitioned old primary would take them and lose them). So the named node must say `master`
//! to `ROLE`, asked with `state.url`'s credentials; otherwise the next sentinel is asked. Once a
//! sentinel has demoted a node it disconnects that node's clients (`CLIENT KILL TYPE normal`),
//! which is what moves connections already open. redis-rs's own `sentinel` feature is not used:
//! its clients connect directly, bypassing the relay, and it asks `SENTINEL MASTERS` of one
//! sentinel at a time with a client of its own for each lookup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};
use tokio::net::TcpStream;

use super::relay::{Dial, Stream};

/// Finds and dials the primary: see the module documentation.
pub struct SentinelDial {
    /// `state.sentinels`, parsed, in the order given.
    sentinels: Vec<(String, u16)>,
    /// `state.sentinel_master`.
    master: String,
    /// `state.url`'s credentials and database: the `ROLE` check logs in as the store does.
    data: ConnectionInfo,
    /// Bound on each sentinel question, the `ROLE` check and the connect.
    timeout: Duration,
    /// The sentinel that answered last, asked first next time (a dead one costs a timeout).
    first: AtomicUsize,
    /// The primary dialled last, so that a change is logged once.
    current: Mutex<Option<(String, u16)>>,
}

impl SentinelDial {
    /// `sentinels` as `host:port` (checked by the config), `data` as `state.url` reads.
    pub fn new(sentinels: &[String], master: &str, data: ConnectionInfo, timeout: Duration) -> Result<Self, String> {
        let sentinels = sentinels
            .iter()
            .map(|s| {
                crate::config::split_host_port(s).ok_or_else(|| format!("state.sentinels: {s:?} is not a host:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SentinelDial {
            sentinels,
            master: master.to_owned(),
            data,
            timeout,
            first: AtomicUsize::new(0),
            current: Mutex::new(None),
        })
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new().set_connection_timeout(Some(self.timeout)).set_response_timeout(Some(self.timeout))
    }

    /// What sentinel `i` says the primary is.
    async fn ask(&self, i: usize) -> Result<(String, u16), String> {
        let (host, port) = &self.sentinels[i];
        let at = |e: &dyn std::fmt::Display| format!("sentinel {host}:{port}: {e}");
        let info = "redis://127.0.0.1".into_connection_info().map_err(|e| at(&e))?;
        let client = Client::open(info.set_addr(ConnectionAddr::Tcp(host.clone(), *port))).map_err(|e| at(&e))?;
        let mut con = client.get_multiplexed_async_connection_with_config(&self.config()).await.map_err(|e| at(&e))?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut con)
            .await
            .map_err(|e| at(&e))?;
        addr.ok_or_else(|| at(&format!("knows no primary named {:?} (state.sentinel_master)", self.master)))
    }

    /// Whether `host:port` answers `ROLE` with `master`, logged in as the store.
    async fn is_primary(&self, host: &str, port: u16) -> Result<bool, String> {
        let at = |e: &dyn std::fmt::Display| format!("{host}:{port} (named by the sentinels): {e}");
        let client =
            Client::open(self.data.clone().set_addr(ConnectionAddr::Tcp(host.to_owned(), port))).map_err(|e| at(&e))?;
        let mut con = client.get_multiplexed_async_connection_with_config(&self.config()).await.map_err(|e| at(&e))?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut con).await.map_err(|e| at(&e))?;
        Ok(match role.first() {
            Some(Value::BulkString(b)) => b == b"master",
            Some(Value::SimpleString(s)) => s == "master",
            _ => false,
        })
    }

    /// The primary, as the first sentinel with a checked answer names it; the last reason
    /// otherwise.
    pub async fn primary(&self) -> Result<(String, u16), String> {
        let n = self.sentinels.len();
        let first = self.first.load(Ordering::Relaxed);
        let mut why = String::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let (host, port) = match self.ask(i).await {
                Ok(a) => a,
                Err(e) => {
                    why = e;
                    continue;
                }
            };
            match self.is_primary(&host, port).await {
                Ok(true) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok((host, port));
                }
                Ok(false) => why = format!("{host}:{port} (named by the sentinels) is not a primary (yet)"),
                Err(e) => why = e,
            }
        }
        Err(format!("no primary {:?} found through state.sentinels: {why}", self.master))
    }
}

#[async_trait::async_trait]
impl Dial for SentinelDial {
    async fn dial(&self) -> Result<Box<dyn Stream>, String> {
        let (host, port) = self.primary().await?;
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| format!("{host}:{port}: no connection within {} ms", self.timeout.as_millis()))?
            .map_err(|e| format!("{host}:{port}: {}", crate::reason::io_reason(&e)))?;
        let _ = tcp.set_nodelay(true);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref() != Some(&(host.clone(), port)) {
            tracing::info!(primary = %format!("{host}:{port}"), master = %self.master, "state store: primary found through the sentinels");
            *current = Some((host, port));
        }
        Ok(Box::new(tcp))
    }
}
