//! The demo's routes on Redis Streams: run two copies on two ports against one Redis and they
//! serve one feed. A client may send each poll to either; an event published through one
//! arrives through both.
//!
//! ```text
//! cargo run --features redis --example redis -- [--addr 127.0.0.1:3000]
//!     [--redis redis://127.0.0.1:6379] [--hold-ms 25000] [--retention 1024]
//!     [--heartbeat-ms 15000] [--max-stream-ms 300000] [--sse-retry-ms 1000]
//! ```
//!
//! Routes (the demo's, from `demo/app.rs`):
//! - `GET /`: the demo page.
//! - `GET /poll[?after=<cursor>]`: long poll on the default topic.
//! - `GET /stream[?after=<cursor>]`: a stream of the default topic, SSE when the request accepts
//!   `text/event-stream`, NDJSON otherwise; resumes from `Last-Event-ID` too.
//! - `POST /publish`: the body is one event's JSON data; answers `{"id":"<cursor>"}`.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully: held polls answer at once, streams end with a
//! final message, and the process exits once every connection has closed (or after a drain
//! window of 10 seconds).
//!
//! Slow and stalled clients are cut off (a request head must arrive within 10 s, a write must
//! make progress within 30 s), and beyond a quarter of the open-files limit each, polls and
//! streams are answered `503 overloaded`: see `Settings` in `demo/app.rs`.
//!
//! When Redis is unreachable, publishing answers `503` and so do polls that need Redis; the
//! server reconnects by itself.
//!
//! Try it, with a Redis 7 on the default port:
//!
//! ```text
//! cargo run --features redis --example redis -- --addr 127.0.0.1:3000 &
//! cargo run --features redis --example redis -- --addr 127.0.0.1:3001 &
//! curl -N localhost:3001/stream                     # NDJSON lines as events arrive
//! curl -d '{"text":"hi"}' localhost:3000/publish    # {"id":"…-1"}, shows up on :3001
//! curl -i 'localhost:3001/poll?after=<id>'          # waits on :3001 for the next event
//! ```

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tower_push::redis::{RedisSource, RedisTopic};
use tower_push::{EventData, Shutdown};

#[path = "demo/app.rs"]
mod app;

use app::{error, exit_usage, json, Body};
use clap::Parser;

// Allocate with jemalloc: a parked poll then costs about 6 KiB of memory instead of 10 with
// glibc's malloc, measured with 10,000 of them (BENCHMARKS.md, "What the connection stack
// costs"). Most of a parked HTTP/1.1 connection is hyper's 8 KiB read buffer, of which a poll's
// request uses a few hundred bytes; jemalloc leaves the pages nobody wrote to out of memory.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The demo's routes on Redis Streams: several of these processes serve one feed.
#[derive(Parser)]
#[command(name = "redis")]
struct Cli {
    #[command(flatten)]
    flags: app::Flags,
    /// The Redis server that holds the feed
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

/// Publishes one event's JSON data through Redis: `{"id":"<cursor>"}`, `400 invalid_json`, or
/// `503` while Redis is unreachable.
async fn publish(topic: RedisTopic, body: bytes::Bytes) -> Response<Body> {
    let data = match EventData::from_json(body) {
        Ok(data) => data,
        Err(err) => return error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
    };
    match topic.publish(data).await {
        Ok(id) => json(StatusCode::OK, format!(r#"{{"id":"{id}"}}"#)),
        Err(err) => {
            eprintln!("publish failed: {err}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "source_unavailable",
                "the event store is unavailable; retry later",
            )
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let settings = cli.flags.settings();
    let (addr, url) = (&cli.flags.addr, cli.redis.as_str());
    let source = RedisSource::builder(url)
        .retention(settings.retention)
        .build()
        .await
        .unwrap_or_else(|err| {
            let cause = std::error::Error::source(&err).map(|cause| format!(": {cause}"));
            exit_usage::<Cli>(format!("{err}{}", cause.unwrap_or_default()))
        });
    let shutdown = Shutdown::new();
    let (poll, stream) =
        app::layers(&settings, &shutdown).unwrap_or_else(|err| exit_usage::<Cli>(err));
    let topic = source
        .topic("default")
        .unwrap_or_else(|err| exit_usage::<Cli>(err));
    let (poll, stream) = (poll.layer(topic.clone()), stream.layer(topic.clone()));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| exit_usage::<Cli>(format!("cannot listen on {addr}: {err}")));
    println!(
        "tower-push redis demo listening on http://{} (feed on {url})",
        listener.local_addr().expect("bound"),
    );
    let handle = move |req: Request<Incoming>| {
        let topic = topic.clone();
        app::route(req, &poll, &stream, move |body| publish(topic, body))
    };
    let stop = app::ctrl_c_or_sigterm();
    if app::serve_with(listener, handle, &settings, shutdown, stop).await {
        println!("all connections closed");
    } else {
        eprintln!(
            "drain window of {:?} passed; exiting anyway",
            settings.drain
        );
    }
}
