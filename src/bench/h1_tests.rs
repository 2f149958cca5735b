//! The HTTP/1.1 exchange against a real socket whose server writes canned answers in small
//! pieces, so heads, chunk sizes and bodies arrive split across reads.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Serves `answers` in order on one connection, one per request head received, each written a
/// few bytes at a time; then closes.
async fn canned(answers: Vec<Vec<u8>>) -> (H1Conn, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut heads = Vec::new();
        let mut pending = Vec::new();
        for answer in answers {
            while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).await.unwrap();
                assert!(n > 0, "client closed early");
                pending.extend_from_slice(&b[..n]);
            }
            let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            heads.push(pending.drain(..end).collect());
            for piece in answer.chunks(3) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
        heads
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    (H1Conn::new(Io::Tcp(tcp)), server)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn length_chunked_1xx_204_and_close_framing() {
    let big = vec![b'z'; 100_000];
    let mut big_answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
    big_answer.extend_from_slice(&big);
    let (mut c, server) = canned(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n".to_vec(),
        big_answer,
        b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ])
    .await;
    let a = c.exchange(GET, true).await.unwrap();
    assert_eq!((a.status, a.close, a.body.as_deref()), (200, false, Some(&b"hello"[..])));
    let a = c.exchange(GET, true).await.unwrap();
    assert_eq!((a.status, a.close, a.body.as_deref()), (201, false, Some(&b"hello world"[..])));
    let a = c.exchange(GET, true).await.unwrap();
    assert_eq!((a.status, a.body.as_deref()), (200, Some(&b"ok"[..])), "the 100 head is skipped");
    let a = c.exchange(GET, false).await.unwrap();
    assert_eq!((a.status, a.close, a.body), (204, false, None), "a 204 has no body, whatever its length says");
    let a = c.exchange(GET, true).await.unwrap();
    assert_eq!(a.body.map(|b| b.len()), Some(big.len()), "a body larger than the buffer");
    let a = c.exchange(GET, false).await.unwrap();
    assert_eq!((a.status, a.close), (401, true));
    let heads = server.await.unwrap();
    assert_eq!(heads.len(), 6);
    assert!(heads.iter().all(|h| h == GET), "each request written whole, once");
}

#[tokio::test]
async fn body_until_close_and_broken_answers() {
    let (mut c, _s) = canned(vec![b"HTTP/1.0 200 OK\r\n\r\nold style body".to_vec()]).await;
    let a = c.exchange(GET, true).await.unwrap();
    assert_eq!((a.status, a.close, a.body.as_deref()), (200, true, Some(&b"old style body"[..])));

    let (mut c, _s) = canned(vec![b"NOT HTTP AT ALL\r\n\r\n".to_vec()]).await;
    assert!(matches!(c.exchange(GET, false).await, Err(H1Error::Head(_))));
    let (mut c, _s) = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec()]).await;
    assert!(matches!(c.exchange(GET, false).await, Err(H1Error::Closed)));
    let (mut c, _s) = canned(vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec()]).await;
    assert!(matches!(c.exchange(GET, false).await, Err(H1Error::Chunk)));
    let (mut c, _s) = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_vec()]).await;
    assert!(matches!(c.exchange(GET, false).await, Err(H1Error::ContentLength)));
}

#[test]
fn requests_are_encoded_once_as_wire_bytes() {
    let host = HeaderValue::from_static("127.0.0.1:8080");
    let headers = [(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"))];
    assert_eq!(
        &encode(&Method::GET, "/x?y=1", &host, &headers, b"")[..],
        b"GET /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nauthorization: Bearer a.b.c\r\n\r\n"
    );
    assert_eq!(
        &encode(&Method::POST, "/t", &host, &[], b"a=1")[..],
        b"POST /t HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 3\r\n\r\na=1"
    );
}
