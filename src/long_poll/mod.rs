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
//! A request without a cursor starts at the newest event (see [`Origin`](crate::source::Origin)), and its
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
//! # Overload
//!
//! Every held poll counts (see [`LongPollLayer::held`]). Caps turn overload into a clear
//! answer instead of exhausted memory or file descriptors: [`max_held`] over all the layer's
//! services and [`max_held_per_key`] per topic or tenant answer `503 overloaded` with a
//! `Retry-After` of 1 to 5 seconds, spread so that refused clients do not return together, and
//! [`hold_jitter`] spreads the `204`s of clients that reconnected together.
//!
//! tower's `ConcurrencyLimit` and `LoadShed` compose too, with two differences to keep in mind:
//! `ConcurrencyLimit` around this service holds its permit for the whole hold (so it caps
//! parked polls), and `LoadShed` fails with an error instead of an answer, so the stack's error
//! type is no longer `Infallible` and axum needs a `HandleErrorLayer` to turn it into a `503`
//! (without a `Retry-After` unless you add one). The built-in caps need neither.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_push::{LongPollLayer, MemoryLog};
//!
//! let poll = ServiceBuilder::new()
//!     .load_shed()
//!     .concurrency_limit(10_000)
//!     .layer(LongPollLayer::builder().hold_timeout(Duration::from_secs(20)).build()?)
//!     .service(MemoryLog::new().topic("news"));
//! # let _ = poll;
//! # Ok::<(), tower_push::ConfigError>(())
//! ```
//!
//! [`max_held`]: LongPollBuilder::max_held
//! [`max_held_per_key`]: LongPollBuilder::max_held_per_key
//! [`hold_jitter`]: LongPollBuilder::hold_jitter
//!
//! # Examples
//!
//! ```
//! use http::Request;
//! use tower::ServiceExt;
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
mod service;
pub(crate) mod supersede;

pub use self::service::LongPoll;
pub use crate::layer::{LongPollBuilder, LongPollLayer, LongPolling};
