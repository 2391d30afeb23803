//! Long polling and streaming on one topic of the in-memory log, served by plain hyper with
//! hyper-util's `auto` builder: HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
//!
//! ```text
//! cargo run --example hyper -- --addr 127.0.0.1:3000
//! curl -d '{"text":"hi"}' localhost:3000/publish             # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/poll?after=<epoch>-0'              # 200 with the event
//! curl -i 'localhost:3000/poll?after=<epoch>-1'              # held until the next event, or 204
//! curl -N --http2-prior-knowledge localhost:3000/stream      # NDJSON lines as events arrive
//! ```
//!
//! Ctrl-C or SIGTERM answers held polls, ends streams, and waits up to ten seconds for the
//! connections to close.
//!
//! Against slow, stalled or greedy clients it sets a header-read timeout, a write-progress
//! timeout, caps on held polls and open streams, a limit of concurrent HTTP/2 streams per
//! connection, and a back-off when accepting fails: see [`Deadlines`], [`layers`] and [`serve`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clap::{error::ErrorKind, Parser};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tower::ServiceExt;
use tower_push::io::{Protocol, WriteTimeout};
use tower_push::memory::Topic;
use tower_push::{
    ChunkedStreamLayer, ConfigError, EventData, LongPollLayer, MemoryLog, PushBody, Shutdown,
};

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc, measured with 10,000 of them (BENCHMARKS.md, "What the connection stack
// costs"). Most of a parked HTTP/1.1 connection is hyper's 8 KiB read buffer, of which a poll's
// request uses a few hundred bytes; jemalloc leaves the pages nobody wrote to out of memory.
// (Not when the tests include this file: a program has one allocator.)
#[cfg(all(not(test), not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The largest event a client may publish.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Long polling and streaming with plain hyper.
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
    let routes = Routes {
        topic: MemoryLog::new().topic("default"),
        poll,
        stream,
    };
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
    if !serve(listener, routes, stop, Deadlines::default()).await {
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

/// `GET /poll`, `GET /stream` and `POST /publish` on one topic.
#[derive(Clone, Debug)]
pub struct Routes {
    /// The topic the routes serve.
    pub topic: Topic,
    /// The long-poll settings.
    pub poll: LongPollLayer,
    /// The stream settings.
    pub stream: ChunkedStreamLayer,
}

/// The future of one answer.
pub type Answer = Pin<Box<dyn Future<Output = Result<Response<PushBody>, Infallible>> + Send>>;

impl Routes {
    /// Answers one request. The layers never fail (their error is `Infallible`), and neither
    /// does this. The route is chosen before the answer's future is made, so that the future
    /// holds only what its route needs: hyper keeps it for as long as the request lasts, which
    /// for a held poll or an open stream is minutes.
    pub fn handle(&self, req: Request<Incoming>) -> Answer {
        let ready = |response| -> Answer { Box::pin(std::future::ready(Ok(response))) };
        match (req.method(), req.uri().path()) {
            // Any method: the layers answer GET and HEAD, and 405 with `Allow` otherwise.
            (_, "/poll") => Box::pin(self.poll.layer(self.topic.clone()).oneshot(req)),
            (_, "/stream") => Box::pin(self.stream.layer(self.topic.clone()).oneshot(req)),
            (&Method::POST, "/publish") => {
                let topic = self.topic.clone();
                Box::pin(async move { Ok(publish(&topic, req.into_body()).await) })
            }
            (_, "/publish") => {
                let message = "use POST /publish";
                let mut refused = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    message,
                );
                let allow = http::HeaderValue::from_static("POST");
                refused.headers_mut().insert(header::ALLOW, allow);
                ready(refused)
            }
            _ => ready(error(StatusCode::NOT_FOUND, "not_found", "no such route")),
        }
    }
}

/// Publishes a body of at most [`MAX_EVENT_BYTES`], one event's JSON data: `{"id":"<cursor>"}`.
async fn publish(topic: &Topic, body: Incoming) -> Response<PushBody> {
    let body = match Limited::new(body, MAX_EVENT_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            let message = format!("an event is at most {MAX_EVENT_BYTES} bytes");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", &message);
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body_error",
                "could not read the body",
            )
        }
    };
    match EventData::from_json(body) {
        Ok(data) => json(
            StatusCode::OK,
            serde_json::json!({ "id": topic.publish(data) }),
        ),
        Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<PushBody> {
    json(
        status,
        serde_json::json!({ "error": code, "message": message }),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<PushBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(PushBody::full(body.to_string()))
        .expect("a valid response")
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

/// Serves `routes` until `stop` resolves, then lets open connections finish: whether they all
/// closed within the drain deadline.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    stop: impl Future<Output = ()>,
    deadlines: Deadlines,
) -> bool {
    // hyper's own builder for each protocol, chosen from the connection's first bytes: leaner
    // than hyper-util's `auto` builder, which copies them into a buffer of its own.
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
        // algorithm), and a pushed event can sit in the kernel for up to 40 ms. hyper has no
        // server switch for it, so it is set on each accepted socket.
        let _ = socket.set_nodelay(true);
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |req| routes.handle(req));
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
