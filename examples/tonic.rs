//! A real gRPC service (the standard health service, `tonic-health`) and the axum `Router` of
//! the `axum` example on one port, served by tonic. gRPC needs HTTP/2; the push routes answer
//! HTTP/1.1 too.
//!
//! ```text
//! cargo run --example tonic -- --addr 127.0.0.1:3000
//! grpcurl -plaintext localhost:3000 grpc.health.v1.Health/Check
//! curl -d '{"text":"hi"}' localhost:3000/topics/chat/publish     # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/topics/chat/poll?after=<epoch>-0'      # 200 with the event
//! curl -N localhost:3000/stream                                  # NDJSON, topic `default`
//! ```
//!
//! Publishing creates a topic, up to 1,000 of them. Ctrl-C or SIGTERM answers held polls, ends
//! streams, and exits once the connections close, or after ten seconds.
//!
//! Against slow, stalled or greedy clients it sets a first-byte and a write-progress timeout,
//! caps on held polls, open streams and topics, a limit of concurrent HTTP/2 streams per
//! connection, and a back-off when accepting fails: see [`Deadlines`], [`layers`], [`log`] and
//! [`serve`]. tonic itself closes a connection whose request head takes longer than 30 s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::{error::ErrorKind, Parser};
use futures_util::Stream;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::Server;
use tower::ServiceExt;
use tower_push::io::WriteTimeout;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, ConfigError, EventData, LongPollLayer, MemoryLog, Shutdown};

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc, measured with 10,000 of them (BENCHMARKS.md, "What the connection stack
// costs"). Most of a parked HTTP/1.1 connection is hyper's 8 KiB read buffer, of which a poll's
// request uses a few hundred bytes; jemalloc leaves the pages nobody wrote to out of memory.
// (Not when the tests include this file: a program has one allocator.)
#[cfg(all(not(test), not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// gRPC, long polling and streaming with tonic.
#[derive(Parser)]
struct Args {
    /// Where to listen; HOST may be a name such as `localhost`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3000")]
    addr: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let shutdown = Shutdown::new();
    let (poll, stream) = layers(&shutdown, open_files())?;
    let router = router(&log()?, poll, stream);
    let listener = TcpListener::bind(&args.addr).await.unwrap_or_else(|err| {
        let message = format!("cannot listen on {}: {err}\n", args.addr);
        clap::Error::raw(ErrorKind::Io, message).exit()
    });
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.wait();
    tokio::spawn(async move {
        ctrl_c_or_sigterm().await;
        // Held polls answer and streams end now, so that their connections can close.
        shutdown.trigger();
    });
    if !serve(listener, router, stop, Deadlines::default()).await? {
        eprintln!("some connections were still open after the drain deadline");
    }
    Ok(())
}

/// The soft limit on open files of this process, which bounds its connections; 1024, the usual
/// default, where it cannot be read.
fn open_files() -> u64 {
    #[cfg(unix)]
    let limit = rlimit::Resource::NOFILE.get_soft().ok();
    #[cfg(not(unix))]
    let limit = None;
    limit.unwrap_or(1024)
}

/// Both layers, drained by `shutdown`, with caps for a process that may open `open_files` files.
///
/// A parked poll or an open stream over HTTP/1.1 keeps its connection, and so a file descriptor:
/// each kind may take a quarter of them (256 each under the usual limit of 1024), and the other
/// half is left for requests that answer at once, gRPC calls, publishers and the listener.
/// Beyond a cap a request is answered `503 overloaded` with a `Retry-After`, instead of the
/// server running out of descriptors and failing to accept anyone.
pub fn layers(
    shutdown: &Shutdown,
    open_files: u64,
) -> Result<(LongPollLayer, ChunkedStreamLayer), ConfigError> {
    let cap = usize::try_from(open_files / 4).unwrap_or(usize::MAX);
    let poll = LongPollLayer::builder()
        .max_parked(cap)
        .shutdown(shutdown.clone())
        .build()?;
    let stream = ChunkedStreamLayer::builder()
        .max_streams(cap)
        .shutdown(shutdown.clone())
        .build()?;
    Ok((poll, stream))
}

/// The log, whose topic names come from clients: at most 1,000 topics (each costs about 200
/// bytes and its retained events), so that a client publishing to ever new names cannot grow it
/// without bound. A topic nobody polls, streams or holds events in is dropped to make room, and
/// events expire after 10 minutes so that abandoned topics free their places (a client away for
/// longer resumes with a resync answer).
pub fn log() -> Result<MemoryLog, ConfigError> {
    MemoryLog::builder()
        .max_topics(1_000)
        .max_age(Duration::from_secs(600))
        .build()
}

/// What the per-topic handlers share.
#[derive(Clone)]
struct Push {
    log: MemoryLog,
    poll: LongPollLayer,
    stream: ChunkedStreamLayer,
}

/// `GET /poll`, `GET /stream` and `POST /publish` on the topic `default`, and the same three
/// under `/topics/{topic}/`. A published event is at most 64 KiB.
pub fn router(log: &MemoryLog, poll: LongPollLayer, stream: ChunkedStreamLayer) -> Router {
    let default = log.topic("default");
    let push = Push {
        log: log.clone(),
        poll: poll.clone(),
        stream: stream.clone(),
    };
    Router::new()
        // The layered services are tower services: `route_service` takes them as they are.
        .route_service("/poll", poll.layer(default.clone()))
        .route_service("/stream", stream.layer(default.clone()))
        .route(
            "/publish",
            post(|body: Bytes| async move { publish(&default, body) }),
        )
        .route("/topics/{topic}/poll", get(poll_topic))
        .route("/topics/{topic}/stream", get(stream_topic))
        .route("/topics/{topic}/publish", post(publish_topic))
        // A JSON body for a method a route does not take; axum adds the `Allow` header.
        .method_not_allowed_fallback(|| async {
            let message = "this route does not take that method: see the Allow header";
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
        })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(push)
}

/// A topic named in the path that exists: polling or streaming never creates one.
struct Found(Topic);

impl FromRequestParts<Push> for Found {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, push: &Push) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, push)
            .await
            .map_err(IntoResponse::into_response)?;
        push.log.find_topic(&name).map(Found).ok_or_else(|| {
            let message = format!("no topic named {name:?}: publish to it first");
            error(StatusCode::NOT_FOUND, "topic_not_found", &message)
        })
    }
}

