//! The demo's routes on Redis Streams: run two copies on two ports against one Redis and they
//! serve one feed. A client may send each poll to either; an event published through one
//! arrives through both.
//!
//! ```text
//! cargo run --features redis --example redis -- [--addr 127.0.0.1:3000]
//!     [--redis redis://127.0.0.1:6379] [--hold-ms 25000] [--retention 10000]
//!     [--heartbeat-ms 15000] [--max-stream-ms 300000]
//! ```
//!
//! Routes:
//! - `GET /poll[?after=<cursor>]`: long poll on the default topic.
//! - `GET /stream[?after=<cursor>]`: a stream of the default topic, SSE when the request accepts
//!   `text/event-stream`, NDJSON otherwise; resumes from `Last-Event-ID` too.
//! - `POST /publish`: the body is one event's JSON data; answers `{"id":"<cursor>"}`.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully: held polls answer at once, streams end with a
//! final message, and the process exits once every connection has closed (or after a drain
//! window of 10 seconds).
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

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{Layer, ServiceExt};
use tower_push::redis::{RedisSource, RedisTopic};
use tower_push::{ChunkedStream, ChunkedStreamLayer, EventData, LongPoll, LongPollLayer, Shutdown};

struct Args {
    addr: SocketAddr,
    redis: String,
    hold: Duration,
    retention: usize,
    heartbeat: Duration,
    max_stream: Duration,
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: redis [--addr HOST:PORT] [--redis URL] [--hold-ms MILLIS] [--retention EVENTS] \
         [--heartbeat-ms MILLIS] [--max-stream-ms MILLIS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: ([127, 0, 0, 1], 3000).into(),
        redis: "redis://127.0.0.1:6379".to_owned(),
        hold: Duration::from_secs(25),
        retention: 10_000,
        heartbeat: Duration::from_secs(15),
        max_stream: Duration::from_secs(300),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--help" || flag == "-h" {
            usage("help requested");
        }
        let Some(value) = argv.next() else {
            usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--addr" => {
                args.addr = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--addr {value:?} is not HOST:PORT")));
            }
            "--redis" => args.redis = value,
            "--hold-ms" => args.hold = millis(&flag, &value),
            "--heartbeat-ms" => args.heartbeat = millis(&flag, &value),
            "--max-stream-ms" => args.max_stream = millis(&flag, &value),
            "--retention" => {
                args.retention = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--retention {value:?} is not a number")));
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    args
}

fn millis(flag: &str, value: &str) -> Duration {
    let ms: u64 = value
        .parse()
        .unwrap_or_else(|_| usage(&format!("{flag} {value:?} is not a number of milliseconds")));
    Duration::from_millis(ms)
}

#[path = "demo/app.rs"]
mod app;

use app::{error, json, Body};

#[derive(Clone)]
struct Demo {
    topic: RedisTopic,
    poll: LongPoll<RedisTopic>,
    stream: ChunkedStream<RedisTopic>,
}

impl Demo {
    async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/poll") => {
                let response = self.poll.oneshot(req).await.unwrap_or_else(|e| match e {});
                response.map(|body| body.boxed_unsync())
            }
            (&Method::GET, "/stream") => {
                let response = self
                    .stream
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|e| match e {});
                response.map(|body| body.boxed_unsync())
            }
            (&Method::POST, "/publish") => self.publish(req).await,
            (_, "/poll" | "/stream" | "/publish") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET /poll, GET /stream or POST /publish",
            ),
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }

    async fn publish(self, req: Request<Incoming>) -> Response<Body> {
        let body = match app::read_event(req).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        match EventData::from_json(body) {
            Ok(data) => match self.topic.publish(data).await {
                Ok(id) => json(StatusCode::OK, format!(r#"{{"id":"{id}"}}"#)),
                Err(err) => {
                    eprintln!("publish failed: {err}");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "source_unavailable",
                        "the event store is unavailable; retry later",
                    )
                }
            },
            Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let source = RedisSource::builder(args.redis.as_str())
        .retention(args.retention)
        .build()
        .await
        .unwrap_or_else(|err| {
            let cause = std::error::Error::source(&err).map(|cause| format!(": {cause}"));
            usage(&format!("{err}{}", cause.unwrap_or_default()))
        });
    let shutdown = Shutdown::new();
    let poll = LongPollLayer::builder()
        .hold_timeout(args.hold)
        .shutdown(shutdown.clone())
        .build()
        .unwrap_or_else(|err| usage(&err.to_string()));
    let stream = ChunkedStreamLayer::builder()
        .heartbeat_interval(args.heartbeat)
        .max_lifetime(args.max_stream)
        .shutdown(shutdown.clone())
        .build()
        .unwrap_or_else(|err| usage(&err.to_string()));
    let topic = source
        .topic("default")
        .unwrap_or_else(|err| usage(&err.to_string()));
    let demo = Demo {
        poll: poll.layer(topic.clone()),
        stream: stream.layer(topic.clone()),
        topic,
    };

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .unwrap_or_else(|err| usage(&format!("cannot listen on {}: {err}", args.addr)));
    println!(
        "tower-push redis demo listening on http://{} (feed on {})",
        listener.local_addr().expect("bound"),
        args.redis
    );
    let handle = move |req| demo.clone().handle(req);
    if app::serve_with(listener, handle, shutdown, app::ctrl_c_or_sigterm()).await {
        println!("all connections closed");
    } else {
        eprintln!(
            "drain window of {:?} passed; exiting anyway",
            app::DRAIN_WINDOW
        );
    }
}
