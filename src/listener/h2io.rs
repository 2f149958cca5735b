//! The I/O of one h2 client connection, watched frame by frame (headers only, payloads skipped):
//!
//! - **Read deadline on heads.** hyper's h2 server has no header read timer: a client that says
//!   nothing after its TLS handshake, or stops in the middle of the preface or of a header block
//!   (HEADERS without END_HEADERS, then no CONTINUATION) was only found by keep-alive pings, about
//!   50 s later. Here the preface and every header block must be complete within
//!   `header_read_timeout_secs` of their first byte, or reads fail with `TimedOut`.
//! - **The client's SETTINGS_MAX_HEADER_LIST_SIZE** goes to [`ConnWatch`], so that a response head
//!   it would refuse (and with it the whole connection) is answered 502 instead.
//! - **Stream-level refusals counted.** h2 refuses a stream over `max_h2_streams` and answers an
//!   over-size header list 431 on its own, and neither surfaces through hyper; our outgoing frames
//!   (RST_STREAM REFUSED_STREAM, a bare 431 HEADERS) say which happened.
//!
//! The scan costs a few comparisons per frame, not per byte.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Limit;
use crate::proxy::upstream::conn_watch::ConnWatch;

/// What every h2 connection opens with (RFC 9113 section 3.4).
const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
/// `:status: 431` as h2's HPACK encoder first writes it (literal, indexed name 8, Huffman value).
const STATUS_431: [u8; 5] = [0x48, 0x83, 0x69, 0x90, 0xff];

/// A frame boundary or field seen by [`Frames::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A frame header: type, flags, stream.
    Head { kind: u8, flags: u8, stream: u32 },
    /// One SETTINGS parameter (not in an ACK).
    Setting { id: u16, value: u32 },
    /// A frame's payload is complete; `code` is its first 4 bytes (RST_STREAM's error code),
    /// `first` its first 6 bytes and `len` its length.
    End { kind: u8, flags: u8, stream: u32, code: u32, first: [u8; 6], len: usize },
}

/// Tracks h2 frame boundaries through a byte stream split anywhere.
#[derive(Debug)]
struct Frames {
    /// Preface bytes still to skip (client side only).
    preface: usize,
    /// The frame header being gathered.
    head: [u8; 9],
    /// Bytes of `head` gathered.
    have: usize,
    /// Payload bytes of the current frame still to come (meaningful once `have == 9`).
    left: usize,
    /// Payload bytes seen so far of the current frame.
    seen: usize,
    /// The first 4 payload bytes, or the SETTINGS entry being gathered.
    field: [u8; 6],
}

impl Frames {
    fn new(preface: usize) -> Self {
        Frames { preface, head: [0; 9], have: 0, left: 0, seen: 0, field: [0; 6] }
    }

    fn kind(&self) -> u8 {
        self.head[3]
    }

    fn flags(&self) -> u8 {
        self.head[4]
    }

    fn stream(&self) -> u32 {
        u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]) & 0x7fff_ffff
    }

    /// True while the preface or a frame header is incomplete.
    fn mid_head(&self) -> bool {
        self.preface > 0 || self.have > 0 && self.have < 9
    }

    fn end(&self) -> Event {
        let code = u32::from_be_bytes([self.field[0], self.field[1], self.field[2], self.field[3]]);
        Event::End {
            kind: self.kind(),
            flags: self.flags(),
            stream: self.stream(),
            code,
            first: self.field,
            len: self.seen,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], on: &mut impl FnMut(Event)) {
        let skip = self.preface.min(bytes.len());
        self.preface -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.have < 9 {
                let take = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < 9 {
                    return;
                }
                self.left = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
                self.seen = 0;
                self.field = [0; 6];
                on(Event::Head { kind: self.kind(), flags: self.flags(), stream: self.stream() });
            } else {
                let take = self.left.min(bytes.len());
                let settings = self.kind() == SETTINGS && self.flags() & ACK == 0;
                // Only the fields read below are copied: the first 4 bytes, or SETTINGS entries.
                for (i, b) in bytes[..take].iter().enumerate() {
                    let at = self.seen + i;
                    if settings {
                        self.field[at % 6] = *b;
                        if at % 6 == 5 {
                            let id = u16::from_be_bytes([self.field[0], self.field[1]]);
                            let value =
                                u32::from_be_bytes([self.field[2], self.field[3], self.field[4], self.field[5]]);
                            on(Event::Setting { id, value });
                        }
                    } else if at < 6 {
                        self.field[at] = *b;
                    } else {
                        break;
                    }
                }
                self.seen += take;
                self.left -= take;
                bytes = &bytes[take..];
            }
            if self.have == 9 && self.left == 0 {
                self.have = 0;
                on(self.end());
            }
        }
    }
}

/// An h2 client connection's I/O with the read deadline and frame watch described above.
pub struct H2Io<T> {
    /// The wrapped stream.
    inner: T,
    /// The client's frames.
    reads: Frames,
    /// Our frames.
    writes: Frames,
    /// `header_read_timeout_secs`.
    limit: Duration,
    /// The deadline of the preface or header block under way (one per connection, reused).
    deadline: Pin<Box<Sleep>>,
    /// A header block has started and not ended.
    in_block: bool,
    /// h2 has answered a 431 of its own here, so HPACK may now send it as one dynamic-table index.
    sent_431: bool,
    /// Where the client's settings go and limits are counted.
    watch: Arc<ConnWatch>,
}

