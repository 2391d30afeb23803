//! Chunked streaming: one long response, one frame per message, resumable from a cursor.
//!
//! [`ChunkedStreamLayer`] wraps the same [event source](crate::source) as the long-poll layer and
//! turns it into an HTTP service, `Service<http::Request<B>>` for any body `B`, with
//! `Error = Infallible`. The stream starts after the request's cursor (the `after` query
//! parameter, or `Last-Event-ID`, which `EventSource` sends when it reconnects) and keeps asking
//! the source for what comes after the last event it sent.
//!
//! # Frames and flushing
//!
//! Each event becomes one complete message ([`NdjsonFormat`](crate::format::NdjsonFormat) line or
//! [`SseFormat`](crate::format::SseFormat) event), written as soon as the source has it; events
//! that were ready together share a frame. The body returns `Pending` whenever nothing is
//! ready, which is when hyper writes to the socket, so each message leaves at once. Nothing is
//! buffered for a client that reads slowly: the stream only asks the source for more when the
//! client has taken what it had, so a stalled client costs a fixed amount of memory, and one that
//! falls behind retention gets a final resync message.
//!
//! # How a stream ends
//!
//! | end | final message | what the client does |
//! | --- | --- | --- |
//! | maximum lifetime (with jitter) | `end: lifetime` with the cursor | reconnects from its last id |
//! | [`Shutdown`](crate::Shutdown) triggered | `end: shutdown` with the cursor | reconnects after a pause |
//! | fell behind retention, or the epoch changed | `resync` with `oldest` and `head` | resyncs, then reconnects without a cursor or from `oldest` |
//! | the source failed | `failed` with `source_unavailable` | reconnects after a back-off |
//!
//! A start cursor that the source refuses at once (expired, another epoch, ahead of the head) or
//! that is malformed is answered like the long-poll layer answers it (`400` or `410` with a JSON
//! body) before any byte is streamed.
//!
//! Streams carry `Cache-Control: no-cache, no-transform`, `X-Accel-Buffering: no`, the format's
//! `Content-Type`, and `Push-Cursor` with the start cursor; quiet streams send a heartbeat every
//! [`heartbeat_interval`](ChunkedStreamBuilder::heartbeat_interval).
//!
//! # Examples
//!
//! ```
//! use http::Request;
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_push::{ChunkedStreamLayer, EventData, MemoryLog};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topic = MemoryLog::new().topic("news");
//! let start = topic.head();
//! topic.publish(EventData::from_json(r#""hello""#)?);
//!
//! let service = ChunkedStreamLayer::new().layer(topic);
//! let request = Request::get(format!("/stream?after={start}"))
//!     .header("accept", "text/event-stream")
//!     .body(())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//!
//! let mut body = response.into_body();
//! let first = body.frame().await.unwrap()?.into_data().unwrap();
//! let text = String::from_utf8(first.to_vec())?;
//! assert!(text.ends_with("data: \"hello\"\n\n"));
//! # Ok(())
//! # }
//! ```

pub mod future;
mod service;
mod stream;

pub use self::service::ChunkedStream;
pub use crate::layer::{ChunkedStreamBuilder, ChunkedStreamLayer, Streaming};
