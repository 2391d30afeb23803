//! A real gRPC service (the standard health service, `tonic-health`) and push routes in an axum
//! `Router` on one port, served by tonic. gRPC needs HTTP/2; the push routes answer HTTP/1.1
//! too.
//!
//! ```text
//! cargo run --example tonic --features cli -- --addr 127.0.0.1:3000
//! grpcurl -plaintext localhost:3000 grpc.health.v1.Health/Check
//! curl -d '{"text":"hi"}' localhost:3000/publish     # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/poll?after=<epoch>-0'      # 200 with the event
//! curl -N localhost:3000/stream                      # NDJSON lines as events arrive
//! ```
//!
//! Ctrl-C or SIGTERM answers held polls, ends streams, and exits once the connections close, or
//! after ten seconds.
//!
//! tonic's server keeps its own serving loop rather than `tower_push::server::Server`: gRPC
//! services plug into tonic's `Routes` and its HTTP/2 settings, and tonic reads the first bytes
//! itself to tell HTTP/1 from HTTP/2. What it lacks for a push server is added here: a
//! first-byte and a write-progress deadline on each socket, a back-off when accepting fails,
//! a limit of concurrent HTTP/2 streams per connection and a drain deadline ([`Deadlines`],
//! [`serve`]). tonic itself closes a connection whose request head takes longer than 30 s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use clap::Parser;
use futures_util::Stream;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::Server;
use tower_push::io::WriteTimeout;
use tower_push::server;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog, Shutdown};

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc (BENCHMARKS.md, "What the connection stack costs").
// (Not when the tests include this file: a program has one allocator.)
#[cfg(all(not(test), not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// gRPC, long polling and streaming with tonic.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    flags: server::Flags,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    server::runtime().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    // Each held request over HTTP/1.1 keeps a file descriptor: by default a quarter of the
    // open-files limit each for polls and streams, beyond which they are answered `503
    // overloaded`.
    let max_held = args.flags.max_held();
    let topic = MemoryLog::new().topic("default");
    let (poll, stream) = (LongPollLayer::builder(), ChunkedStreamLayer::builder());
    let (poll, stream) = server::held_layers(poll, stream, max_held, &shutdown)?;
    let publish_to = topic.clone();
    let router = Router::new()
        .route_service("/poll", poll.layer(topic.clone()))
        .route_service("/stream", stream.layer(topic))
        .route(
            "/publish",
            post(|body: Bytes| async move {
                match EventData::from_json(body) {
                    Ok(data) => Ok(Json(serde_json::json!({ "id": publish_to.publish(data) }))),
                    Err(err) => Err((StatusCode::BAD_REQUEST, err.to_string())),
                }
            }),
        );
    let listener = args.flags.listen().await;
    let stop = shutdown.wait();
    tokio::spawn(async move {
        server::ctrl_c_or_sigterm().await;
        // Held polls answer and streams end now, so that their connections can close.
        shutdown.trigger();
    });
    if !serve(listener, router, stop, Deadlines::default()).await? {
        eprintln!("some connections were still open after the drain deadline");
    }
    Ok(())
}

/// How long [`serve`] waits on a client; `Deadlines::default()` is what `main` uses.
///
/// There is no header-read timeout to set: tonic enables hyper's, at its default of 30 s, and
/// offers no setting for it. A slowloris client, which sends its head a byte at a time or stops
/// halfway, is closed after those 30 s.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// How long a client may take to send its first byte. tonic reads the first bytes to tell
    /// HTTP/1 from HTTP/2 before hyper's header-read timeout starts, and would wait for them
    /// forever. 10 s: a real client sends its request as soon as it connects.
    pub first_byte: Duration,
    /// How long a write may make no progress: a client that stopped reading would otherwise
    /// keep the answer or frames waiting for it in memory. 30 s: longer than the stalls of a
    /// client that still reads; parked polls and quiet streams write nothing and are never cut.
    pub write: Duration,
    /// How long open connections get to close once `stop` resolves: 10 s, enough to write the
    /// answered polls and ended streams, and well within the 30 s an orchestrator usually waits
    /// between SIGTERM and SIGKILL. tonic itself waits for as long as connections stay open.
    pub drain: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            first_byte: Duration::from_secs(10),
            write: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}

/// Serves `router` beside the gRPC health service until `stop` resolves, then lets open
/// connections finish: whether they all closed within the drain deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send,
    deadlines: Deadlines,
) -> Result<bool, tonic::transport::Error> {
    // The whole server (the service "") starts out serving; the reporter can change that.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::from(router).add_service(health);
    // tonic waits for as long as connections stay open; the drain deadline starts when `stop`,
    // which tonic awaits, resolves.
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let stop = async move {
        stop.await;
        let _ = stopping.send(());
    };
    let tonic = Server::builder()
        // The push routes are plain HTTP: let HTTP/1.1 clients in too.
        .accept_http1(true)
        // An HTTP/2 client multiplexes its polls, streams and calls over one connection: at
        // most 100 at a time (tonic sets no limit), so that one connection cannot take a large
        // share of the caps of the layers. Not `concurrency_limit_per_connection`, which queues
        // the requests beyond its limit rather than refusing them.
        .max_concurrent_streams(100)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener, deadlines), stop);
    let deadline = async {
        match stopped.await {
            Ok(()) => tokio::time::sleep(deadlines.drain).await,
            // tonic dropped `stop` unresolved: it returned.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = tonic => served.map(|()| true),
        () = deadline => Ok(false),
    }
}

/// The accepted connections, with TCP_NODELAY and the first-byte and write deadlines.
///
/// tonic's own `TcpIncoming` cannot wrap its sockets, and tonic tries again at once when
/// accepting fails. This stream waits instead: 100 ms and then twice as long each time up to
/// 1 s, with one log line per wait, for open connections to close (out of file descriptors,
/// say), rather than failing again in a busy loop.
fn incoming(
    listener: TcpListener,
    deadlines: Deadlines,
) -> impl Stream<Item = io::Result<Connection>> {
    futures_util::stream::unfold(listener, move |listener| async move {
        let mut backoff = Duration::from_millis(100);
        let socket = loop {
            match listener.accept().await {
                Ok((socket, _)) => break socket,
                Err(err) => {
                    eprintln!("accept failed: {err}; trying again in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        // Without TCP_NODELAY a small write waits for the ACK of the one before (Nagle's
        // algorithm), and a pushed event can sit in the kernel for up to 40 ms.
        let _ = socket.set_nodelay(true);
        let connection = Connection {
            io: WriteTimeout::new(socket, deadlines.write),
            first_byte: Some(Box::pin(tokio::time::sleep(deadlines.first_byte))),
        };
        Some((Ok(connection), listener))
    })
}

/// An accepted socket whose writes time out when they make no progress, and whose reads fail
/// when the first byte is late. tonic needs its `Connected` trait on what it serves, and neither
/// the trait nor `WriteTimeout` is this program's: hence this wrapper.
struct Connection {
    io: WriteTimeout<TcpStream>,
    /// When the client's first byte must have arrived, until it has.
    first_byte: Option<Pin<Box<Sleep>>>,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.get_ref().connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if polled.is_ready() {
            self.first_byte = None;
        } else if let Some(deadline) = &mut self.first_byte {
            if deadline.as_mut().poll(cx).is_ready() {
                let late = "no request from the client in time";
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, late)));
            }
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
