//! Long polling and streaming on Redis Streams: run two copies on two ports against one Redis
//! and they serve one feed. A client may send each poll to either; an event published through
//! one arrives through both.
//!
//! ```text
//! cargo run --features redis,cli --example redis -- [--addr 127.0.0.1:3000]
//!     [--redis redis://127.0.0.1:6379] [--hold-ms 25000] [--retention 1024]
//! ```
//!
//! Routes, on the topic `default`:
//! - `GET /poll[?after=<cursor>]`: long poll.
//! - `GET /stream[?after=<cursor>]`: a stream, SSE when the request accepts
//!   `text/event-stream`, NDJSON otherwise; resumes from `Last-Event-ID` too.
//! - `POST /publish`: the body is one event's JSON data; answers `{"id":"<cursor>"}`.
//!
//! When Redis is unreachable, publishing answers `503` and so do polls that need Redis; the
//! server reconnects by itself. Ctrl-C or SIGTERM answers held polls, ends streams, and waits
//! up to ten seconds for the connections to close; `tower_push::server::Server` cuts slow and
//! stalled clients, as in the demo.
//!
//! Try it, with a Redis 7 on the default port:
//!
//! ```text
//! cargo run --features redis,cli --example redis -- --addr 127.0.0.1:3000 &
//! cargo run --features redis,cli --example redis -- --addr 127.0.0.1:3001 &
//! curl -N localhost:3001/stream                     # NDJSON lines as events arrive
//! curl -d '{"text":"hi"}' localhost:3000/publish    # {"id":"…-1"}, shows up on :3001
//! curl -i 'localhost:3001/poll?after=<id>'          # waits on :3001 for the next event
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clap::{error::ErrorKind, Parser};
use http::{header, Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_push::redis::{RedisSource, RedisTopic};
use tower_push::server::{self, Server};
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, PushBody, Shutdown};

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc (BENCHMARKS.md, "What the connection stack costs").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The largest event a client may publish.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Long polling and streaming on Redis Streams: several of these processes serve one feed.
#[derive(Parser)]
#[command(name = "redis")]
struct Args {
    #[command(flatten)]
    serve: server::Flags,
    /// The Redis server that holds the feed
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// How long a poll without events is held before it answers 204, in milliseconds
    #[arg(long, value_name = "MILLIS", default_value_t = 25_000)]
    hold_ms: u64,
    /// How many events Redis keeps per topic (`MAXLEN ~`)
    #[arg(long, value_name = "EVENTS", default_value_t = 1024)]
    retention: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    server::runtime().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let exit = |problem: String| -> ! { clap::Error::raw(ErrorKind::Io, problem + "\n").exit() };
    let source = RedisSource::builder(args.redis.as_str())
        .retention(args.retention)
        .build()
        .await
        .unwrap_or_else(|err| {
            let cause = std::error::Error::source(&err).map(|cause| format!(": {cause}"));
            exit(format!("{err}{}", cause.unwrap_or_default()))
        });
    let topic = source.topic("default")?;
    let shutdown = Shutdown::new();
    let max_held = args.serve.max_held();
    let poll = LongPollLayer::builder()
        .hold_timeout(Duration::from_millis(args.hold_ms))
        .max_held(max_held)
        .shutdown(shutdown.clone())
        .build()?
        .layer(topic.clone());
    let stream = ChunkedStreamLayer::builder()
        .max_held(max_held)
        .shutdown(shutdown.clone())
        .build()?
        .layer(topic.clone());

    println!("tower-push redis example, the feed on {}", args.redis);
    // The routes, chosen before the answer's future is made, so that a held poll's future holds
    // only its layer's.
    let service = tower::service_fn(move |req: Request<server::Body>| {
        let answer: Answer = match (req.method(), req.uri().path()) {
            (_, "/poll") => Box::pin(poll.clone().oneshot(req)),
            (_, "/stream") => Box::pin(stream.clone().oneshot(req)),
            (&Method::POST, "/publish") => Box::pin(publish(topic.clone(), req)),
            _ => {
                let refused = error(StatusCode::NOT_FOUND, "not_found", "no such route");
                Box::pin(std::future::ready(Ok(refused)))
            }
        };
        answer
    });
    args.serve
        .serve(Server::new().shutdown(shutdown), service)
        .await;
    Ok(())
}

/// The future of one answer.
type Answer = Pin<Box<dyn Future<Output = Result<Response<PushBody>, Infallible>> + Send>>;

/// Publishes one event's JSON data through Redis: `{"id":"<cursor>"}`, `400 invalid_json`, or
/// `503` while Redis is unreachable.
async fn publish(
    topic: RedisTopic,
    req: Request<server::Body>,
) -> Result<Response<PushBody>, Infallible> {
    let body = match req.into_body().collect_at_most(MAX_EVENT_BYTES).await {
        Ok(body) => body,
        Err(err) => return Ok(error(err.status(), err.code(), &err.to_string())),
    };
    let data = match EventData::from_json(body) {
        Ok(data) => data,
        Err(err) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &err.to_string(),
            ))
        }
    };
    Ok(match topic.publish(data).await {
        Ok(id) => json(StatusCode::OK, serde_json::json!({ "id": id })),
        Err(err) => {
            eprintln!("publish failed: {err}");
            let message = "the event store is unavailable; retry later";
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "source_unavailable",
                message,
            )
        }
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<PushBody> {
    json(
        status,
        serde_json::json!({ "error": code, "message": message }),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<PushBody> {
    let mut response = Response::new(PushBody::full(body.to_string()));
    *response.status_mut() = status;
    let json = http::HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}
