//! A deadline on a connection's first byte, for h2: hyper's HTTP/1 header read timer covers a
//! silent HTTP/1 client, but its h2 server waits for the preface with no timer, so a client that
//! finishes a TLS handshake offering h2 and then says nothing would hold its slot forever. (A
//! plain connection is told apart by a peek with its own deadline, in [`crate::listener::conn`].)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Fails reads with `TimedOut` unless the first byte arrives within the deadline; afterwards a
/// plain pass-through (idle keep-alive and long-lived upgraded streams are not affected).
pub struct FirstByteDeadline<T> {
    /// The wrapped stream.
    inner: T,
    /// Pending until the first byte; `None` once it came.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> FirstByteDeadline<T> {
    /// Wraps `inner`; its first byte must arrive within `limit`.
    pub fn new(inner: T, limit: Duration) -> Self {
        FirstByteDeadline { inner, deadline: Some(Box::pin(tokio::time::sleep(limit))) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silence_times_out_but_a_first_byte_lifts_the_deadline() {
        let (a, _b) = tokio::io::duplex(64);
        let mut silent = FirstByteDeadline::new(a, Duration::from_millis(50));
        let err = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (a, mut b) = tokio::io::duplex(64);
        let mut talking = FirstByteDeadline::new(a, Duration::from_millis(50));
        b.write_all(b"G").await.unwrap();
        assert_eq!(talking.read(&mut [0u8; 8]).await.unwrap(), 1);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            b.write_all(b"ET").await.unwrap();
            b
        });
        assert_eq!(talking.read(&mut [0u8; 8]).await.unwrap(), 2, "no deadline after the first byte");
        drop(later.await.unwrap());
    }
}
