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

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use clap::{error::ErrorKind, Parser};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::{conn::auto, graceful::GracefulShutdown};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_push::memory::Topic;
use tower_push::{ChunkedStreamLayer, EventData, LongPollLayer, MemoryLog, PushBody, Shutdown};

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
    let routes = Routes {
        topic: MemoryLog::new().topic("default"),
        poll: LongPollLayer::builder()
            .shutdown(shutdown.clone())
            .build()?,
        stream: ChunkedStreamLayer::builder()
            .shutdown(shutdown.clone())
            .build()?,
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
    if !serve(listener, routes, stop).await {
        eprintln!("some connections were still open after the drain deadline");
    }
    Ok(())
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

impl Routes {
    /// Answers one request. The layers never fail (their error is `Infallible`), and neither
    /// does this.
    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<PushBody>, Infallible> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/poll") => self.poll.layer(self.topic).oneshot(req).await,
            (&Method::GET, "/stream") => self.stream.layer(self.topic).oneshot(req).await,
            (&Method::POST, "/publish") => Ok(publish(&self.topic, req.into_body()).await),
            (_, "/poll" | "/stream" | "/publish") => Ok(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET /poll, GET /stream or POST /publish",
            )),
            _ => Ok(error(StatusCode::NOT_FOUND, "not_found", "no such route")),
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

/// Serves `routes` until `stop` resolves, then lets open connections finish: whether they all
/// closed within ten seconds.
pub async fn serve(listener: TcpListener, routes: Routes, stop: impl Future<Output = ()>) -> bool {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // Out of file descriptors, say: give open connections a moment to close.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Without TCP_NODELAY a small write waits for the ACK of the one before (Nagle's
        // algorithm), and a pushed event can sit in the kernel for up to 40 ms. hyper has no
        // server switch for it, so it is set on each accepted socket.
        let _ = socket.set_nodelay(true);
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |req| routes.clone().handle(req));
        let connection = builder.serve_connection(TokioIo::new(socket), service);
        tokio::spawn(graceful.watch(connection.into_owned()));
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .is_ok()
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
