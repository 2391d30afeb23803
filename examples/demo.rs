//! The tower-push demo: long polling on the embedded in-memory log, served by hyper.
//!
//! ```text
//! cargo run --example demo -- [--addr 127.0.0.1:3000] [--hold-ms 25000] [--retention 1024]
//! ```
//!
//! Routes:
//! - `GET /poll[?after=<cursor>]`: long poll on the default topic.
//! - `POST /publish`: the body is one event's JSON data; answers `{"id":"<cursor>"}`.
//!
//! Try it:
//!
//! ```text
//! curl -i localhost:3000/poll                       # waits, then 204 with Push-Cursor
//! curl -d '{"text":"hi"}' localhost:3000/publish    # {"id":"…-1"}
//! curl -i 'localhost:3000/poll?after=<Push-Cursor>' # 200 with the event
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tower::{Layer, ServiceExt};
use tower_push::{EventData, LongPoll, LongPollLayer, MemoryLog, Topic};

/// The largest event a client may publish.
const MAX_EVENT_BYTES: usize = 64 * 1024;

struct Args {
    addr: SocketAddr,
    hold: Duration,
    retention: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!("usage: demo [--addr HOST:PORT] [--hold-ms MILLIS] [--retention EVENTS]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: ([127, 0, 0, 1], 3000).into(),
        hold: Duration::from_secs(25),
        retention: 1024,
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
            "--hold-ms" => {
                let ms: u64 = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--hold-ms {value:?} is not a number")));
                args.hold = Duration::from_millis(ms);
            }
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

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone)]
struct Demo {
    topic: Topic,
    poll: LongPoll<Topic>,
}

impl Demo {
    async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/poll") => {
                let response = self.poll.oneshot(req).await.unwrap_or_else(|e| match e {});
                response.map(|body| body.boxed_unsync())
            }
            (&Method::POST, "/publish") => self.publish(req).await,
            (_, "/poll" | "/publish") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET /poll or POST /publish",
            ),
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }

    async fn publish(self, req: Request<Incoming>) -> Response<Body> {
        let body = match Limited::new(req.into_body(), MAX_EVENT_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
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
            Ok(data) => {
                let id = self.topic.publish(data);
                json(StatusCode::OK, format!(r#"{{"id":"{id}"}}"#))
            }
            Err(err) => error(StatusCode::BAD_REQUEST, "invalid_json", &err.to_string()),
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::from(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message });
    json(status, body.to_string())
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let log = MemoryLog::builder()
        .retention(args.retention)
        .build()
        .unwrap_or_else(|err| usage(&err.to_string()));
    let layer = LongPollLayer::builder()
        .hold_timeout(args.hold)
        .build()
        .unwrap_or_else(|err| usage(&err.to_string()));
    let topic = log.topic("default");
    let demo = Demo {
        poll: layer.layer(topic.clone()),
        topic,
    };

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .unwrap_or_else(|err| usage(&format!("cannot listen on {}: {err}", args.addr)));
    println!(
        "tower-push demo listening on http://{} (epoch {})",
        listener.local_addr().expect("bound"),
        log.epoch()
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Nagle's algorithm would hold a small answer back until the previous segment is
        // acknowledged; push answers must leave at once.
        let _ = stream.set_nodelay(true);
        let demo = demo.clone();
        let service = hyper::service::service_fn(move |req| {
            let demo = demo.clone();
            async move { Ok::<_, Infallible>(demo.handle(req).await) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
