//! Serving push routes with hyper: the serving loop every push server needs (feature
//! `server`).
//!
//! A push server keeps thousands of requests open for minutes. hyper serves them well, but
//! what goes around it decides whether the server survives its clients, and hyper-util leaves
//! all of it to you. [`Server`] does it once, for any tower service of yours (an axum
//! `Router`, the layers themselves, a `service_fn` over your routes, the Durable Streams
//! service):
//!
//! - **One builder per protocol**: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, told
//!   apart from the first bytes without reading them ([`Protocol::sniff`]), so that a parked
//!   HTTP/1.1 poll costs what hyper's `http1` connection costs and no more (hyper-util's
//!   `auto` builder copies the first bytes into a buffer of its own, about 7 KB more per
//!   connection). Each connection gets a task of its own that holds the connection and
//!   nothing else.
//! - **`TCP_NODELAY`** on every accepted socket: without it a small write waits for the
//!   previous one's acknowledgement (Nagle), and an event can sit in the kernel for 40 ms.
//! - **Deadlines on clients**: a request head must arrive within
//!   [`header_read_timeout`](Server::header_read_timeout), its body within
//!   [`body_read_timeout`](Server::body_read_timeout), and a write must make progress within
//!   [`write_stall_timeout`](Server::write_stall_timeout) ([`WriteTimeout`]). Parked polls
//!   and quiet streams read and write nothing, and are never cut by them.
//! - **Caps**: the connections at once ([`max_connections`](Server::max_connections), by
//!   default what the open-files limit leaves after a reserve, so that the process never fails
//!   to accept for want of a descriptor), the requests receiving a body at once
//!   ([`max_body_reads`](Server::max_body_reads): publishes and appends; beyond it `503
//!   overloaded`, so that slow uploads cannot take the places of polls and streams), and the
//!   concurrent HTTP/2 streams of one connection. The layers cap held polls and open streams
//!   themselves ([`PushBuilder::max_held`](crate::PushBuilder::max_held));
//!   [`held_cap`] is the share of the open-files limit the examples give each.
//! - **Teardown in the background**: a connection that ends is freed and closed by a thread of
//!   the lowest priority, not between the answers its runtime thread still has to write: after
//!   a publish, thousands of clients close at once
//!   ([`close_in_background`](Server::close_in_background)).
//! - **Accept back-off**: when accepting fails, the loop waits 100 ms, then twice as long up to
//!   1 s, rather than failing again at once in a busy loop.
//! - **Graceful drain**: when the stop signal resolves, the [`Shutdown`] of the layers is
//!   triggered first (held polls answer `204`, streams send their final message, new requests
//!   get `503`), the listener closes, and open connections get
//!   [`drain_timeout`](Server::drain_timeout) to close.
//! - **A runtime recipe** ([`runtime`]) and the stop signal of a service manager
//!   ([`ctrl_c_or_sigterm`]); or, on Unix, one listener and one single-threaded runtime per
//!   thread, as nginx's workers ([`Server::serve_per_thread`]; measured, it has not beaten the
//!   multi-threaded runtime on fan-out here, see BENCHMARKS.md).
//!
//! tonic's server does most of this its own way and keeps its own loop: see `examples/tonic.rs`.
//!
//! # Examples
//!
//! An axum router with a long poll and a stream, served until Ctrl-C or SIGTERM:
//!
//! ```no_run
//! use axum::Router;
//! use tokio::net::TcpListener;
//! use tower_push::server::{self, Server};
//! use tower_push::{ChunkedStreamLayer, LongPollLayer, MemoryLog, Shutdown};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let news = MemoryLog::new().topic("news");
//! let shutdown = Shutdown::new();
//! let poll = LongPollLayer::builder().shutdown(shutdown.clone()).build()?;
//! let stream = ChunkedStreamLayer::builder().shutdown(shutdown.clone()).build()?;
//! let app = Router::new()
//!     .route_service("/poll", poll.layer(news.clone()))
//!     .route_service("/stream", stream.layer(news));
//! let listener = TcpListener::bind("127.0.0.1:3000").await?;
//! let drained = Server::new()
//!     .shutdown(shutdown)
//!     .serve(listener, app, server::ctrl_c_or_sigterm())
//!     .await;
//! assert!(drained.is_complete() || drained.still_open() > 0);
//! # Ok(())
//! # }
//! ```
//!
//! [`Protocol::sniff`]: crate::io::Protocol::sniff
//! [`WriteTimeout`]: crate::io::WriteTimeout

