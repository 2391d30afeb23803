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
//! # One port, both protocols, no `auto` builder
//!
//! hyper-util's `auto` builder serves HTTP/1.1 and HTTP/2 on one port by reading each
//! connection's first bytes into a buffer of its own, which costs a parked poll about half as
//! much again as hyper's `http1` builder does (the bench's `--only stacks`). [`Protocol::sniff`]
//! tells the protocol from the first bytes without reading them, so that each connection can be
//! served by hyper's own `http1` or `http2` builder.
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
use tokio::net::TcpStream;
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
        // The peer reset the connection: there is nothing left to shut down.
        reset: bool,
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
            reset: false,
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
            if let Poll::Ready(Err(err)) = &polled {
                *this.reset |= was_reset(err);
            }
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
        let this = self.project();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Err(err)) = &polled {
            *this.reset |= was_reset(err);
        }
        polled
    }
}

/// Whether `err` says that the peer reset the connection.
fn was_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
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

    /// Shuts the write side down, unless a read or a write already found the connection reset
    /// by the peer: the kernel would only refuse (`ENOTCONN`), so that costs no system call.
    /// hyper shuts down every connection it ends, and a push server's clients often reset
    /// theirs as soon as they have their answer.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.reset {
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_shutdown(cx)
    }
}

/// The protocol a connection speaks, told by [`Protocol::sniff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge: the connection opened with HTTP/2's preface.
    Http2,
}

impl Protocol {
    /// The 24 bytes an HTTP/2 connection with prior knowledge opens with.
    const PREFACE: &'static [u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Tells the protocol of `stream` from its first bytes, without reading them: HTTP/2's
    /// preface, or anything else for HTTP/1. `None` when the client closes, or sends nothing
    /// (or only a part of the preface) within `within`: close such a connection, as a
    /// header-read timeout would.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use hyper::server::conn::{http1, http2};
    /// use hyper_util::rt::{TokioExecutor, TokioIo};
    /// use tower_push::io::Protocol;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// let service = hyper::service::service_fn(|_req| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    /// });
    /// let (socket, _) = listener.accept().await?;
    /// match Protocol::sniff(&socket, Duration::from_secs(10)).await {
    ///     Some(Protocol::Http2) => {
    ///         let connection = http2::Builder::new(TokioExecutor::new())
    ///             .serve_connection(TokioIo::new(socket), service);
    ///         let _ = connection.await;
    ///     }
    ///     Some(_) => {
    ///         let connection = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
    ///         let _ = connection.await;
    ///     }
    ///     None => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sniff(stream: &TcpStream, within: Duration) -> Option<Self> {
        let deadline = Instant::now() + within;
        let mut first = [0; 24];
        loop {
            let n = tokio::time::timeout_at(deadline, stream.peek(&mut first))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            if first[..n] != Self::PREFACE[..n] {
                return Some(Self::Http1);
            }
            if n == Self::PREFACE.len() {
                return Some(Self::Http2);
            }
            // A part of the preface: the rest is on its way, and peeking again at once would
            // spin, since the bytes already there keep the socket readable.
            let retry = Instant::now() + Duration::from_millis(5);
            tokio::time::sleep_until(retry.min(deadline)).await;
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn sniffing_tells_the_preface_from_anything_else_and_reads_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let within = Duration::from_secs(5);
        for (sent, expected) in [
            (&b"GET / HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (Protocol::PREFACE, Some(Protocol::Http2)),
            (b"P", None),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(sent).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let within = if expected.is_none() {
                Duration::from_millis(50)
            } else {
                within
            };
            assert_eq!(Protocol::sniff(&server, within).await, expected, "{sent:?}");
            // Nothing was read: the bytes are still there for the connection's protocol.
            let mut peeked = vec![0; sent.len()];
            let n = server.peek(&mut peeked).await.unwrap();
            assert_eq!(&peeked[..n], sent);
        }
    }

    /// Reads fail with `read`; shutdowns are counted.
    struct Peer {
        read: io::ErrorKind,
        shutdowns: usize,
    }

    impl AsyncRead for Peer {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(self.read.into()))
        }
    }

    impl AsyncWrite for Peer {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shutdowns += 1;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_connection_reset_by_the_peer_is_not_shut_down() {
        for (read, shutdowns) in [
            (io::ErrorKind::ConnectionReset, 0),
            (io::ErrorKind::BrokenPipe, 0),
            (io::ErrorKind::TimedOut, 1),
        ] {
            let peer = Peer { read, shutdowns: 0 };
            let mut io = WriteTimeout::new(peer, Duration::from_secs(5));
            let mut buf = [0; 16];
            assert_eq!(io.read(&mut buf).await.unwrap_err().kind(), read);
            io.shutdown().await.unwrap();
            assert_eq!(io.get_ref().shutdowns, shutdowns, "after {read:?}");
        }
    }

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
