//! Keeping response compression away from push responses.
//!
//! A compression middleware buffers its output until it has enough to compress, which holds
//! stream messages back for seconds, and an intermediary that sees a compressed stream may buffer
//! it again. tower-http's `CompressionLayer` skips `text/event-stream` by default, but not
//! `application/x-ndjson`, and it would also batch any custom stream format.
//!
//! Both layers mark every response they produce with the [`PushResponse`] extension. The
//! predicate [`not_push`] is false for marked responses, so combined with tower-http's default
//! predicate it keeps compression for everything else:
//!
//! ```
//! use tower_http::compression::{predicate::DefaultPredicate, CompressionLayer, Predicate};
//!
//! let compression = CompressionLayer::new()
//!     .compress_when(DefaultPredicate::new().and(tower_push::compression::not_push));
//! # let _ = compression;
//! ```
//!
//! `not_push` is a plain function with the signature tower-http accepts as a predicate, so this
//! crate does not depend on tower-http.

use http::{Extensions, HeaderMap, StatusCode, Version};

/// The response extension that marks a response of [`LongPollLayer`](crate::LongPollLayer) or
/// [`ChunkedStreamLayer`](crate::ChunkedStreamLayer).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use tower::{Layer, ServiceExt};
/// use tower_push::compression::PushResponse;
/// use tower_push::{ChunkedStreamLayer, MemoryLog};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ChunkedStreamLayer::new().layer(MemoryLog::new().topic("t"));
/// let response = service.oneshot(Request::get("/").body(())?).await?;
/// assert!(response.extensions().get::<PushResponse>().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushResponse;

/// A compression predicate that is `false` for the responses of this crate's layers and `true`
/// for all others; see the [module docs](self).
pub fn not_push(_: StatusCode, _: Version, _: &HeaderMap, extensions: &Extensions) -> bool {
    extensions.get::<PushResponse>().is_none()
}

/// Marks a response as a push response.
pub(crate) fn mark(extensions: &mut Extensions) {
    extensions.insert(PushResponse);
}
