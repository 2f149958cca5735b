//! Listeners: bind HTTPS, optional plain HTTP and admin; accept under the connection limits; TLS
//! handshake with a deadline; hand each connection to [`crate::listener::conn`]; drain on shutdown.

pub mod conn;
pub mod h2io;
mod handshake;
pub mod limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::RuntimeKind;
use crate::error::{BuildError, StartError};
use crate::gateway::{ClientCert, ConnInfo, Gateway};
use crate::listener::limits::ConnLimiter;
use crate::metrics::{Limit, Metrics};
use crate::proxy;
use crate::snapshot::{BuildMode, Snapshot};
use conn::{Builders, ConnError};

/// A running gateway: its bound addresses and the handle that stops it.
pub struct Running {
    /// Actual HTTPS address (resolved when the config said port 0).
    pub https_addr: SocketAddr,
    /// Actual plain HTTP address, when enabled.
    pub plain_addr: Option<SocketAddr>,
    /// Actual admin address.
    pub admin_addr: SocketAddr,
    /// Shared state, for tests and the reloader.
    pub gateway: Arc<Gateway>,
    /// Flipped to true to begin a graceful shutdown.
    shutdown: watch::Sender<bool>,
    /// Accept loops and the reloader; all end after shutdown.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The other per-core runtimes' threads (`server.runtime = "per-core"`); end after shutdown.
    cores: Vec<std::thread::JoinHandle<()>>,
    /// Stops the admin listener (after the drain) and its task.
    admin: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Loads the config at `config_path`, binds every listener and starts serving.
pub async fn start(config_path: PathBuf) -> Result<Running, StartError> {
    start_with_store(config_path, None).await
}

/// Like [`start`], with a given state store instead of the one `state.path` names: for another
/// backend, or a test that injects store failures.
pub async fn start_with_store(
    config_path: PathBuf,
    store: Option<Arc<dyn crate::store::Store>>,
) -> Result<Running, StartError> {
    let snapshot = Snapshot::build(&config_path, BuildMode::Start)?;
    let server_cfg = snapshot.config.server.clone();
    let admin_listen = snapshot.config.admin.listen;
    let current = Arc::new(ArcSwap::from_pointee(snapshot));
    let metrics = Arc::new(Metrics::new());
    metrics.declare_rejection_reasons(crate::proxy::rejection_reasons());
    metrics.declare_routes(current.load().config.routes.iter().map(|r| r.prefix.as_str()));
    let admin_state = Arc::new(AdminState::new(metrics.clone()));
    admin_state.reload_succeeded(Vec::new());
    let store = match store {
        Some(s) => s,
        None => open_store(&current.load().config)?,
    };
    let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::Observed::new(store, metrics.clone()));
    let _ = admin_state.store.set(store.clone());
    let _ = admin_state.scrape.set(Box::new({
        let current = current.clone();
        move |m: &Metrics| {
            let snap = current.load();
            crate::snapshot::observe_quotas(&snap, m);
            crate::snapshot::observe_upstreams(&snap, m);
        }
    }));
    let hash_permits =
        Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get() * 2)));
    let ip_limits = crate::oauth::ratelimit::IpLimiter::new(100_000);
    let telemetry = {
        let config = &current.load().config;
        let ca = config.tracing.ca.as_ref().map(|p| config.resolve(p));
        crate::telemetry::Telemetry::new(&config.tracing, ca.as_deref(), metrics.trace.clone())?
    };
    let gateway = Arc::new(Gateway {
        current: current.clone(),
        metrics,
        admin: admin_state.clone(),
        store,
        hash_permits,
        ip_limits,
        dpop_replay: crate::auth::dpop::replay::ReplayMemory::new(),
        telemetry,
        key_news: Default::default(),
    });

    // Per-core: every extra runtime binds the same addresses with SO_REUSEPORT, and the kernel
    // spreads new connections over them.
    let cores = match server_cfg.runtime {
        RuntimeKind::PerCore => server_cfg.worker_count(),
        RuntimeKind::WorkStealing => 1,
    };
    let reuse = cores > 1;
    let https_socket = bind_socket(server_cfg.listen, reuse)?;
    let https = listen(https_socket, server_cfg.listen)?;
    let plain = match server_cfg.listen_plain {
        Some(a) => Some(listen(bind_socket(a, reuse)?, a)?),
        None => None,
    };
    let admin_listener = bind(admin_listen).await?;
    let https_addr = https.local_addr().map_err(|source| StartError::Bind { addr: server_cfg.listen, source })?;
    let plain_addr = plain.as_ref().and_then(|l| l.local_addr().ok());
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind { addr: admin_listen, source })?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let acceptor = TlsAcceptor::from(Arc::new(handshake::server_config(current.clone())?));
    let limiter = ConnLimiter::new(server_cfg.max_connections, server_cfg.max_connections_per_ip);
    let mut cores_running = Vec::new();
    for i in 1..cores {
        let sockets = (bind_socket(https_addr, true)?, plain_addr.map(|a| bind_socket(a, true)).transpose()?);
        let (acceptor, gw, limiter, stop) = (acceptor.clone(), gateway.clone(), limiter.clone(), shutdown_rx.clone());
        let core = std::thread::Builder::new()
            .name(format!("tokengate-core-{i}"))
            .spawn(move || run_core(sockets, acceptor, gw, limiter, stop))
            .map_err(|source| StartError::Bind { addr: https_addr, source })?;
        cores_running.push(core);
    }
    let mut tasks =
        vec![tokio::spawn(accept_loop(https, Some(acceptor), gateway.clone(), limiter.clone(), shutdown_rx.clone()))];
    if let Some(plain) = plain {
        tasks.push(tokio::spawn(accept_loop(plain, None, gateway.clone(), limiter, shutdown_rx.clone())));
    }
    // The admin listener outlives the drain: a probe during it gets `/readyz` 503, not a refused
    // connection. It stops once the connections have drained.
    let (admin_stop, mut admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state.clone(), current.clone(), async move {
        crate::signals::stopped(&mut admin_rx).await;
    }));
    let remotes: Vec<_> = current.load().trust.remotes().cloned().collect();
    remotes.iter().for_each(|r| r.start(&gateway.metrics.jwks));
    current.load().groups.iter().for_each(crate::proxy::upstream::group::Group::start);
    let gw = &gateway;
    crate::key_news::start(&gw.store, &gw.current, &gw.key_news, &gw.metrics.jwks, shutdown_rx.clone());
    tasks.push(tokio::spawn(crate::snapshot::reload::run(config_path, gateway.clone(), shutdown_rx.clone())));
    if remotes.is_empty() {
        admin_state.set_ready(true);
    } else {
        tokio::spawn(ready_after_first_fetch(remotes, admin_state.clone(), shutdown_rx));
    }
    tracing::info!(%https_addr, plain = ?plain_addr, %admin_addr, "tokengate listening");
    Ok(Running {
        https_addr,
        plain_addr,
        admin_addr,
        gateway,
        shutdown,
        tasks,
        cores: cores_running,
        admin: (admin_stop, admin_task),
    })
}