impl<T> H2Io<T> {
    /// Wraps `inner`; its preface, and then each header block, must arrive within `limit`.
    pub fn new(inner: T, limit: Duration, watch: Arc<ConnWatch>) -> Self {
        H2Io {
            inner,
            reads: Frames::new(PREFACE_LEN),
            writes: Frames::new(0),
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            in_block: false,
            sent_431: false,
            watch,
        }
    }

    /// Whether a read deadline runs: the preface, a frame header or a header block is incomplete.
    fn reading_head(&self) -> bool {
        self.in_block || self.reads.mid_head()
    }

    fn saw_read(&mut self, bytes: &[u8]) {
        let was = self.reading_head();
        let mut started = false;
        let (watch, in_block) = (&self.watch, &mut self.in_block);
        self.reads.feed(bytes, &mut |e| match e {
            Event::Head { kind: HEADERS | PUSH_PROMISE, .. } => {
                started = true;
                *in_block = true
            }
            Event::Head { kind: CONTINUATION, .. } => *in_block = true,
            Event::End { kind: HEADERS | PUSH_PROMISE | CONTINUATION, flags, .. } if flags & END_HEADERS != 0 => {
                *in_block = false
            }
            Event::Setting { id: SETTINGS_MAX_HEADER_LIST_SIZE, value } => {
                watch.max_header_list.store(value, Ordering::Relaxed)
            }
            _ => {}
        });
        // A new head starts its own deadline; one already running keeps it (no trickling past it).
        if self.reading_head() && (started || !was) {
            self.deadline.as_mut().reset(Instant::now() + self.limit);
        }
    }

    fn saw_write(&mut self, bytes: &[u8]) {
        let (watch, sent_431) = (&self.watch, &mut self.sent_431);
        self.writes.feed(bytes, &mut |e| {
            let (limit, stream) = match e {
                Event::End { kind: RST_STREAM, stream, code: REFUSED_STREAM, .. } => (Limit::MaxH2Streams, stream),
                // h2's own answer to an over-size header list: a bare `:status: 431` ending the
                // stream, HPACK-encoded as a literal the first time ("431" in Huffman code), then
                // as a dynamic-table index. The proxy's own responses always carry more fields.
                Event::End { kind: HEADERS, flags, stream, first, len, .. }
                    if flags & (END_STREAM | END_HEADERS) == END_STREAM | END_HEADERS
                        && (len == 5 && first[..5] == STATUS_431 || len == 1 && *sent_431 && first[0] >= 0xbe) =>
                {
                    *sent_431 = true;
                    (Limit::MaxHeaderBytes, stream)
                }
                _ => return,
            };
            watch.metrics.record_limit(limit);
            tracing::debug!(stream, limit = limit.as_str(), "h2 stream refused by limit");
        });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for H2Io<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.saw_read(&buf.filled()[before..]);
                Poll::Ready(r)
            }
            Poll::Pending if this.reading_head() && this.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                io::Error::new(io::ErrorKind::TimedOut, "request head not complete within the header read timeout"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H2Io<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.saw_write(&data[..n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = r {
            for b in bufs {
                let take = n.min(b.len());
                self.saw_write(&b[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn events(preface: usize, bytes: &[u8], split: usize) -> Vec<Event> {
        let mut f = Frames::new(preface);
        let mut out = Vec::new();
        for chunk in bytes.chunks(split) {
            f.feed(chunk, &mut |e| out.push(e));
        }
        out
    }

    #[test]
    fn frames_are_found_however_the_bytes_are_split() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[0, 6, 0, 0, 0x40, 0, 0, 4, 0, 0, 0, 0]));
        wire.extend(frame(HEADERS, END_STREAM, 1, b"abcdefgh"));
        wire.extend(frame(RST_STREAM, 0, 1, &7u32.to_be_bytes()));
        let want = vec![
            Event::Head { kind: SETTINGS, flags: 0, stream: 0 },
            Event::Setting { id: 6, value: 0x4000 },
            Event::Setting { id: 4, value: 0 },
            Event::End { kind: SETTINGS, flags: 0, stream: 0, code: 0x0004_0000, first: [0, 4, 0, 0, 0, 0], len: 12 },
            Event::Head { kind: HEADERS, flags: END_STREAM, stream: 1 },
            Event::End {
                kind: HEADERS,
                flags: END_STREAM,
                stream: 1,
                code: u32::from_be_bytes(*b"abcd"),
                first: *b"abcdef",
                len: 8,
            },
            Event::Head { kind: RST_STREAM, flags: 0, stream: 1 },
            Event::End { kind: RST_STREAM, flags: 0, stream: 1, code: 7, first: [0, 0, 0, 7, 0, 0], len: 4 },
        ];
        for split in [1, 2, 5, 7, 9, 1000] {
            assert_eq!(events(PREFACE_LEN, &wire, split), want, "split {split}");
        }
    }

    #[tokio::test]
    async fn silence_and_an_unfinished_header_block_time_out_but_idle_after_a_head_does_not() {
        let watch = || Arc::new(ConnWatch::new(Arc::new(Metrics::new())));
        let (a, _b) = tokio::io::duplex(1024);
        let mut silent = H2Io::new(a, Duration::from_millis(50), watch());
        let err = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = H2Io::new(a, Duration::from_millis(100), watch());
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[]));
        wire.extend(frame(HEADERS, END_HEADERS, 1, b"xx"));
        b.write_all(&wire).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(n, wire.len());
        let quiet = tokio::time::timeout(Duration::from_millis(250), io.read(&mut buf)).await;
        assert!(quiet.is_err(), "an idle connection between requests is not cut by this deadline");

        b.write_all(&frame(HEADERS, 0, 3, b"half")).await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 9 + 4);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "HEADERS without END_HEADERS, then silence");
    }
}
