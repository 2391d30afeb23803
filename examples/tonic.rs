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
//! Ctrl-C or SIGTERM answers held polls, ends streams, and exits once the connections close.

use std::future::Future;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::{error::ErrorKind, Parser};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};
use tower::ServiceExt;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog, Shutdown};

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
    let poll = LongPollLayer::builder()
        .shutdown(shutdown.clone())
        .build()?;
    let stream = ChunkedStreamLayer::builder()
        .shutdown(shutdown.clone())
        .build()?;
    let router = router(&MemoryLog::new(), poll, stream);
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
    serve(listener, router, stop).await?;
    Ok(())
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
    // Names come from clients, and topics live as long as the log: keep them short and plain.
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !(1..=64).contains(&name.len()) || !name.bytes().all(valid) {
        let message = "a topic is 1 to 64 of A-Z a-z 0-9 _ -";
        return error(StatusCode::BAD_REQUEST, "invalid_topic", message);
    }
    publish(&push.log.topic(&name), body)
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

/// Serves `router` beside the gRPC health service until `stop` resolves, then waits for open
/// connections to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // The whole server (the service "") starts out serving; the reporter can change that.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::from(router).add_service(health);
    // tonic sets TCP_NODELAY on the sockets it accepts by default; say so, since a pushed event
    // can otherwise sit in the kernel for up to 40 ms (Nagle's algorithm).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        // The push routes are plain HTTP: let HTTP/1.1 clients in too.
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
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