mod body;
mod close;
#[cfg(feature = "cli")]
mod flags;
mod service;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service;

pub use self::body::{Body, BodyError, ReadError};
use self::close::CloseInBackground;
#[cfg(feature = "cli")]
pub use self::flags::{Flags, Threads};
use self::service::{Connection, Shared};
use crate::io::{Protocol, WriteTimeout};
use crate::{BoxError, Shutdown};

/// The descriptors [`Server::new`] keeps out of `max_connections`: the listener, standard
/// streams, log files, a Redis connection or a data directory's files.
const RESERVED_FILES: u64 = 64;

/// How many tasks a runtime thread runs between two looks at the network in [`runtime`],
/// where tokio's default is 61.
///
/// One publish wakes every poll parked on its topic at once: 10,000 tasks, each with an answer
/// to write. Looking at the network every 61 of them, a runtime thread also picks up, between
/// the answers, the work that those answers cause (clients that read theirs and close or send
/// their next request), and the last answers wait behind it. Looking every 1,024 tasks, the
/// answers go out first: measured with 10,000 parked polls, the fan-out p99 went from 1.46x
/// nginx + Nchan's to 1.19x, and the server's CPU time per answer fell by a third
/// (BENCHMARKS.md). A thread with nothing left to run looks at the network at once, as before,
/// so this delays new work only while a fan-out is being written: by at most 1,024 short tasks.
pub const EVENT_INTERVAL: u32 = 1024;

/// A tokio multi-threaded runtime builder for a push server: I/O and timers enabled, and
/// [`EVENT_INTERVAL`].
///
/// # Examples
///
/// ```
/// let runtime = tower_push::server::runtime().build()?;
/// assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn runtime() -> tokio::runtime::Builder {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().event_interval(EVENT_INTERVAL);
    runtime
}

/// The soft limit on open files of this process, which bounds its connections; 1024, the
/// usual default, where it cannot be read.
pub fn open_files_limit() -> u64 {
    #[cfg(unix)]
    let limit = rlimit::Resource::NOFILE.get_soft().ok();
    #[cfg(not(unix))]
    let limit = None;
    limit.unwrap_or(1024)
}

/// The cap the examples give each of held polls and open streams: a quarter of the open-files
/// limit (256 each under the usual 1024).
///
/// A parked poll or an open stream over HTTP/1.1 keeps its connection, and so a file
/// descriptor; with a quarter each, half is left for requests that answer at once, publishers
/// and the listener. Beyond a cap the layers answer `503 overloaded` with a `Retry-After`,
/// instead of the server running out of descriptors.
///
/// # Examples
///
/// ```
/// use tower_push::LongPollLayer;
///
/// let poll = LongPollLayer::builder()
///     .max_held(tower_push::server::held_cap())
///     .build()?;
/// # let _ = poll;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub fn held_cap() -> usize {
    usize::try_from(open_files_limit() / 4).unwrap_or(usize::MAX)
}

