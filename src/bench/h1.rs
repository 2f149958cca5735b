//! The HTTP/1.1 client of the load generator: a request encoded once, written as is, and the
//! answer read in the connection's own task, its head parsed with `httparse`.
//!
//! hyper's client connection hands each request through a channel to a spawned driver task and
//! builds the request head anew every time; a load generator sends the same bytes over and over,
//! so that cost measured the generator instead of the target (0.72-0.75x of wrk). Here a request is
//! one `write` of bytes made before the run and one or a few `read`s into a buffer the connection
//! keeps; the body is skipped (or kept, when a token answer must be read) by `Content-Length`,
//! chunks, or the end of the connection.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why an exchange failed (each one ends the connection).
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection before a whole answer")]
    Closed,
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed chunked body")]
    Chunk,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
}

/// A response head (with its buffered start) may not grow the buffer past this.
const MAX_HEAD: usize = 1 << 20;
/// Headers parsed per response head; more is an error, as in hyper's default.
const MAX_HEADERS: usize = 100;
/// The read buffer a connection starts with: a head and a short body in one `read`.
const BUF: usize = 16 * 1024;

/// The byte stream under a connection: plain TCP or TLS.
pub enum Io {
    /// http:// targets.
    Tcp(TcpStream),
    /// https:// targets (boxed: the TLS state is large and the enum is moved into the connection).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What an exchange returns.
#[derive(Debug)]
pub struct Answer {
    /// The final status (after any `1xx`), counted by code in the report.
    pub status: u16,
    /// The server said `Connection: close` (or ended the body by closing): open a new connection.
    pub close: bool,
    /// The body, when asked for (token answers); otherwise it was skipped unread.
    pub body: Option<Vec<u8>>,
}

/// The request as bytes on the wire: request line, `Host`, the given headers, then the body
/// (with its `Content-Length` when not empty, or when the method sends one).
pub fn encode(
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Bytes {
    let mut b = BytesMut::with_capacity(
        64 + target.len() + body.len() + headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>(),
    );
    let line: [&[u8]; 6] =
        [method.as_str().as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\nhost: ", host.as_bytes(), b"\r\n"];
    for part in line {
        b.put_slice(part);
    }
    for (n, v) in headers {
        let field: [&[u8]; 4] = [n.as_str().as_bytes(), b": ", v.as_bytes(), b"\r\n"];
        for part in field {
            b.put_slice(part);
        }
    }
    if !body.is_empty() || *method == Method::POST || *method == Method::PUT {
        b.put_slice(b"content-length: ");
        b.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        b.put_slice(b"\r\n");
    }
    b.put_slice(b"\r\n");
    b.put_slice(body);
    b.freeze()
}

/// One HTTP/1.1 connection with at most one request in flight.
pub struct H1Conn {
    /// The socket, owned by the connection's task: nothing else touches it.
    io: Io,
    /// Bytes read and not yet consumed are `buf[start..end]`; kept across requests so that a
    /// connection allocates once.
    buf: Vec<u8>,
    /// First unconsumed byte of `buf`.
    start: usize,
    /// End of the bytes read into `buf`.
    end: usize,
}

/// How the body of an answer ends.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl H1Conn {
    pub fn new(io: Io) -> H1Conn {
        H1Conn { io, buf: vec![0; BUF], start: 0, end: 0 }
    }

    /// Writes `request` and reads the whole answer (skipping `1xx` heads); keeps the body when
    /// `keep_body`.
    pub async fn exchange(&mut self, request: &[u8], keep_body: bool) -> Result<Answer, H1Error> {
        self.io.write_all(request).await?;
        self.io.flush().await?;
        loop {
            let (status, framing, close) = self.read_head().await?;
            if (100..200).contains(&status) {
                if status == 101 {
                    return Err(H1Error::Upgrade);
                }
                continue;
            }
            let mut body = keep_body.then(Vec::new);
            let close = match framing {
                Framing::None => close,
                Framing::Length(n) => {
                    self.skip(n, &mut body).await?;
                    close
                }
                Framing::Chunked => {
                    self.skip_chunked(&mut body).await?;
                    close
                }
                Framing::UntilClose => {
                    self.skip_to_eof(&mut body).await?;
                    true
                }
            };
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
            return Ok(Answer { status, close, body });
        }
    }

    /// Reads more bytes after `end`, making room first; `Closed` at the end of the stream.
    async fn fill(&mut self) -> Result<(), H1Error> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.buf.len() >= MAX_HEAD {
                return Err(H1Error::HeadTooLarge);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        match self.io.read(&mut self.buf[self.end..]).await? {
            0 => Err(H1Error::Closed),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Parses the next response head: (status, body framing, `Connection: close`).
    async fn read_head(&mut self) -> Result<(u16, Framing, bool), H1Error> {
        loop {
            if self.start < self.end {
                // Uninitialised: zeroing 100 headers on every answer cost more than parsing them.
                let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
                    [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut []);
                let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                    &mut resp,
                    &self.buf[self.start..self.end],
                    &mut headers,
                );
                match parsed.map_err(H1Error::Head)? {
                    httparse::Status::Complete(n) => {
                        let status = resp.code.unwrap_or(0);
                        let mut close = resp.version == Some(0);
                        let (mut length, mut chunked) = (None, false);
                        for h in resp.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                let v = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
                                length = Some(v.ok_or(H1Error::ContentLength)?);
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = h.value.trim_ascii().to_ascii_lowercase().ends_with(b"chunked");
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                let v = h.value.trim_ascii();
                                if v.eq_ignore_ascii_case(b"close") {
                                    close = true;
                                } else if v.eq_ignore_ascii_case(b"keep-alive") {
                                    close = false;
                                }
                            }
                        }
                        self.start += n;
                        let framing = match (status, chunked, length) {
                            (100..=199 | 204 | 304, _, _) => Framing::None,
                            (_, true, _) => Framing::Chunked,
                            (_, false, Some(0)) => Framing::None,
                            (_, false, Some(n)) => Framing::Length(n),
                            (_, false, None) => Framing::UntilClose,
                        };
                        return Ok((status, framing, close));
                    }
                    httparse::Status::Partial => {}
                }
            }
            self.fill().await?;
        }
    }

    /// Consumes `n` body bytes, copying them into `keep` when given.
    async fn skip(&mut self, mut n: u64, keep: &mut Option<Vec<u8>>) -> Result<(), H1Error> {
        loop {
            let avail = (self.end - self.start) as u64;
            let take = avail.min(n) as usize;
            if let Some(k) = keep {
                k.extend_from_slice(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            (self.start, self.end) = (0, 0);
            self.fill().await?;
        }
    }

    /// Consumes a chunked body and its trailers.
    async fn skip_chunked(&mut self, keep: &mut Option<Vec<u8>>) -> Result<(), H1Error> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.fill().await?,
                    Err(_) => return Err(H1Error::Chunk),
                }
            };
            if size == 0 {
                return self.skip_trailers().await;
            }
            self.skip(size, keep).await?;
            self.expect_crlf().await?;
        }
    }

    /// The CRLF that ends a chunk's data.
    async fn expect_crlf(&mut self) -> Result<(), H1Error> {
        while self.end - self.start < 2 {
            self.fill().await?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(H1Error::Chunk);
        }
        self.start += 2;
        Ok(())
    }

    /// Trailer lines after the last chunk, up to the empty line.
    async fn skip_trailers(&mut self) -> Result<(), H1Error> {
        loop {
            match self.buf[self.start..self.end].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(i) => self.start += i + 2,
                None => self.fill().await?,
            }
        }
    }

    /// A body without length: everything until the server closes.
    async fn skip_to_eof(&mut self, keep: &mut Option<Vec<u8>>) -> Result<(), H1Error> {
        loop {
            if let Some(k) = keep {
                k.extend_from_slice(&self.buf[self.start..self.end]);
            }
            (self.start, self.end) = (0, 0);
            match self.fill().await {
                Ok(()) => {}
                Err(H1Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
