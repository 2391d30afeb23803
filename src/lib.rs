//! Reliable server push over plain HTTP for any [tower](https://docs.rs/tower) server.
//!
//! Long polling and chunked streaming fail in production in quiet ways: events published between
//! an answer and the next request are lost, held requests outlive proxy idle timeouts, empty
//! answers move the client's position, buffering proxies sit on streams. `tower-push` gives a
//! server push that keeps its promises: every event has a **cursor**, clients send it back, and
//! the server answers "everything after it", or says explicitly that the client must resync.
//!
//! | piece | what it does |
//! | --- | --- |
//! | [`LongPollLayer`] ([`long_poll`]) | holds `GET /poll?after=<cursor>` until events exist or the hold expires (`204`, cursor kept) |
//! | [`ChunkedStreamLayer`] ([`chunked_stream`]) | streams NDJSON or SSE from a cursor: a frame per message, heartbeats, bounded lifetime, resync |
//! | [`Shutdown`] ([`shutdown`]) | one signal that drains both layers: held polls answer, streams end, new requests get `503` |
//! | [`source`] | the event-source contract: any `tower::Service<Subscribe>` feeds the layers; where a request without a cursor starts ([`Origin`](source::Origin)) |
//! | [`MemoryLog`] ([`memory`]) | the embedded source: topics, sequence ids, an epoch, bounded retention, cheap waiting |
//! | `durable` (feature `durable`) | the Durable Streams protocol (create, append, read, follow live, fork) over a store, on the same pipeline; streams in memory, in a crash-safe directory (`durable-file`), or in Redis shared by many processes (`durable` + `redis`; Redis Cluster with `redis-cluster`) |
//! | `redis` (feature `redis`) | an event source on Redis Streams: one feed for many server processes |
//! | `metrics` (feature `metrics`) | metrics through the `metrics` facade and a span per request |
//! | [`compression::Compression`] (features `compression-gzip`, `compression-br`, `compression-zstd`, `compression-full`) | compressed answers, every stream frame flushed |
//! | `server` (feature `server`) | the serving loop around hyper: one builder per protocol, deadlines on clients, caps, accept back-off, a graceful drain |
//! | [`Cursor`] | the opaque, URL-safe, ordered position that carries the log's epoch |
//! | [`CompositeCursor`] | what a client sends back: a cursor, or the composite cursor of a request on [several topics](#several-topics) |
//! | [`Event`], [`EventData`] | an event: its id, an optional SSE event name, and its JSON payload |
//! | [`format`](mod@format) | how answers look on the wire: the JSON envelope by default, or your own |
//! | [`Rejection`] | the answers without events (`400`, `410`, `503`) and their machine-readable codes |
//! | [`ConfigError`] | a setting the builders refuse, with what to change |
//! | [`PushBody`] | the body of every answer: one frame per message |
//! | [`headers`] | the anti-buffering headers every answer carries |
//! | [`compression`] | compressed streams that still flush every event (gzip, deflate, br, zstd), and the predicate that keeps tower-http's compression off push responses |
//! | [`io`] | a write-progress deadline for connections whose client stopped reading, and telling HTTP/2 from HTTP/1 without hyper-util's `auto` builder |
//!
//! # A complete server
//!
//! A long-poll endpoint and a publish endpoint with the embedded log, served by the crate's
//! serving loop (feature `server`) until Ctrl-C or SIGTERM, when held polls answer at once and
//! connections get 10 seconds to close (dependencies: `tower-push` with the `server` feature,
//! `http`, `tower` with `util`, and `tokio` with `macros` and `rt-multi-thread`):
//!
#![cfg_attr(
    feature = "server",
    doc = r#"```no_run
use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_push::server::{self, Body, Server};
use tower_push::{EventData, LongPollLayer, MemoryLog, PushBody, Shutdown};

# #[tokio::main]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
let log = MemoryLog::new();
let shutdown = Shutdown::new();
let poll = LongPollLayer::builder().shutdown(shutdown.clone()).build()?;
let poll = poll.layer(log.topic("feed"));
let service = tower::service_fn(move |req: Request<Body>| {
    let (log, poll) = (log.clone(), poll.clone());
    async move {
        if req.method() != Method::POST {
            return poll.oneshot(req).await; // GET /?after=<cursor>
        }
        let published = match req.into_body().collect_at_most(64 * 1024).await {
            Ok(body) => EventData::from_json(body).map(|data| log.publish("feed", data)),
            Err(err) => return Ok(answer(err.status(), err.code())),
        };
        Ok(match published {
            Ok(id) => answer(StatusCode::OK, &id.to_string()),
            Err(err) => answer(StatusCode::BAD_REQUEST, &err.to_string()),
        })
    }
});
fn answer(status: StatusCode, text: &str) -> Response<PushBody> {
    let mut response = Response::new(PushBody::full(text.to_owned()));
    *response.status_mut() = status;
    response
}
let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
let drained = Server::new()
    .shutdown(shutdown)
    .serve(listener, service, server::ctrl_c_or_sigterm())
    .await;
