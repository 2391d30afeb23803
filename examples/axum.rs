//! Long polling and streaming in an axum `Router`: the layered services on `/poll` and `/stream`
//! for the topic `default`, and per-topic routes whose handlers layer the topic named in the
//! path. Publishing creates a topic, up to 1,000 of them; polling or streaming one that does
//! not exist is a `404`.
//!
//! ```text
//! cargo run --example axum -- --addr 127.0.0.1:3000
//! curl -d '{"text":"hi"}' localhost:3000/topics/chat/publish     # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/topics/chat/poll?after=<epoch>-0'      # 200 with the event
//! curl -N -H 'accept: text/event-stream' localhost:3000/topics/chat/stream
//! curl -N localhost:3000/stream                                  # NDJSON, topic `default`
//! ```
//!
//! Ctrl-C or SIGTERM answers held polls, ends streams, and exits once the connections close, or
//! after ten seconds.
//!
//! Against slow, stalled or greedy clients it sets a header-read timeout, a write-progress
//! timeout, caps on held polls, open streams and topics, a limit of concurrent HTTP/2 streams
//! per connection, and a back-off when accepting fails: see [`Deadlines`], [`layers`],
//! [`log`] and [`serve`].

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::{error::ErrorKind, Parser};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower::ServiceExt;
use tower_push::io::{Protocol, WriteTimeout};
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

/// Long polling and streaming with axum.
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
    if !serve(listener, router, stop, Deadlines::default()).await {
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
/// half is left for requests that answer at once, publishers and the listener. Beyond a cap a
/// request is answered `503 overloaded` with a `Retry-After`, instead of the server running out
/// of descriptors and failing to accept anyone.
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
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// How long a client may take to send a request head: a slowloris client, which sends its
    /// head a byte at a time or stops halfway, is closed then. 10 s: a real client sends its
    /// head at once, even on a slow network.
    pub header_read: Duration,
    /// How long a write may make no progress: a client that stopped reading would otherwise
    /// keep the answer or frames waiting for it in memory. 30 s: longer than the stalls of a
    /// client that still reads; parked polls and quiet streams write nothing and are never cut.
    pub write: Duration,
    /// How long open connections get to close once `stop` resolves: 10 s, enough to write the
    /// answered polls and ended streams, and well within the 30 s an orchestrator usually waits
    /// between SIGTERM and SIGKILL.
    pub drain: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            write: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}

/// Serves `router` until `stop` resolves, then lets open connections finish: whether they all
/// closed within the drain deadline.
///
/// `axum::serve` has no header-read timeout, no way to wrap the sockets it accepts (`tap_io`
/// only inspects them) and no drain deadline, so the router is served with hyper-util's `auto`
/// builder here, HTTP/1.1 and HTTP/2 on one port as `axum::serve` does.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    deadlines: Deadlines,
) -> bool {
    // hyper's own builder for each protocol, chosen from the connection's first bytes: leaner
    // than hyper-util's `auto` builder (which `axum::serve` uses), which copies them into a
    // buffer of its own.
    let mut h1 = http1::Builder::new();
    // hyper enforces the header-read timeout only with a timer.
    h1.timer(TokioTimer::new())
        .header_read_timeout(deadlines.header_read);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    // An HTTP/2 client multiplexes its polls and streams over one connection: at most 100 at a
    // time (hyper's default is 200), so that one connection cannot take a large share of the
    // caps of the layers.
    h2.timer(TokioTimer::new()).max_concurrent_streams(100);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let socket = tokio::select! {
            socket = accept(&listener) => socket,
            () = &mut stop => break,
        };
        // Without TCP_NODELAY a small write waits for the ACK of the one before (Nagle's
        // algorithm), and a pushed event can sit in the kernel for up to 40 ms.
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
        let (h1, h2, watcher) = (h1.clone(), h2.clone(), graceful.watcher());
        tokio::spawn(async move {
            // A client that sends nothing, or a part of HTTP/2's preface, within the header-read
            // timeout is closed here.
            let Some(protocol) = Protocol::sniff(&socket, deadlines.header_read).await else {
                return;
            };
            let io = TokioIo::new(WriteTimeout::new(socket, deadlines.write));
            // The connection gets a task of its own, which holds the connection and nothing
            // else, so that a parked poll does not also keep both builders, and an HTTP/1.1
            // connection is not made as large as an HTTP/2 one.
            match protocol {
                Protocol::Http2 => drop(tokio::spawn(
                    watcher.watch(h2.serve_connection(io, service)),
                )),
                _ => drop(tokio::spawn(
                    watcher.watch(h1.serve_connection(io, service)),
                )),
            }
        });
    }
    drop(listener);
    timeout(deadlines.drain, graceful.shutdown()).await.is_ok()
}

/// The next connection. When accepting fails (out of file descriptors, say), waits for open
/// connections to close before trying again, 100 ms and then twice as long each time up to 1 s,
/// with one log line per wait, rather than failing again at once in a busy loop.
async fn accept(listener: &TcpListener) -> TcpStream {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.accept().await {
            Ok((socket, _)) => return socket,
            Err(err) => {
                eprintln!("accept failed: {err}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
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
