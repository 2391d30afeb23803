//! What the `hyper`, `axum` and `tonic` examples share: the embedded log, both layers, the
//! demo's routes (`/poll`, `/stream`, `/publish`, from the demo's own `app.rs`), and one server
//! function per stack. The integration tests start the same stacks from this file.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request as AxumRequest, State};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, LongPollLayer, MemoryLog, Shutdown};

#[path = "../demo/app.rs"]
pub mod demo;

pub(crate) use self::demo::{ctrl_c_or_sigterm, serve as serve_hyper, Demo, Settings};

/// The largest event a client may publish.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The topic of the demo's routes.
pub const DEFAULT_TOPIC: &str = "default";

/// The `--addr` flag, the only one these examples take.
pub fn parse_addr() -> SocketAddr {
    let mut argv = std::env::args().skip(1);
    let mut addr: SocketAddr = ([127, 0, 0, 1], 3000).into();
    while let Some(flag) = argv.next() {
        match (flag.as_str(), argv.next()) {
            ("--addr", Some(value)) => match value.parse() {
                Ok(parsed) => addr = parsed,
                Err(_) => exit_usage(&format!("--addr {value:?} is not HOST:PORT")),
            },
            _ => exit_usage(&format!("unexpected argument {flag:?}")),
        }
    }
    addr
}

fn exit_usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: [--addr HOST:PORT]");
    std::process::exit(2)
}

/// The embedded log, both layers, and the shutdown signal they share.
#[derive(Clone, Debug)]
pub struct App {
    pub log: MemoryLog,
    pub poll: LongPollLayer,
    pub stream: ChunkedStreamLayer,
    pub shutdown: Shutdown,
}

impl App {
    /// The layers with their defaults, wired to one shutdown signal.
    pub fn new() -> Self {
        Self::with(LongPollLayer::builder(), ChunkedStreamLayer::builder())
    }

    /// The layers from the given builders, wired to one shutdown signal.
    pub fn with(
        poll: tower_push::LongPollBuilder,
        stream: tower_push::ChunkedStreamBuilder,
    ) -> Self {
        let shutdown = Shutdown::new();
        Self {
            log: MemoryLog::new(),
            poll: poll
                .shutdown(shutdown.clone())
                .build()
                .expect("valid settings"),
            stream: stream
                .shutdown(shutdown.clone())
                .build()
                .expect("valid settings"),
            shutdown,
        }
    }

    pub fn topic(&self) -> Topic {
        self.log.topic(DEFAULT_TOPIC)
    }

    /// The demo's routes on the default topic, plus `/topics/{topic}/{poll,stream,publish}`:
    /// state shared with the publish handler, topic from the path.
    pub fn router(&self) -> Router {
        let topic = self.topic();
        Router::new()
            // `route_service` takes the layered services as they are.
            .route_service("/poll", self.poll.layer(topic.clone()))
            .route_service("/stream", self.stream.layer(topic))
            .route("/publish", post(publish_default))
            .route("/topics/{topic}/poll", get(poll_topic))
            .route("/topics/{topic}/stream", get(stream_topic))
            .route("/topics/{topic}/publish", post(publish_topic))
            .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
            .with_state(self.clone())
    }
}

/// A topic name from a path: 1 to 64 of `A-Z a-z 0-9 _ -`.
fn valid_topic(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unknown_topic(name: &str) -> AxumResponse {
    let message = format!("no topic named {name:?}: publish to it first");
    demo::error(StatusCode::NOT_FOUND, "topic_not_found", &message).into_response()
}

async fn publish_default(State(app): State<App>, body: Bytes) -> AxumResponse {
    demo::publish_to(&app.topic(), body).into_response()
}

async fn publish_topic(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Bytes,
) -> AxumResponse {
    if !valid_topic(&name) {
        let message = "a topic is 1 to 64 of A-Z a-z 0-9 _ -";
        return demo::error(StatusCode::BAD_REQUEST, "invalid_topic", message).into_response();
    }
    // Publishing is what creates a topic; subscribing never does.
    demo::publish_to(&app.log.topic(&name), body).into_response()
}

async fn poll_topic(
    State(app): State<App>,
    Path(name): Path<String>,
    req: AxumRequest,
) -> AxumResponse {
    match app.log.find_topic(&name) {
        Some(topic) => app.poll.layer(topic).oneshot(req).await.into_response(),
        None => unknown_topic(&name),
    }
}

async fn stream_topic(
    State(app): State<App>,
    Path(name): Path<String>,
    req: AxumRequest,
) -> AxumResponse {
    match app.log.find_topic(&name) {
        Some(topic) => app.stream.layer(topic).oneshot(req).await.into_response(),
        None => unknown_topic(&name),
    }
}

/// Serves `router` with axum until `stop` resolves, then drains like [`serve_hyper`].
pub async fn serve_axum(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    use axum::serve::ListenerExt;
    // axum leaves Nagle's algorithm on; turn it off on every accepted socket so each push
    // message leaves at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let drain = async move {
        stop.await;
        // Held polls answer and streams end, so the graceful shutdown can finish.
        shutdown.trigger();
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(drain)
        .await
        .expect("axum server failed");
}

/// Serves `router` and a real gRPC service (tonic-health) on one port with tonic until `stop`
/// resolves. HTTP/1.1 is accepted too, so plain clients reach the push routes.
pub async fn serve_tonic(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let routes = tonic::service::Routes::from(router).add_service(health);
    // tonic's own listener sets TCP_NODELAY by default; say so explicitly, since push depends
    // on it.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let drain = async move {
        stop.await;
        shutdown.trigger();
    };
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drain)
        .await
        .expect("tonic server failed");
}