eprintln!("stopped: {drained}");
# let _: Option<Infallible> = None;
# Ok(())
# }
```"#
)]
#![cfg_attr(
    not(feature = "server"),
    doc = "(The example is shown with the `server` feature on.)"
)]
//!
//! The `demo` example is the same server with streaming, several topics, flags and a page:
//! `cargo run --example demo --features cli,metrics,compression-full`.
//!
//! # Several topics
//!
//! One request may follow several topics: `GET /poll?topics=inbox,presence` (or a stream with
//! the same parameter) holds one request, not one per topic, and one **composite cursor** with a
//! position per topic ([`CompositeCursor`]). Serve it with a source that serves topics by name: a
//! [`MemoryLog`] (or `redis::RedisSource`) itself rather than one of its topics; each topic
//! gets its own subscription ([`Subscribe::topic`](source::Subscribe::topic)), and a publish
//! wakes only the requests that follow its topic.
//!
//! - Each event carries its topic: `{"id":"<cursor in its topic>","topic":"inbox","data":...}`
//!   in the poll's `events` and in NDJSON lines (which add `"cursor"`, the composite cursor after
//!   the event); SSE writes that object as `data:` and the composite cursor as `id:`, so that
//!   `Last-Event-ID` resumes every topic.
//! - The answer's `cursor` (and `Push-Cursor`) is the composite cursor: send it back as `after`
//!   with the same topics in the same order. A `204` carries it unchanged.
//! - **Order**: within a topic, events come in order, without gaps or repeats. Across topics no
//!   order is promised: an answer holds the events of the topics that had some, topic by topic,
//!   and the topic that goes first turns round from answer to answer, so that a busy topic cannot
//!   crowd the others out of answers bounded by `max_events` and `max_answer_bytes`.
//! - **Per-topic resync**: when one topic's position can no longer be served, the answer is
//!   `410` ([`Rejection::TopicResync`]) naming that `topic`, with composite `oldest` and `head`
//!   cursors in which only that topic's position moved: reload that topic's state and go on from
//!   either; the others lose nothing. Events of other topics that were ready go out first, in
//!   an answer of their own. A stream ends with the same body as its final message.
//! - Refused: more topics than [`max_topics_per_request`](crate::PushBuilder::max_topics_per_request) (16 by default),
//!   `400 too_many_topics`; a name that is not 1 to 128 of `A-Z a-z 0-9 - _ . : ~`, or named
//!   twice, `400 invalid_topics`; a topic the source does not serve, `400 unknown_topic`; a
//!   cursor without one position per topic, `400 malformed_cursor`.
//!
//! ```
//! use tower_push::{ChunkedStreamLayer, LongPollLayer, MemoryLog};
//!
//! let log = MemoryLog::new();
//! for name in ["inbox", "presence"] {
//!     log.topic(name); // subscribing never creates a topic
//! }
//! let poll = LongPollLayer::new().layer(log.clone()); // GET /poll?topics=inbox,presence
//! let stream = ChunkedStreamLayer::new().layer(log); // GET /stream?topics=inbox,presence
//! # let _ = (poll, stream);
//! ```
//!
//! # In your stack
//!
//! Both layers produce `Service<http::Request<B>>` for any body, with `Error = Infallible`,
//! `Clone`, `Send + 'static` futures, and a `Send + Sync + 'static` body with `Data = Bytes`, so
//! they drop into every tower stack without adapters:
//!
//! - **hyper**: serve them with `hyper_util::server::conn::auto` (HTTP/1.1 and HTTP/2); see
//!   `examples/hyper.rs`.
//! - **axum**: mount them with `Router::route_service`, or layer a topic chosen from the path
//!   inside a handler (`layer.layer(topic).oneshot(req)`, which costs two reference-count
//!   increments); see `examples/axum.rs`.
//! - **tonic**: add the axum router to `tonic::service::Routes` beside your gRPC services;
//!   gRPC passes through untouched; enable `accept_http1` for plain HTTP/1.1 clients; see
//!   `examples/tonic.rs`.
//!
//! Around them:
//!
//! - **Compression**: the layers compress their own answers, each stream frame flushed, with
//!   the builders' `compression` setting ([`compression::Compression`]); tower-http's
//!   `CompressionLayer` leaves those alone. Without it, give `CompressionLayer` the predicate
//!   [`compression::not_push`] (its default predicate skips SSE but not NDJSON), which would
//!   otherwise hold events back in its encoder.
//! - **Timeouts**: an outer `TimeoutLayer` shorter than the hold answers held polls with its own
//!   error (`408`) before the hold expires; keep it longer than the hold. It covers only the
//!   response future, so it never cuts a stream; bound streams with
//!   [`max_lifetime`](ChunkedStreamBuilder::max_lifetime) instead.
//! - **Tracing and CORS** layers compose as they are.
//! - **TCP_NODELAY** is a listener setting: without it a small write waits for the ACK of the
//!   previous one, delaying a message by up to 40 ms. Set it on every accepted socket (hyper,
//!   axum's `ListenerExt::tap_io`); tonic sets it by default.
//! - **A client that stops reading** would keep an answer in memory: wrap each accepted socket
//!   in [`io::WriteTimeout`], and set HTTP/2's `max_concurrent_streams`, since each stream may
//!   hold one answer of [`max_answer_bytes`](PushBuilder::max_answer_bytes).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[macro_use]
mod macros;

