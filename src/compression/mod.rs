//! Compressed push answers that still flush every message, and keeping other compression away
//! from them.
//!
//! # Compressing push answers
//!
//! A general-purpose compressor is a buffer: it holds output back until it has enough to
//! compress, so an event written into it sits there until more events arrive. The layers
//! compress their own answers instead, when given [`Compression`] (features `compression-gzip`
//! for gzip and deflate, `compression-br`, `compression-zstd`, or `compression-full`):
//!
//! - each request's `Accept-Encoding` chooses the coding (weights, `*`, `identity;q=0`; a
//!   malformed field falls back to identity, never to an error); every answer says
//!   `Vary: Accept-Encoding`;
//! - a stream ends every frame (each batch of events, each heartbeat, the final message) with a
//!   flush, so the client decodes each message as soon as its bytes arrive: compression adds no
//!   latency;
//! - a long-poll answer is compressed whole when it has at least
//!   [`min_size`](Compression::min_size) bytes;
//! - the memory a stream keeps between messages is bounded by the
//!   [`window`](Compression::window) (see each coding's figure in [`Coding`]).
//!
//! ```
//! # #[cfg(feature = "compression-gzip")] {
//! use tower_push::compression::Compression;
//! use tower_push::ChunkedStreamLayer;
//!
//! let layer = ChunkedStreamLayer::builder()
//!     .compression(Compression::new())
//!     .build()?;
//! # let _ = layer;
//! # }
//! # Ok::<(), tower_push::ConfigError>(())
//! ```
//!
//! An answer the layers compressed carries `Content-Encoding`, which tower-http's
//! `CompressionLayer` leaves alone.
//!
//! # Keeping other compression away
//!
//! tower-http's `CompressionLayer` skips `text/event-stream` by default, but not
//! `application/x-ndjson`, nor a custom stream format; around uncompressed push answers it would
//! hold events back.
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

/// The integration tests' decoders, a client's view of each coding, for the unit tests.
#[cfg(test)]
#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/common/decode.rs"]
mod decode;
mod encoder;
mod negotiate;
mod settings;

pub(crate) use self::encoder::Encoder;
pub(crate) use self::negotiate::Choice;
pub use self::settings::{Coding, Compression, Level, UnknownCoding};

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use http::{HeaderValue, Response};

use crate::PushBody;

/// What the request with `headers` accepts among what `settings` offers: `None` when the layer
/// does not compress.
pub(crate) fn negotiate(headers: &HeaderMap, settings: Option<&Compression>) -> Option<Choice> {
    settings.map(|settings| negotiate::negotiate(headers, &settings.codings))
}

/// The smallest whole answer compressed: any with a byte when the client refuses identity.
fn min_size(required: bool, settings: &Compression) -> usize {
    if required {
        1
    } else {
        settings.min_size.max(1)
    }
}

/// The coding a whole answer of `len` bytes is written in, as [`answer`] writes it: for an
/// answer that must know it before it is made (an entity tag of its own per coding).
#[cfg(feature = "durable")]
pub(crate) fn coding_for(
    choice: Option<Choice>,
    settings: Option<&Compression>,
    len: usize,
) -> Option<Coding> {
    match (choice?, settings?) {
        (Choice::Coding { coding, required }, settings) if len >= min_size(required, settings) => {
            Some(coding)
        }
        _ => None,
    }
}

/// `response` in the coding of `choice` (made by [`negotiate`] with `settings`), saying that it
/// varies with `Accept-Encoding`. An answer without a body (`204`), one too small to be worth
/// it and one already encoded stay as they are; nothing changes when the layer does not
/// compress.
pub(crate) fn answer(
    mut response: Response<PushBody>,
    choice: Option<Choice>,
    settings: Option<&Compression>,
) -> Response<PushBody> {
    const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");
    let (Some(choice), Some(settings)) = (choice, settings) else {
        return response;
    };
    response.headers_mut().append(VARY, ACCEPT_ENCODING);
    let Choice::Coding { coding, required } = choice else {
        return response;
    };
    if response.headers().contains_key(CONTENT_ENCODING) {
        return response;
    }
    let encoder = || Encoder::new(coding, settings);
    let body = std::mem::take(response.body_mut());
    match body.encode(encoder, min_size(required, settings)) {
        Ok(encoded) => {
            *response.body_mut() = encoded;
            let headers = response.headers_mut();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
            headers.remove(CONTENT_LENGTH);
        }
        Err(body) => *response.body_mut() = body,
    }
    response
}

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
