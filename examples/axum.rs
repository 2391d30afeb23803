//! Long polling and streaming in an axum `Router`: the layered services on `/poll` and `/stream`
//! for the topic `default`, and per-topic routes whose handlers layer the topic named in the
//! path. Publishing creates a topic, up to 1,000 of them; polling or streaming one that does
//! not exist is a `404`.
//!
//! ```text
//! cargo run --example axum --features cli -- --addr 127.0.0.1:3000
//! curl -d '{"text":"hi"}' localhost:3000/topics/chat/publish     # {"id":"<epoch>-1"}
//! curl -i 'localhost:3000/topics/chat/poll?after=<epoch>-0'      # 200 with the event
//! curl -N -H 'accept: text/event-stream' localhost:3000/topics/chat/stream
//! curl -N localhost:3000/stream                                  # NDJSON, topic `default`
//! ```
//!
//! Ctrl-C or SIGTERM answers held polls, ends streams, and exits once the connections close, or
//! after ten seconds.
//!
//! With `--jwt-secret SECRET`, every route needs a JSON Web Token signed with it (HS256) as
//! `Authorization: Bearer <token>`, whose claims name the topics it may read and publish:
//! `{"sub":"ada","topics":["default","chat"],"exp":<unix seconds>}` (`"*"` for every topic).
//! An authentication layer ([`authenticate`], `axum::middleware`) checks the signature and the
//! expiry and puts the [`Claims`] in the request's extensions; the layers' `authorize` check
//! ([`check`]) reads them for each topic, when a request comes and every 60 s while it is held,
//! so a stream ends when its token expires. Without a valid token: `401`; a topic the token
//! does not name answers as a topic that does not exist; a publish there, `403`.
//!
//! It is served by `tower_push::server::Server` rather than `axum::serve`, which has no
//! header-read, body-read or write-progress deadline, no cap on connections and no drain
//! deadline: slow, stalled and greedy clients meet those, and the caps on held polls, open
//! streams ([`layers`]) and topics ([`log`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::Parser;
use serde_json::json;
use tower::ServiceExt;
use tower_push::authorize::{Access, Check, Verdict};
use tower_push::memory::Topic;
use tower_push::server::{self, Server};
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
    #[command(flatten)]
    serve: server::Flags,
    /// Require a JSON Web Token signed with this secret (HS256) on every route; its `topics`
    /// claim names the topics it may read and publish.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    server::runtime().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    let max_held = args.serve.max_held();
    let router = match &args.jwt_secret {
        None => {
            let (poll, stream) = layers(&shutdown, max_held)?;
            router(&log()?, poll, stream)
        }
        Some(secret) => {
            let (poll, stream) = layers_checked(&shutdown, max_held)?;
            let jwt = Jwt::new(secret.as_bytes())?;
            router(&log()?, poll, stream)
                .layer(axum::middleware::from_fn_with_state(jwt, authenticate))
        }
    };
    // Ctrl-C or SIGTERM: held polls answer and streams end, then connections close.
    args.serve
        .serve(Server::new().shutdown(shutdown), router)
        .await;
    Ok(())
}

/// Both layers, drained by `shutdown`, each holding at most `max_held` requests (polls parked,
/// streams open): beyond, a request is answered `503 overloaded` with a `Retry-After`, instead
/// of the server running out of file descriptors (`server::held_cap`).
pub fn layers(
    shutdown: &Shutdown,
    max_held: usize,
) -> Result<(LongPollLayer, ChunkedStreamLayer), ConfigError> {
    let (poll, stream) = (LongPollLayer::builder(), ChunkedStreamLayer::builder());
    server::held_layers(poll, stream, max_held, shutdown)
}

/// [`layers`], each checking every request's topics with [`check`].
pub fn layers_checked(
    shutdown: &Shutdown,
    max_held: usize,
) -> Result<(LongPollLayer, ChunkedStreamLayer), ConfigError> {
    let poll = LongPollLayer::builder().authorize(check);
    let stream = ChunkedStreamLayer::builder().authorize(check);
    server::held_layers(poll, stream, max_held, shutdown)
}