/// Marks the process ready once every remote issuer has its keys, or its
/// `jwks_start_timeout_secs` passed (then ready without it, with an error in the log: its tokens
/// are refused until a fetch succeeds, and `tokengate_jwks_keys` shows 0).
async fn ready_after_first_fetch(
    remotes: Vec<Arc<crate::auth::remote::RemoteKeys>>,
    admin: Arc<AdminState>,
    stop: watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now();
    for r in remotes {
        let deadline = start + r.spec.start_timeout;
        if tokio::time::timeout_at(deadline, r.wait_for_keys()).await.is_err() {
            tracing::error!(
                issuer = %r.spec.issuer,
                timeout_secs = r.spec.start_timeout.as_secs(),
                "jwks: no keys fetched within jwks_start_timeout_secs; ready without this issuer, whose tokens are refused until a fetch succeeds"
            );
        }
    }
    if !*stop.borrow() {
        admin.set_ready(true);
    }
}

/// A TCP socket bound to `addr` (not yet listening), with `SO_REUSEPORT` when `reuse`.
fn bind_socket(addr: SocketAddr, reuse: bool) -> Result<tokio::net::TcpSocket, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    #[cfg(unix)]
    if reuse {
        socket.set_reuseport(true).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = reuse;
    socket.bind(addr).map_err(err)?;
    Ok(socket)
}

