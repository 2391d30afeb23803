//! Long polling and streaming on one topic of the in-memory log, routed by hand without a
//! framework and served by hyper through the crate's serving loop (feature `cli`, which includes
//! `server`): HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
//!
//! ```text
//! cargo run --example hyper --features cli -- --addr 127.0.0.1:3000
//! curl -d '{"text":"hi"}' localhost:3000/publish             # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/poll?after=<epoch>-0'              # 200 with the event
//! curl -i 'localhost:3000/poll?after=<epoch>-1'              # held until the next event, or 204
//! curl -N --http2-prior-knowledge localhost:3000/stream      # NDJSON lines as events arrive
//! ```
//!
//! Ctrl-C or SIGTERM answers held polls, ends streams, and waits up to ten seconds for the
//! connections to close.
//!
//! Slow, stalled and greedy clients meet the deadlines and caps of
//! `tower_push::server::Server` (a request head within 10 s, a body within 30 s, write progress
//! within 30 s, connections within the open-files limit), and the layers' caps on held polls
//! and open streams (`server::held_layers`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use clap::Parser;
use http::{header, Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_push::memory::Topic;
use tower_push::server::{self, Server};
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog, PushBody, Shutdown};

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
    #[command(flatten)]
    serve: server::Flags,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { serve } = Args::parse();
    server::runtime().build()?.block_on(async move {
        let shutdown = Shutdown::new();
        // Both layers hold at most `--max-held` requests each (beyond, `503 overloaded`), and
        // are drained by `shutdown`.
        let (poll, stream) = (LongPollLayer::builder(), ChunkedStreamLayer::builder());
        let (poll, stream) = server::held_layers(poll, stream, serve.max_held(), &shutdown)?;
        let topic = MemoryLog::new().topic("default");
        let routes = Routes {
            topic,
            poll,
            stream,
        };
        // The routes as a tower service: the server clones it for each connection. Ctrl-C or
        // SIGTERM: held polls answer and streams end, then connections close.
        let service = tower::service_fn(move |req| routes.handle(req));
        serve.serve(Server::new().shutdown(shutdown), service).await;
        Ok(())
    })
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
    pub fn handle(&self, req: Request<server::Body>) -> Answer {
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
async fn publish(topic: &Topic, body: server::Body) -> Response<PushBody> {
    let body = match body.collect_at_most(MAX_EVENT_BYTES).await {
        Ok(body) => body,
        Err(err) => return error(err.status(), err.code(), &err.to_string()),
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
