//! The protocol's header names, and the headers every answer carries.
//!
//! Every answer of [`DurableStreams`](super::DurableStreams), errors included, carries
//! `X-Content-Type-Options: nosniff`, `Cross-Origin-Resource-Policy: cross-origin` and CORS
//! headers that let browsers of any origin use the protocol (`Access-Control-Allow-Origin: *`,
//! the protocol's headers exposed); `OPTIONS` preflights, for any path, allow every method and
//! request header the protocol uses.
//!
//! # Examples
//!
//! ```
//! use tower_push::durable::headers::STREAM_NEXT_OFFSET;
//!
//! let response = http::Response::builder()
//!     .header(STREAM_NEXT_OFFSET, "0000000000000000_0000000000000001")
//!     .body(())
//!     .unwrap();
//! assert!(response.headers().contains_key("stream-next-offset"));
//! ```

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `Stream-Next-Offset`: the offset to read from next.
pub const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
/// `Stream-Up-To-Date`: `true` when an answer reaches the tail.
pub const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
/// `Stream-Cursor`: the cache-collapsing cursor of live answers.
pub const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
/// `Stream-Closed`: `true` on a closed stream (request: close it).
pub const STREAM_CLOSED: HeaderName = HeaderName::from_static("stream-closed");
/// `Stream-TTL`: the sliding lifetime of a stream, in seconds.
pub const STREAM_TTL: HeaderName = HeaderName::from_static("stream-ttl");
/// `Stream-Expires-At`: the absolute expiry of a stream, RFC 3339.
pub const STREAM_EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
/// `Stream-Seq`: a writer's sequence value, which must only grow (as bytes).
pub const STREAM_SEQ: HeaderName = HeaderName::from_static("stream-seq");
/// `Stream-SSE-Data-Encoding`: `base64` when SSE data events carry base64.
pub const STREAM_SSE_DATA_ENCODING: HeaderName =
    HeaderName::from_static("stream-sse-data-encoding");
/// `Stream-Forked-From`: the path of the stream a new stream forks.
pub const STREAM_FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
/// `Stream-Fork-Offset`: where in the source the fork starts.
pub const STREAM_FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
/// `Stream-Fork-Sub-Offset`: how much of the next append the fork starts with.
pub const STREAM_FORK_SUB_OFFSET: HeaderName = HeaderName::from_static("stream-fork-sub-offset");
/// `Producer-Id`: an idempotent producer's id.
pub const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
/// `Producer-Epoch`: an idempotent producer's epoch.
pub const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
/// `Producer-Seq`: an idempotent producer's sequence number.
pub const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
/// `Producer-Expected-Seq`: the sequence number expected after a gap.
pub const PRODUCER_EXPECTED_SEQ: HeaderName = HeaderName::from_static("producer-expected-seq");
/// `Producer-Received-Seq`: the sequence number received in a gap.
pub const PRODUCER_RECEIVED_SEQ: HeaderName = HeaderName::from_static("producer-received-seq");

/// The protocol's own request headers, which the service reads on `PUT` and `POST` (besides
/// `Content-Type`): for allow-lists, proxies that forward only what they know, and tests.
///
/// # Examples
///
/// ```
/// use tower_push::durable::headers::{PRODUCER_SEQ, REQUEST_HEADERS};
///
/// assert!(REQUEST_HEADERS.contains(&PRODUCER_SEQ));
/// ```
pub const REQUEST_HEADERS: [HeaderName; 10] = [
    STREAM_TTL,
    STREAM_EXPIRES_AT,
    STREAM_CLOSED,
    STREAM_SEQ,
    STREAM_FORKED_FROM,
    STREAM_FORK_OFFSET,
    STREAM_FORK_SUB_OFFSET,
    PRODUCER_ID,
    PRODUCER_EPOCH,
    PRODUCER_SEQ,
];

const TRUE: HeaderValue = HeaderValue::from_static("true");

pub(crate) fn set_true(headers: &mut HeaderMap, name: HeaderName) {
    headers.insert(name, TRUE);
}

/// `Cross-Origin-Resource-Policy`, which `http` has no constant for (made once: checking a
/// static name costs every answer 200 instructions).
const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// The browser security and CORS headers of every answer, errors included.
pub(crate) fn security(headers: &mut HeaderMap) {
    use http::header::*;
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CROSS_ORIGIN_RESOURCE_POLICY,
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
             Stream-SSE-Data-Encoding, Stream-TTL, Stream-Expires-At, Producer-Epoch, \
             Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, \
             Content-Type, Content-Encoding, Vary",
        ),
    );
}

/// The answer to a CORS preflight: every method and request header the protocol uses.
pub(crate) fn preflight(headers: &mut HeaderMap) {
    use http::header::*;
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "content-type, authorization, if-none-match, last-event-id, stream-seq, stream-ttl, \
             stream-expires-at, stream-closed, producer-id, producer-epoch, producer-seq, \
             stream-forked-from, stream-fork-offset, stream-fork-sub-offset",
        ),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
}
