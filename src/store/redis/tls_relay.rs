//! Redis over TLS with tokengate's own certificate check (`tls::verify`). redis-rs's TLS takes
//! no custom verifier, so it would refuse what curl accepts (an `openssl req -x509` certificate
//! pinned in `state.ca`) and word its refusals as Rust debug text. Instead redis-rs speaks plain
//! RESP to the [`Relay`](super::relay::Relay), and each connection it opens there is carried
//! over a new TLS connection to the server, verified like every other connection tokengate
//! opens.

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::relay::{Dial, Stream};

/// What each relayed connection needs.
pub struct TlsDial {
    /// Host and port of the server, from `state.url`.
    host: String,
    /// The server's port, from `state.url`.
    port: u16,
    /// The name its certificate must show.
    name: ServerName<'static>,
    /// rustls client config with tokengate's verifier.
    tls: TlsConnector,
    /// Bound on the TCP connect and the handshake.
    timeout: Duration,
}

impl TlsDial {
    /// TLS to `host:port`, verified by `tls`.
    pub fn new(host: &str, port: u16, tls: rustls::ClientConfig, timeout: Duration) -> Result<TlsDial, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("{host} is not a host name"))?;
        let tls = TlsConnector::from(std::sync::Arc::new(tls));
        Ok(TlsDial { host: host.to_owned(), port, name, tls, timeout })
    }
}

#[async_trait::async_trait]
impl Dial for TlsDial {
    async fn dial(&self) -> Result<Box<dyn Stream>, String> {
        let dial = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("{}:{}: {}", self.host, self.port, crate::reason::io_reason(&e)))?;
            let _ = tcp.set_nodelay(true);
            self.tls.connect(self.name.clone(), tcp).await.map_err(|e| crate::tls::verify::describe(&e))
        };
        match tokio::time::timeout(self.timeout, dial).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(format!("{}:{}: no TLS handshake within {} ms", self.host, self.port, self.timeout.as_millis()))
            }
        }
    }
}