pub mod authorize;
mod body;
pub mod chunked_stream;
pub mod compression;
mod config;
mod cursor;
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
pub mod durable;
mod event;
mod follow;
pub mod format;
pub mod headers;
pub mod io;
pub mod layer;
mod limit;
pub mod long_poll;
pub mod memory;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod random;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod rejection;
mod request;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod shutdown;
pub mod source;
mod sync;
mod telemetry;
mod topics;
mod wake;

pub use self::body::PushBody;
#[doc(inline)]
pub use self::chunked_stream::{ChunkedStream, ChunkedStreamBuilder, ChunkedStreamLayer};
pub use self::config::ConfigError;
pub use self::cursor::{CompositeCursor, Cursor, CursorError, Epoch};
pub use self::event::{Event, EventData, EventName, InvalidEventName, InvalidJson};
pub use self::layer::{PushBuilder, PushLayer};
#[doc(inline)]
pub use self::long_poll::{LongPoll, LongPollBuilder, LongPollLayer};
#[doc(inline)]
pub use self::memory::MemoryLog;
pub use self::rejection::Rejection;
#[doc(inline)]
pub use self::shutdown::Shutdown;
pub use self::topics::TopicsError;

// The README's code blocks compile as they are shown; they need the `metrics` and `server` features.
#[cfg(all(doctest, feature = "metrics", feature = "server"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The error type sources may fail with, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod bounds {
    use super::*;
    use crate::memory::{Subscription, Topic};

    fn send_sync_static<T: Send + Sync + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    fn clone<T: Clone>() {}

    #[test]
    fn public_types_fit_hyper_axum_and_tonic() {
        send_sync_static::<PushBody>();
        send_sync_static::<LongPollLayer>();
        send_sync_static::<LongPoll<Topic>>();
        clone::<LongPoll<Topic>>();
        send_static::<long_poll::future::ResponseFuture<Topic, format::JsonFormat>>();
        send_sync_static::<ChunkedStreamLayer>();
        send_sync_static::<ChunkedStream<Topic>>();
        clone::<ChunkedStream<Topic>>();
        send_static::<chunked_stream::future::ResponseFuture<Topic, format::AutoFormat>>();
        send_sync_static::<Shutdown>();
        send_sync_static::<MemoryLog>();
        send_sync_static::<Topic>();
        send_sync_static::<Subscription>();
        send_sync_static::<source::Subscribe>();
        send_sync_static::<source::Outcome>();
        send_sync_static::<ConfigError>();
        send_sync_static::<CursorError>();
        send_sync_static::<Rejection>();
    }

    #[cfg(all(feature = "durable", feature = "redis"))]
    #[test]
    fn the_redis_store_fits_the_durable_service() {
        send_sync_static::<durable::RedisStore>();
        clone::<durable::RedisStore>();
        send_sync_static::<durable::DurableStreams<durable::RedisStore>>();
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_types_fit_hyper_axum_and_tonic() {
        send_sync_static::<redis::RedisSource>();
        send_sync_static::<redis::RedisTopic>();
        send_sync_static::<redis::Error>();
        send_static::<redis::Subscription>();
        send_sync_static::<LongPoll<redis::RedisTopic>>();
        clone::<LongPoll<redis::RedisTopic>>();
        send_static::<long_poll::future::ResponseFuture<redis::RedisTopic, format::JsonFormat>>();
        send_sync_static::<ChunkedStream<redis::RedisTopic>>();
        send_static::<chunked_stream::future::ResponseFuture<redis::RedisTopic, format::AutoFormat>>(
        );
    }
}