/// Pending connections the kernel queues per listener before accept.
const BACKLOG: u32 = 1024;

/// Starts listening, on the runtime this is called on.
fn listen(socket: tokio::net::TcpSocket, addr: SocketAddr) -> Result<TcpListener, StartError> {
    socket.listen(BACKLOG).map_err(|source| StartError::Bind { addr, source })
}

/// One extra per-core runtime: its own current-thread runtime accepting on its own listeners
/// (HTTPS and plain) until shutdown, sharing the gateway state with every other core.
fn run_core(
    (https, plain): (tokio::net::TcpSocket, Option<tokio::net::TcpSocket>),
    acceptor: TlsAcceptor,
    gw: Arc<Gateway>,
    limiter: Arc<ConnLimiter>,
    stop: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "a per-core runtime failed to start"),
    };
    rt.block_on(async move {
        let (Ok(https), plain) = (https.listen(BACKLOG), plain.map(|p| p.listen(BACKLOG))) else {
            return tracing::error!("a per-core listener failed to start");
        };
        let https = accept_loop(https, Some(acceptor), gw.clone(), limiter.clone(), stop.clone());
        match plain {
            Some(Ok(plain)) => {
                tokio::join!(https, accept_loop(plain, None, gw, limiter, stop));
            }
            _ => https.await,
        }
    });
}

