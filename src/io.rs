//! A deadline on write progress for the connections that carry push responses.
//!
//! A parked poll or a quiet stream writes nothing for minutes, and that is fine. A client that
//! stops *reading* is different: the server's writes stall once the socket buffers are full, and
//! the answer or frame waiting to be written stays in memory for as long as the connection
//! lives. hyper has a timeout for reading a request head, none for a write that makes no
//! progress. Wrap each accepted socket in [`WriteTimeout`] and a connection whose writes accept
//! no byte for the timeout fails with [`io::ErrorKind::TimedOut`], so the server closes it and
//! frees what it held. Nothing is lost: the client's cursor is still valid, and it resumes from
//! there when it reconnects.
//!
//! The timer runs only while a write is pending: idle connections, parked polls and quiet
//! streams are never cut by it.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use hyper_util::rt::TokioIo;
//! use tower_push::io::WriteTimeout;
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let (socket, _) = listener.accept().await?;
//! socket.set_nodelay(true)?;
//! let io = TokioIo::new(WriteTimeout::new(socket, Duration::from_secs(30)));
//! // Serve `io` with hyper as usual.
//! # drop(io);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// An I/O object whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
    /// progress for a timeout: see the [module docs](crate::io).
    ///
    /// Reads pass through untouched.
    #[derive(Debug)]
    pub struct WriteTimeout<T> {
        #[pin]
        inner: T,
        timeout: Duration,
        // Armed when a write first returns `Pending`, disarmed by any progress. Made at the first
        // stall only (most connections never stall: a parked poll costs no timer here), and
        // boxed so that the wrapper is `Unpin`, as hyper's connections need their I/O to be.
        stalled: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<T> WriteTimeout<T> {
    /// Wraps `inner`: a write that accepts no byte for `timeout` fails.
    ///
    /// # Panics
    ///
    /// Its writes panic when a write stalls outside a tokio runtime with the time driver
    /// enabled.
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
            armed: false,
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped I/O object, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Consumes the wrapper and returns the I/O object.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncWrite> WriteTimeout<T> {
    /// Passes a write's result on, and turns a `Pending` that has lasted for the timeout into an
    /// error.
    fn check<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let this = self.project();
        if polled.is_ready() {
            *this.armed = false;
            return polled;
        }
        let deadline = Instant::now() + *this.timeout;
        let stalled = this
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !*this.armed {
            *this.armed = true;
            stalled.as_mut().reset(deadline);
        }
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no write progress for {:?}: the peer stopped reading",
                    this.timeout
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().inner.poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.as_mut().project().inner.poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_after_the_timeout() {
        // A pipe with a 64-byte buffer that nobody reads.
        let (_client, server) = tokio::io::duplex(64);
        let mut io = WriteTimeout::new(server, Duration::from_secs(30));
        io.write_all(&[1; 64]).await.unwrap();
        let started = Instant::now();
        let err = io.write_all(&[2; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_makes_progress_and_is_not_cut() {
        // One byte of buffer, read every 20 s: 80 s for four bytes, never 30 s without one.
        let (mut client, server) = tokio::io::duplex(1);
        let mut io = WriteTimeout::new(server, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut byte = [0; 1];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                client.read_exact(&mut byte).await.unwrap();
            }
        });
        io.write_all(&[3; 4]).await.unwrap();
        reader.await.unwrap();
    }
}