/// Builds `poll` and `stream` (each with the program's own settings), each holding at most
/// `max_held` requests (polls parked, streams open; beyond, `503 overloaded` with a
/// `Retry-After`) and drained by `shutdown`: the two layers of a program served by [`Server`]
/// with the same [`Shutdown`].
///
/// # Errors
///
/// What [`LongPollBuilder::build`](crate::LongPollBuilder::build) and
/// [`ChunkedStreamBuilder::build`](crate::ChunkedStreamBuilder::build) refuse.
///
/// # Examples
///
/// ```
/// use tower_push::server::{self, held_layers};
/// use tower_push::{ChunkedStreamLayer, LongPollLayer, Shutdown};
///
/// let shutdown = Shutdown::new();
/// let (poll, stream) = held_layers(
///     LongPollLayer::builder(),
///     ChunkedStreamLayer::builder(),
///     server::held_cap(),
///     &shutdown,
/// )?;
/// # let _ = (poll, stream);
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub fn held_layers<F, G>(
    poll: crate::LongPollBuilder<F>,
    stream: crate::ChunkedStreamBuilder<G>,
    max_held: usize,
    shutdown: &Shutdown,
) -> Result<(crate::LongPollLayer<F>, crate::ChunkedStreamLayer<G>), crate::ConfigError> {
    let poll = poll.max_held(max_held).shutdown(shutdown.clone());
    let stream = stream.max_held(max_held).shutdown(shutdown.clone());
    Ok((poll.build()?, stream.build()?))
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (what systemd, Docker and Kubernetes
/// send): the stop signal to give [`Server::serve`].
///
/// A signal whose handler cannot be installed never resolves.
pub async fn ctrl_c_or_sigterm() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// What [`Server`] serves: a tower service of HTTP requests with a [`Body`] that never fails
/// (`Error = Infallible`, as the layers, an axum `Router` and the Durable Streams service), is
/// cloned for each connection and answers with a body of [`Bytes`]; its futures are `Send`.
///
/// Every such service has it: name it in bounds, there is nothing to implement.
pub trait HttpService:
    Service<
        Request<Body>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future = Self::Answer,
    > + Clone
    + Send
    + 'static
{
    /// The body of its answers.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The future of one answer.
    type Answer: Future<Output = Result<Response<Self::Body>, Infallible>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
    type Answer = S::Future;
}

/// Serves a tower service over HTTP/1.1 and HTTP/2 with what a push server needs around
/// hyper: see the [module docs](self).
///
/// A consuming builder: [`Server::new`] (the same as `Default`) then setters, then
/// [`serve`](Server::serve).
#[derive(Clone)]
pub struct Server {
    header_read: Duration,
    body_read: Duration,
    write_stall: Duration,
    drain: Duration,
    max_connections: usize,
    max_body_reads: usize,
    http2_max_streams: u32,
    shutdown: Option<Shutdown>,
    close_in_background: bool,
}

impl Default for Server {
    fn default() -> Self {
        let files = open_files_limit();
        let connections = files.saturating_sub(RESERVED_FILES).max(1);
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            write_stall: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            max_connections: usize::try_from(connections).unwrap_or(usize::MAX),
            max_body_reads: usize::try_from(files / 4).unwrap_or(usize::MAX).max(1),
            http2_max_streams: 100,
            shutdown: None,
            close_in_background: true,
        }
    }
}

impl Server {
    /// A server with the defaults each setter gives; reads the open-files limit once.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a client may take to send a request head (and, on a new connection, its first
    /// bytes): a slowloris client, which sends its head a byte at a time or stops halfway, is
    /// closed then.
    ///
    /// Default is 10 seconds: a real client sends its head at once, even on a slow network.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read = timeout;
        self
    }

    /// How long a request's body may take to arrive, from its head: see [`Body`].
    ///
    /// Default is 30 seconds: a publish or an append of a few megabytes arrives well within it
    /// on a slow network; raise it for larger uploads.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read = timeout;
        self
    }

    /// How long a write may make no progress before the connection is closed: a client that
    /// stopped reading would otherwise keep the answer or frames waiting for it in memory. See
    /// [`WriteTimeout`].
    ///
    /// Default is 30 seconds: longer than the stalls of a client that still reads; parked polls
    /// and quiet streams write nothing and are never cut.
    #[must_use]
    pub fn write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall = timeout;
        self
    }

    /// How long open connections get to close once the stop signal has resolved.
    ///
    /// Default is 10 seconds: enough to write the answered polls and the final messages of
    /// streams, and well within the 30 seconds an orchestrator usually waits between SIGTERM and
    /// SIGKILL.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain = timeout;
        self
    }

    /// The most connections open at once; beyond it the server stops accepting until one
    /// closes (new clients wait in the listener's backlog).
    ///
    /// Default is the open-files limit less 64 descriptors kept for the listener, the standard
    /// streams and whatever else the process opens, so that accepting never fails for want of
    /// a descriptor. Values below 1 count as 1.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The most requests receiving a body at once (publishes, appends: every request whose
    /// body is not empty); beyond it a request with a body is answered `503 overloaded` with a
    /// `Retry-After` of 1 to 5 seconds, without reaching the service. Requests without a body
    /// (polls, streams, reads) are not counted.
    ///
    /// Default is a quarter of the open-files limit. Values below 1 count as 1.
    #[must_use]
    pub fn max_body_reads(mut self, max: usize) -> Self {
        self.max_body_reads = max.max(1);
        self
    }

    /// The most concurrent streams of one HTTP/2 connection.
    ///
    /// Default is 100 (hyper's is 200): an HTTP/2 client multiplexes its polls and streams over
    /// one connection, and one connection should not take a large share of the layers' caps.
    #[must_use]
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_streams = max;
        self
    }

    /// Whether connections that end are torn down on a background thread of the lowest
    /// priority (Linux: nice 19) rather than by the runtime thread they end on.
    ///
    /// Default is yes. A connection's teardown frees hyper's buffers and closes the socket: a
    /// few microseconds, which matter when thousands of clients close their connections right
    /// after one publish answered them all, while the runtime still has answers of that publish
    /// to write. Handed to the background thread, the teardown waits until the CPUs have nothing
    /// more urgent (BENCHMARKS.md, "Connections closed in the background": the demo's fan-out
    /// p99 to 10,000 polls went from 1.19x to 1.14x Nchan's, medians of six alternating sets).
    /// The thread is one per process, started with the first connection that ends. On CPUs that
    /// stay busy it still gets a small share; connections that wait for it keep their place
    /// under [`max_connections`](Server::max_connections), which then holds accepting back.
    /// `false` tears each connection down where it ends, in the runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::server::Server;
    ///
    /// // A program that wants no thread besides its runtime's.
    /// let server = Server::new().close_in_background(false);
    /// assert!(format!("{server:?}").contains("close_in_background: false"));
    /// ```
    #[must_use]
    pub fn close_in_background(mut self, yes: bool) -> Self {
        self.close_in_background = yes;
        self
    }

    /// The signal of the layers, triggered when the stop signal resolves, before the
    /// connections are drained: held polls answer and streams end, so that their connections
    /// can close.
    ///
    /// Default is none: give the layers' [`Shutdown`] here, or trigger it yourself.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves `service` on `listener` until `stop` resolves, then drains: triggers the
    /// [`shutdown`](Server::shutdown) signal, closes the listener, and waits up to
    /// [`drain_timeout`](Server::drain_timeout) for open connections to close.
    ///
    /// The service is cloned once for each connection, and that clone is called for each of the
    /// connection's requests (hyper-util's `TowerToHyperService` clones it for every request,
    /// which costs a service holding `Arc`s a shared counter update per `Arc` and request). A
    /// service that is not ready when a request comes waits for it with the very instance
    /// that said so, and the connection takes a fresh clone. It never fails
    /// (`Error = Infallible`, as the layers, an axum `Router` and the Durable Streams service);
    /// its requests carry a [`Body`].
    pub async fn serve<S: HttpService>(
        self,
        listener: TcpListener,
        service: S,
        stop: impl Future<Output = ()>,
    ) -> Drained {
        let mut h1 = http1::Builder::new();
        // hyper enforces the header-read timeout only with a timer.
        h1.timer(TokioTimer::new())
            .header_read_timeout(self.header_read);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_streams);
        let shared = Arc::new(Shared {
            body_read: self.body_read,
            body_reads: Arc::new(Semaphore::new(self.max_body_reads)),
        });
        let connections = Arc::new(Semaphore::new(self.max_connections));
        let (header_read, write_stall) = (self.header_read, self.write_stall);
        let in_background = self.close_in_background;
        let graceful = GracefulShutdown::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = accept(&listener, &connections) => accepted,
                () = &mut stop => break,
            };
            let (socket, place) = accepted;
            // hyper has no server switch for TCP_NODELAY: it is set on each accepted socket.
            let _ = socket.set_nodelay(true);
            // The connection's place under `max_connections` goes with its service, which
            // hyper drops when the connection ends.
            let service = Connection {
                inner: std::cell::RefCell::new(service.clone()),
                shared: shared.clone(),
                _place: place,
            };
            let (h1, h2, watcher) = (h1.clone(), h2.clone(), graceful.watcher());
            tokio::spawn(async move {
                // A client that sends nothing, or a part of HTTP/2's preface, within the
                // header-read timeout is closed here.
                let Some(protocol) = Protocol::sniff(&socket, header_read).await else {
                    return;
                };
                let io = TokioIo::new(WriteTimeout::new(socket, write_stall));
                // The connection gets a task of its own, which holds the connection and nothing
                // else: this task, which also holds both builders and the sniffing, ends here,
                // and an HTTP/1.1 connection is not made as large as an HTTP/2 one. (Not in an
                // `async` block around the connection either: the block would keep room for the
                // connection twice, 2 KB where the connection takes 1 KB.)
                match protocol {
                    Protocol::Http2 => {
                        let connection = watcher.watch(h2.serve_connection(io, service));
                        spawn_connection(connection, in_background);
                    }
                    _ => {
                        let connection = watcher.watch(h1.serve_connection(io, service));
                        spawn_connection(connection, in_background);
                    }
                }
            });
        }
        if let Some(shutdown) = &self.shutdown {
            shutdown.trigger();
        }
        drop(listener);
        let closed = tokio::time::timeout(self.drain, graceful.shutdown())
            .await
            .is_ok();
        Drained {
            still_open: if closed {
                0
            } else {
                self.max_connections - connections.available_permits()
            },
        }
    }
}