/// What a valid token says: who it is, the topics it may read and publish (`"*"`: all), and
/// until when (seconds since the Unix epoch).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Who the token was given to.
    pub sub: String,
    /// The topics it may read and publish; `"*"` for all.
    pub topics: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub exp: u64,
}

/// The key tokens are checked with.
#[derive(Clone)]
pub struct Jwt(Arc<jsonwebtoken::DecodingKey>);

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("Jwt(..)")
    }
}

impl Jwt {
    /// The key of tokens signed with `secret` (HS256).
    pub fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let key = jsonwebtoken::DecodingKey::from_secret(secret)?;
        Ok(Self(Arc::new(key)))
    }

    /// The claims of the bearer token in `headers`, if its signature and expiry are valid.
    fn claims(&self, headers: &HeaderMap) -> Option<Claims> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        let data = jsonwebtoken::decode::<Claims>(token, &self.0, &validation).ok()?;
        Some(data.claims)
    }
}

/// The authentication layer: the claims of a valid token go into the request's extensions,
/// where [`check`] finds them; a request without stays as it is, and the check answers `401`.
pub async fn authenticate(State(jwt): State<Jwt>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Checked);
    if let Some(claims) = jwt.claims(req.headers()) {
        req.extensions_mut().insert(claims);
    }
    next.run(req).await
}

/// Marks a request that went through [`authenticate`]: the publish routes check it too.
#[derive(Clone, Copy, Debug)]
struct Checked;

/// The layers' check: the request's [`Claims`] must still be valid and name the topic (for the
/// routes on one topic, the one in the path, or `default`).
pub fn check(request: &Parts, topic: Option<&str>, _: Access) -> Check {
    Check::ready(verdict(request, topic))
}

fn verdict(request: &Parts, topic: Option<&str>) -> Verdict {
    let Some(claims) = request.extensions.get::<Claims>() else {
        return Verdict::Unauthenticated;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if claims.exp <= now {
        // Expired while a stream was open: the next check ends it.
        return Verdict::Unauthenticated;
    }
    let path = request.uri.path();
    let in_path = path
        .strip_prefix("/topics/")
        .and_then(|rest| rest.split('/').next());
    let topic = topic.or(in_path).unwrap_or("default");
    if claims.topics.iter().any(|t| t == topic || t == "*") {
        Verdict::Allow
    } else {
        Verdict::Deny
    }
}

/// For the publish routes: `None` when the request may publish on `topic` (or nothing is
/// checked), else the refusal.
fn refuse_publish(request: &Parts, topic: &str) -> Option<Response> {
    // Nothing to check without the authentication layer.
    request.extensions.get::<Checked>()?;
    match verdict(request, Some(topic)) {
        Verdict::Allow => None,
        Verdict::Deny => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not publish on this topic",
        )),
        _ => Some(unauthenticated()),
    }
}

/// `401 unauthenticated` with `WWW-Authenticate: Bearer`.
fn unauthenticated() -> Response {
    let message = "send a valid token: Authorization: Bearer <JWT>";
    let mut refused = error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    let bearer = axum::http::HeaderValue::from_static("Bearer");
    refused
        .headers_mut()
        .insert(axum::http::header::WWW_AUTHENTICATE, bearer);
    refused
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
            post(|request: Parts, body: Bytes| async move {
                match refuse_publish(&request, "default") {
                    Some(refused) => refused,
                    None => publish(&default, body),
                }
            }),
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
        let not_found = || {
            let message = format!("no topic named {name:?}: publish to it first");
            error(StatusCode::NOT_FOUND, "topic_not_found", &message)
        };
        // A topic the token may not read answers as one that does not exist; before the layer
        // would (with its own refusal), so that both read the same.
        if parts.extensions.get::<Checked>().is_some() {
            match verdict(parts, Some(&name)) {
                Verdict::Allow => {}
                Verdict::Deny => return Err(not_found()),
                _ => return Err(unauthenticated()),
            }
        }
        push.log.find_topic(&name).map(Found).ok_or_else(not_found)
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
    request: Parts,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_publish(&request, &name) {
        return refused;
    }
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
