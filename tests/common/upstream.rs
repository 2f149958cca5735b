//! A recording upstream: a small hyper 1 server that keeps what it received and answers as told.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::client::{full, streamed};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }
}

/// How the upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 200 `upstream-ok`, after reading the whole body.
    Ok,
    /// Reads the request, waits, then 200 `slow-ok`.
    Slow(Duration),
    /// 200 with a streamed body of `n` pattern bytes.
    Big(usize),
    /// 200 with hop-by-hop headers that must not reach the client.
    HopHeaders,
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type UpBody = BoxBody<Bytes, std::io::Error>;

impl Upstream {
    pub async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r: Request<Incoming>| {
                        let rec = rec.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(mode, rec, r).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received a request")
    }
}

async fn answer(mode: Mode, rec: Arc<Mutex<Vec<Seen>>>, r: Request<Incoming>) -> Response<UpBody> {
    let (parts, mut body) = r.into_parts();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            len += d.len() as u64;
            ctx.update(d);
        }
    }
    let uri = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    rec.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri,
        headers: parts.headers,
        body_len: len,
        body_sha256: ctx.finish().as_ref().to_vec(),
    });
    let mut resp = match mode {
        Mode::Ok => Response::new(full("upstream-ok")),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            Response::new(full("slow-ok"))
        }
        Mode::Big(n) => Response::new(streamed(n)),
        Mode::HopHeaders => {
            let mut r = Response::new(full("hop"));
            let h = r.headers_mut();
            h.insert("connection", HeaderValue::from_static("X-Resp-Hop"));
            h.insert("x-resp-hop", HeaderValue::from_static("1"));
            h.insert("proxy-bar", HeaderValue::from_static("2"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("x-end-to-end", HeaderValue::from_static("kept"));
            r
        }
    };
    resp.headers_mut().insert("x-upstream", HeaderValue::from_static("yes"));
    resp
}

/// A local port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}
