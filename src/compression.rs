//! Keeping response compression away from push responses.
//!
//! A compressor is a buffer: it holds output back until it has enough to compress, keeps a
//! window of hundreds of KiB per open stream, and makes every intermediary decode the stream
//! incrementally. tower-http's `CompressionLayer` skips `text/event-stream` by default, but not
//! `application/x-ndjson`, nor a custom stream format.
//!
//! Every response of both layers carries `X-Accel-Buffering: no` (see [`crate::headers`]): the
//! standard way for a response to say "do not buffer me". The predicate [`not_push`] is false
//! for such responses, so combined with tower-http's default predicate it keeps compression for
//! everything else:
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
//! crate does not depend on tower-http, and reading a header costs nothing per response.

use http::{Extensions, HeaderMap, StatusCode, Version};

use crate::headers::X_ACCEL_BUFFERING;

/// A compression predicate that is `false` for responses that ask not to be buffered
/// (`X-Accel-Buffering: no`, as every response of this crate's layers does) and `true` for all
/// others; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use http::{Extensions, HeaderMap, HeaderValue, StatusCode, Version};
/// use tower_push::compression::not_push;
///
/// let mut headers = HeaderMap::new();
/// let plain = not_push(StatusCode::OK, Version::HTTP_11, &headers, &Extensions::new());
/// headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
/// let push = not_push(StatusCode::OK, Version::HTTP_11, &headers, &Extensions::new());
/// assert!(plain && !push);
/// ```
pub fn not_push(_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    headers
        .get(X_ACCEL_BUFFERING)
        .is_none_or(|value| !value.as_bytes().eq_ignore_ascii_case(b"no"))
}