async fn poll_topic(State(push): State<Push>, Found(topic): Found, req: Request) -> Response {
    push.poll.layer(topic).oneshot(req).await.into_response()
}

async fn stream_topic(State(push): State<Push>, Found(topic): Found, req: Request) -> Response {
    push.stream.layer(topic).oneshot(req).await.into_response()
}

async fn publish_topic(
    State(push): State<Push>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    // Names come from clients: keep them short and plain, and their number bounded (`log`).
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !(1..=64).contains(&name.len()) || !name.bytes().all(valid) {
        let message = "a topic is 1 to 64 of A-Z a-z 0-9 _ -";
        return error(StatusCode::BAD_REQUEST, "invalid_topic", message);
    }
    match push.log.try_topic(&name) {
        Ok(topic) => publish(&topic, body),
        Err(full) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_topics",
            &full.to_string(),
        ),
    }
}

/// Publishes one event's JSON data: `{"id":"<cursor>"}`.
fn publish(topic: &Topic, body: Bytes) -> Response {
    match EventData::from_json(body) {
        Ok(data) => Json(json!({ "id": topic.publish(data) })).into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
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
    let server = Server::builder()
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
        served = server => served.map(|()| true),
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

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
async fn ctrl_c_or_sigterm() {
    #[cfg(unix)]
    let sigterm = async {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .expect("a SIGTERM handler")
            .recv()
            .await
    };
    #[cfg(not(unix))]
    let sigterm = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}
