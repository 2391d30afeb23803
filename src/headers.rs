//! The response headers that keep push responses out of caches and proxy buffers.
//!
//! Both layers set these on **every** response they produce, whatever the status, after the wire
//! format has built it, so no format can forget them:
//!
//! - `Cache-Control: no-cache, no-transform` on streams, and `no-cache, no-store, no-transform` on
//!   long-poll answers, which are never worth storing. `no-transform` also asks intermediaries
//!   not to recompress or rewrite the body.
//! - `X-Accel-Buffering: no`, which makes nginx pass the response through unbuffered (and flush
//!   each chunk through its gzip filter) for this response alone.
//!
//! They never set `Transfer-Encoding`, `Connection` or `Keep-Alive`: hyper frames HTTP/1.1 bodies
//! by itself, and HTTP/2 forbids connection-specific headers.

use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL};

/// `Push-Cursor`: the cursor a client sends back next. Set by the default formats on every
/// long-poll answer that has one (`200` and `204`).
pub const PUSH_CURSOR: HeaderName = HeaderName::from_static("push-cursor");

/// `Push-Retry-Ms`: how long a client should wait before its next request, in milliseconds.
/// Set with `Retry-After` (whole seconds, rounded up) on the long-poll answers of a shutdown,
/// each drawn at random from the layer's reconnect window so that clients do not all come back
/// at the same moment.
pub const PUSH_RETRY_MS: HeaderName = HeaderName::from_static("push-retry-ms");

/// `X-Accel-Buffering`, honoured by nginx per response.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

const NO: HeaderValue = HeaderValue::from_static("no");
const POLL_CACHE_CONTROL: HeaderValue =
    HeaderValue::from_static("no-cache, no-store, no-transform");
const STREAM_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("no-cache, no-transform");

/// Sets the anti-buffering and no-store headers of a long-poll answer.
pub(crate) fn long_poll(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, POLL_CACHE_CONTROL);
    headers.insert(X_ACCEL_BUFFERING, NO);
}

/// Sets the anti-buffering headers of a stream, and of the answers that refuse one.
pub(crate) fn stream(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, STREAM_CACHE_CONTROL);
    headers.insert(X_ACCEL_BUFFERING, NO);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_headers_replace_what_was_there() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        long_poll(&mut headers);
        assert_eq!(headers[CACHE_CONTROL], "no-cache, no-store, no-transform");
        assert_eq!(headers[X_ACCEL_BUFFERING], "no");
        assert_eq!(headers.len(), 2);
    }
}
