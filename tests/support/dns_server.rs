//! A small authoritative DNS server for the tests, on a free loopback UDP port: it answers the A
//! queries of names the test sets (and changes while the gateway runs), with a TTL the test sets,
//! and can be told to fail (SERVFAIL) or be stopped (the port closes). Messages are parsed and
//! written with hickory-proto, the resolver's own wire types; only the answering is written here.
//! UDP only: the answers are small, so a resolver never needs its TCP fallback.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running server; stopped when dropped.
pub struct DnsServer {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Each name's addresses (lowercase, no trailing dot).
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    /// Set: every query is answered SERVFAIL.
    failing: Arc<AtomicBool>,
    /// Queries answered so far.
    queries: Arc<AtomicUsize>,
    /// The TTL of every answer, in seconds.
    ttl: Arc<AtomicU32>,
    /// The serving task.
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the test DNS server");
        let addr = socket.local_addr().expect("DNS server address");
        let records = Arc::new(Mutex::new(HashMap::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let ttl = Arc::new(AtomicU32::new(1));
        let (r, f, q, t) = (records.clone(), failing.clone(), queries.clone(), ttl.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let answer = answer(&query, &r.lock().unwrap(), f.load(Ordering::SeqCst), t.load(Ordering::SeqCst));
                q.fetch_add(1, Ordering::SeqCst);
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsServer { addr, records, failing, queries, ttl, task }
    }

    /// Answers carry this TTL from now on (1 s at start).
    pub fn set_ttl(&self, secs: u32) {
        self.ttl.store(secs, Ordering::SeqCst);
    }

    /// `name` answers `ips` from now on.
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.records.lock().unwrap().insert(name.to_ascii_lowercase(), ips.to_vec());
    }

    /// Every query fails (SERVFAIL) while set.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Stops answering: the port closes.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The response to `query`: its A records when the name is known, an empty answer for other
/// types of a known name, NXDOMAIN for unknown names, SERVFAIL when `failing`.
fn answer(query: &Message, records: &HashMap<String, Vec<Ipv4Addr>>, failing: bool, ttl: u32) -> Message {
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.queries = query.queries.clone();
    if failing {
        resp.metadata.response_code = ResponseCode::ServFail;
        return resp;
    }
    for q in &query.queries {
        let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        match records.get(&name) {
            Some(ips) if q.query_type() == RecordType::A => {
                for ip in ips {
                    resp.answers.push(Record::from_rdata(q.name().clone(), ttl, RData::A(A(*ip))));
                }
            }
            Some(_) => {}
            None => resp.metadata.response_code = ResponseCode::NXDomain,
        }
    }
    resp
}