impl Server {
    /// Serves `service` on `addr` from `threads` threads, each with a listener of its own on
    /// the same address (`SO_REUSEPORT`: the kernel spreads the connections) and a
    /// single-threaded runtime of its own, as nginx runs one event loop per worker process;
    /// blocks until `stop` resolves and every thread has drained. The `Drained` counts the
    /// connections left open on all threads.
    ///
    /// Against [`serve`](Server::serve) on tokio's multi-threaded runtime: no task moves
    /// between threads (no work stealing), and a connection's tasks stay on the thread that
    /// accepted it; a thread that gets more work than the other does not share it. `stop` runs
    /// on a runtime of its own on the calling thread, which also runs what `spawn` hands it
    /// (background tasks such as a stats publisher).
    ///
    /// # Errors
    ///
    /// When a runtime cannot be built or `addr` cannot be bound.
    #[cfg(unix)]
    pub fn serve_per_thread<S: HttpService>(
        self,
        addr: std::net::SocketAddr,
        threads: usize,
        service: S,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<Drained> {
        let threads = threads.max(1);
        let stopping = Shutdown::new();
        let mut listeners = Vec::with_capacity(threads);
        let mut addr = addr;
        for _ in 0..threads {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            // Port 0: the first listener's port, for every other.
            addr = socket.local_addr()?;
            listeners.push(socket);
        }
        let handles: Vec<_> = listeners
            .into_iter()
            .map(|socket| {
                let (server, service, stopping) = (self.clone(), service.clone(), stopping.clone());
                std::thread::spawn(move || -> std::io::Result<Drained> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .event_interval(EVENT_INTERVAL)
                        .build()?;
                    runtime.block_on(async move {
                        let listener = socket.listen(1024)?;
                        Ok(server.serve(listener, service, stopping.wait()).await)
                    })
                })
            })
            .collect();
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        main.block_on(stop);
        stopping.trigger();
        let mut still_open = 0;
        for handle in handles {
            match handle.join() {
                Ok(drained) => still_open += drained?.still_open,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(Drained { still_open })
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("header_read_timeout", &self.header_read)
            .field("body_read_timeout", &self.body_read)
            .field("write_stall_timeout", &self.write_stall)
            .field("drain_timeout", &self.drain)
            .field("max_connections", &self.max_connections)
            .field("max_body_reads", &self.max_body_reads)
            .field("http2_max_concurrent_streams", &self.http2_max_streams)
            .field("shutdown", &self.shutdown.is_some())
            .field("close_in_background", &self.close_in_background)
            .finish()
    }
}

/// How the drain after [`Server::serve`]'s stop signal ended; its `Display` says it in a line
/// for the operator.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn run(listener: tokio::net::TcpListener, app: axum::Router) {
/// use tower_push::server::{self, Server};
///
/// let drained = Server::new().serve(listener, app, server::ctrl_c_or_sigterm()).await;
/// eprintln!("stopped: {drained}"); // "all connections closed", or how many were cut
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "tell the operator when connections were cut by the drain deadline"]
pub struct Drained {
    still_open: usize,
}

impl Drained {
    /// Whether every connection closed within the drain timeout.
    pub fn is_complete(&self) -> bool {
        self.still_open == 0
    }

    /// How many connections were still open when the drain timeout passed.
    pub fn still_open(&self) -> usize {
        self.still_open
    }
}

impl fmt::Display for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.still_open {
            0 => f.write_str("all connections closed"),
            1 => f.write_str("1 connection still open after the drain timeout"),
            n => write!(f, "{n} connections still open after the drain timeout"),
        }
    }
}

/// Runs `connection` in a task of its own; with `in_background`, its remains go to the
/// closing thread when it ends ([`Server::close_in_background`]).
fn spawn_connection<F>(connection: F, in_background: bool)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if in_background {
        drop(tokio::spawn(CloseInBackground::new(connection)));
    } else {
        drop(tokio::spawn(connection));
    }
}

/// The next connection and its place under `max_connections`. Waits for a place first, so that
/// the process never holds more connections than the cap. When accepting fails (out of file
/// descriptors, say), waits before trying again, 100 ms and then twice as long each time up to
/// 1 s, with one log line per wait, rather than failing again at once in a busy loop.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> (TcpStream, tokio::sync::OwnedSemaphorePermit) {
    let place = connections
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.accept().await {
            Ok((socket, _)) => return (socket, place),
            Err(err) => {
                tracing::warn!("accept failed: {err}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