/// Opens the durable state store `[state]` names (redb file, `:memory:`, or Redis).
fn open_store(config: &crate::config::Config) -> Result<Arc<dyn crate::store::Store>, StartError> {
    Ok(crate::store::open(config).map_err(|e| BuildError::Invalid(format!("state: {e}")))?)
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to `server.shutdown_grace_secs`), returns.
    pub async fn shutdown(self) {
        self.gateway.admin.set_ready(false);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let cores = self.cores;
        let _ = tokio::task::spawn_blocking(move || cores.into_iter().for_each(|c| drop(c.join()))).await;
        // Spans of the drained requests go out before the process ends (bounded by the export
        // timeout); blocking, so off this runtime's threads.
        let gw = self.gateway.clone();
        let _ = tokio::task::spawn_blocking(move || gw.telemetry.shutdown()).await;
        let (stop, task) = self.admin;
        let _ = stop.send(true);
        let _ = task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gw: Arc<Gateway>,
    limiter: Arc<ConnLimiter>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builders = Arc::new(Builders::new(&gw.current.load().config.server));
    // Tracks the connection tasks, so that shutdown can wait for them to drain.
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::signals::stopped(&mut shutdown) => break,
        };
        // Per-connection limits and timeouts come from the snapshot current at accept, so a reload
        // applies them to the next connection.
        let snap = gw.current.load();
        let cfg = &snap.config.server;
        limiter.set_limits(cfg.max_connections, cfg.max_connections_per_ip);
        if !builders.made_from(cfg) {
            builders = Arc::new(Builders::new(cfg));
        }
        let guard = match limiter.admit(peer.ip()) {
            Ok(g) => g,
            Err(limit) => {
                // Closing at once is the cheapest answer; the metric and a debug line say why.
                gw.metrics.record_limit(limit);
                tracing::debug!(%peer, limit = limit.as_str(), "connection refused by limit");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut info = ConnInfo::new(peer, tls.is_some(), gw.metrics.clone());
        let watch = info.watch.clone();
        let gw2 = gw.clone();
        // Boxed: hyper keeps the service future inline in every connection, idle or not, and the
        // request path's future is large; boxed, an idle connection costs a pointer instead.
        let service = move |info: ConnInfo| move |req| Box::pin(proxy::handle(gw2.clone(), info.clone(), req));
        let builders = builders.clone();
        let (handshake, head_timeout) =
            (Duration::from_secs(cfg.tls_handshake_timeout_secs), Duration::from_secs(cfg.header_read_timeout_secs));
        drop(snap);
        let metrics = gw.metrics.clone();
        let stop = shutdown.clone();
        // Two task types: a plain connection's task does not carry room for a TLS session.
        match tls.clone() {
            Some(acceptor) => conns.spawn(async move {
                let _guard = guard;
                let Some(stream) = Box::pin(handshake::tls_handshake(acceptor, tcp, handshake, &metrics)).await else {
                    return;
                };
                let session = stream.get_ref().1;
                let proto = conn::alpn_proto(session.alpn_protocol());
                // The client's certificate (mutual TLS), read once: every request of the
                // connection, h1 or h2, shares it.
                info.client_cert = session.peer_certificates().and_then(ClientCert::from_chain).map(Arc::new);
                let svc = service(info);
                log_conn_end(Box::pin(builders.serve(stream, proto, svc, watch, stop)).await, &metrics);
            }),
            None => conns.spawn(async move {
                let _guard = guard;
                match Box::pin(conn::sniff_plain(&tcp, head_timeout)).await {
                    Ok(proto) => log_conn_end(builders.serve(tcp, proto, service(info), watch, stop).await, &metrics),
                    Err(e) => log_silent(e, &metrics),
                }
            }),
        };
    }
    drop(listener);
    conns.close();
    let grace = Duration::from_secs(gw.current.load().config.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// A plain connection that never sent a byte, or closed before it did.
fn log_silent(e: std::io::Error, metrics: &Metrics) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        metrics.record_limit(Limit::HeaderReadTimeout);
    }
    tracing::debug!(error = %e, "connection ended before a request");
}

fn log_conn_end(r: Result<(), ConnError>, metrics: &Metrics) {
    let e = match r {
        Ok(()) => return,
        Err(ConnError::SendIdle(limit)) => {
            // Counted where it fired; a client that stops reading is worth a line.
            return tracing::info!(?limit, "client read nothing while a response waited; connection closed");
        }
        Err(ConnError::Http(e)) => e,
    };
    if let Some(limit) = limit_of(&e) {
        metrics.record_limit(limit);
    }
    tracing::debug!(error = %e, "connection ended with an error");
}

/// The limit that ended a connection, from hyper's error: a timeout, an HTTP/1 head too large
/// (431), or the reason of a GOAWAY that h2 itself sent for a limit.
fn limit_of(e: &hyper::Error) -> Option<Limit> {
    if e.is_parse_too_large() {
        return Some(Limit::MaxHeaderBytes);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some(Limit::HeaderReadTimeout);
            }
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.is_go_away() && h2.is_library() {
                return match h2.reason() {
                    Some(h2::Reason::ENHANCE_YOUR_CALM) => Some(Limit::H2Flood),
                    Some(h2::Reason::FRAME_SIZE_ERROR) => Some(Limit::H2FrameSize),
                    Some(h2::Reason::COMPRESSION_ERROR) => Some(Limit::H2HeaderBlock),
                    _ => None,
                };
            }
            if h2.get_io().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
                return Some(Limit::HeaderReadTimeout);
            }
        }
        source = s.source();
    }
    e.is_timeout().then_some(Limit::HeaderReadTimeout)
}
