//! A group endpoint stub: answers every path 200 (after `delay`) with its port in `x-instance`
//! and its address in `x-instance-addr`, counts requests and connections, answers `/healthz`
//! 200 or 503 as the test switches it (probes counted apart, their headers kept), and can be
//! killed: listener and every connection closed at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::full;

pub struct Instance {
    pub addr: SocketAddr,
    /// Requests other than `/healthz`.
    requests: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    /// What `/healthz` answers: 200 while set, 503 otherwise.
    healthy: Arc<AtomicBool>,
    /// `/healthz` requests, and the headers of the last one.
    probes: Arc<AtomicUsize>,
    probe_headers: Arc<Mutex<HeaderMap>>,
    task: JoinHandle<()>,
}

impl Instance {
    pub async fn start(delay: Duration) -> Instance {
        Instance::start_on("127.0.0.1:0".parse().unwrap(), delay).await
    }

    pub async fn start_on(addr: SocketAddr, delay: Duration) -> Instance {
        let listener = TcpListener::bind(addr).await.expect("bind endpoint");
        let addr = listener.local_addr().unwrap();
        let (requests, conns) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (healthy, probes) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
        let probe_headers = Arc::new(Mutex::new(HeaderMap::new()));
        let (r, c, h, p, ph) =
            (requests.clone(), conns.clone(), healthy.clone(), probes.clone(), probe_headers.clone());
        let task = tokio::spawn(async move {
            // Dropped with this task when killed: every connection task is aborted with it.
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, h, p, ph) = (r.clone(), h.clone(), p.clone(), ph.clone());
                open.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let probe = req.uri().path() == "/healthz";
                        let status = if !probe {
                            r.fetch_add(1, Ordering::SeqCst);
                            StatusCode::OK
                        } else {
                            p.fetch_add(1, Ordering::SeqCst);
                            *ph.lock().unwrap() = req.headers().clone();
                            if h.load(Ordering::SeqCst) {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            }
                        };
                        async move {
                            if !delay.is_zero() && !probe {
                                tokio::time::sleep(delay).await;
                            }
                            let mut resp = Response::new(full("ok"));
                            *resp.status_mut() = status;
                            resp.headers_mut().insert("x-instance", addr.port().to_string().parse().unwrap());
                            resp.headers_mut().insert("x-instance-addr", addr.to_string().parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Instance { addr, requests, conns, healthy, probes, probe_headers, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// `/healthz` answers 200 (true) or 503 (false) from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// `/healthz` requests so far.
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    /// The headers of the last `/healthz` request.
    pub fn probe_headers(&self) -> HeaderMap {
        self.probe_headers.lock().unwrap().clone()
    }

    /// SIGKILL-like: the port closes and every open connection is dropped.
    pub async fn kill(&self) {
        self.task.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
