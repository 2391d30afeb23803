//! Long polling: hold a request until there are events after its cursor, or the hold expires.
//!
//! [`LongPollLayer`] wraps an [event source](crate::source) and turns it into an HTTP service,
//! `Service<http::Request<B>>` for any body `B`, with `Error = Infallible`.
//!
//! # The poll loop
//!
//! A client sends `GET /poll?after=<cursor>` and gets one of:
//!
//! | answer | when | what the client does |
//! | --- | --- | --- |
//! | `200` with events and `Push-Cursor` | events after the cursor exist or arrive during the hold | processes them, polls again at once with the new cursor |
//! | `204` with `Push-Cursor` | the hold expired without events | polls again at once with the same cursor |
//! | `400 malformed_cursor` / `cursor_ahead` | the cursor is not one the server ever issued | starts over without a cursor |
//! | `410 cursor_expired` / `epoch_mismatch` | events after the cursor are gone, or the log restarted | resyncs from `oldest` or `head` in the body |
//! | `503 source_unavailable` | the event source failed | retries after a back-off |
//!
//! A request without a cursor starts at the newest event (see [`Start`](crate::Start)), and its
//! answer still carries `Push-Cursor`, so the client knows where it stands from its first poll.
//! Since every event published after a cursor is retained until retention drops it, no event
//! falls between one answer and the next request: delivery is ordered and at-least-once, and a
//! lost position is always reported, never skipped.
//!
//! Every answer carries `Cache-Control: no-cache, no-store, no-transform` and
//! `X-Accel-Buffering: no` (see [`crate::headers`]).
//!
//! # Holding
//!
//! A held request costs its source's future and a timer, no task of its own. A client that
//! disconnects drops the response future and with it the source's future, which by the source
//! contract loses nothing.
//!
//! # Examples
//!
//! ```
//! use http::Request;
//! use tower::{Layer, ServiceExt};
//! use tower_push::{EventData, LongPollLayer, MemoryLog};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let log = MemoryLog::new();
//! let news = log.topic("news");
//! let cursor = news.publish(EventData::from_json(r#""first""#)?);
//! news.publish(EventData::from_json(r#""second""#)?);
//!
//! let service = LongPollLayer::new().layer(news);
//! let request = Request::get(format!("/poll?after={cursor}")).body(())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-accel-buffering"], "no");
//! # Ok(())
//! # }
//! ```

pub mod future;
mod layer;
mod service;
mod supersede;

pub use self::layer::{LongPollBuilder, LongPollLayer};
pub use self::service::LongPoll;
