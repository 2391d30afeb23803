//! The service's answers to what it refuses: [`Error`], one variant per problem, turned into a
//! response in one place; and the other small answers the routes share.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::headers::{
    set_true, PRODUCER_EPOCH, PRODUCER_EXPECTED_SEQ, PRODUCER_RECEIVED_SEQ, STREAM_CLOSED,
    STREAM_NEXT_OFFSET,
};
use super::store::StoreError;
use crate::PushBody;

/// What a route answers, now or once it has read the request's body or waited for data.
pub(crate) type Answer =
    Pin<Box<dyn Future<Output = Result<Response<PushBody>, Error>> + Send + 'static>>;

/// An answer that is ready now.
pub(crate) fn ready(answer: Result<Response<PushBody>, Error>) -> Answer {
    Box::pin(std::future::ready(answer))
}

/// An answer of `status` without a body.
pub(crate) fn empty(status: StatusCode) -> Response<PushBody> {
    let mut response = Response::new(PushBody::empty());
    *response.status_mut() = status;
    // Room for the protocol's headers and the security headers every answer gets, so that
    // the map does not grow (and rehash) on the way.
    *response.headers_mut() = http::HeaderMap::with_capacity(12);
    response
}

/// Why a request is refused. Each problem answers with its status and a body
/// `{"error":"<code>","message":"<message>"}` (the message is the `Display`), plus the headers
/// that say more where the protocol has them: see [`into_response`](Self::into_response).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The store refused the request.
    Store(StoreError),
    /// The stream a live read followed was deleted (or replaced) while it waited.
    Deleted,
    /// A method the protocol does not have.
    MethodNotAllowed,
    /// No credentials, or invalid or revoked ones (see [`authorize`](crate::authorize)).
    Unauthenticated,
    /// The credentials do not grant creating this stream. (The other operations a grant lacks
    /// answer as if the stream did not exist.)
    Forbidden,
    /// The stream name, the path after the prefix, is longer than `max` bytes.
    NameTooLong {
        /// The longest name, in bytes.
        max: usize,
    },
    /// The body is larger than `max` bytes.
    BodyTooLarge {
        /// The largest body, in bytes.
        max: usize,
    },
    /// The body could not be read.
    BodyUnreadable,
    /// `Content-Type` is not text.
    InvalidContentType,
    /// `Stream-TTL` or `Stream-Expires-At` is not text.
    InvalidExpiry,
    /// Both `Stream-TTL` and `Stream-Expires-At`.
    TtlAndExpiresAt,
    /// `Stream-TTL` is not a whole number of seconds below 2^64.
    InvalidTtl,
    /// `Stream-Expires-At` is not RFC 3339.
    InvalidExpiresAt,
    /// A fork header is not text.
    InvalidFork,
    /// `Stream-Fork-Offset` is not an offset.
    InvalidForkOffset,
    /// `Stream-Fork-Sub-Offset` without `Stream-Forked-From`.
    SubOffsetWithoutFork,
    /// `Stream-Fork-Sub-Offset` is not a whole number.
    InvalidForkSubOffset,
    /// Some of the producer headers, not all three.
    PartialProducer,
    /// `Producer-Id` is empty (or not text).
    InvalidProducerId,
    /// `Producer-Id` is longer than `max` bytes.
    ProducerIdTooLong {
        /// The longest id, in bytes.
        max: usize,
    },
    /// `Producer-Epoch` or `Producer-Seq` is not a whole number up to 2^53 - 1.
    InvalidProducerNumber,
    /// An append with neither a body nor `Stream-Closed: true`.
    EmptyBody,
    /// An append with a body but no `Content-Type`.
    MissingContentType,
    /// `Stream-Seq` is not text.
    InvalidStreamSeq,
    /// `offset` given more than once.
    RepeatedOffset,
    /// `offset` is not `-1`, `now` or an offset.
    InvalidOffset,
    /// `live` is neither `long-poll` nor `sse`.
    InvalidLive,
    /// A live read without `offset`.
    MissingOffset,
}

impl Error {
    /// The status the protocol answers with.
    fn status(&self) -> StatusCode {
        match self {
            Self::Store(err) => err.status(),
            Self::Deleted => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NameTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable
            | Self::InvalidContentType
            | Self::InvalidExpiry
            | Self::TtlAndExpiresAt
            | Self::InvalidTtl
            | Self::InvalidExpiresAt
            | Self::InvalidFork
            | Self::InvalidForkOffset
            | Self::SubOffsetWithoutFork
            | Self::InvalidForkSubOffset
            | Self::PartialProducer
            | Self::InvalidProducerId
            | Self::ProducerIdTooLong { .. }
            | Self::InvalidProducerNumber
            | Self::EmptyBody
            | Self::MissingContentType
            | Self::InvalidStreamSeq
            | Self::RepeatedOffset
            | Self::InvalidOffset
            | Self::InvalidLive
            | Self::MissingOffset => StatusCode::BAD_REQUEST,
        }
    }

    /// The machine-readable code of the problem.
    fn code(&self) -> &'static str {
        match self {
            Self::Store(err) => err.code(),
            Self::Deleted => "stream_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NameTooLong { .. } => "stream_name_too_long",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::InvalidContentType => "invalid_content_type",
            Self::InvalidExpiry => "invalid_expiry",
            Self::TtlAndExpiresAt => "ttl_and_expires_at",
            Self::InvalidTtl => "invalid_ttl",
            Self::InvalidExpiresAt => "invalid_expires_at",
            Self::InvalidFork => "invalid_fork",
            Self::InvalidForkOffset => "invalid_fork_offset",
            Self::SubOffsetWithoutFork => "sub_offset_without_fork",
            Self::InvalidForkSubOffset => "invalid_fork_sub_offset",
            Self::PartialProducer => "partial_producer",
            Self::InvalidProducerId => "invalid_producer_id",
            Self::ProducerIdTooLong { .. } => "producer_id_too_long",
            Self::InvalidProducerNumber => "invalid_producer_number",
            Self::EmptyBody => "empty_body",
            Self::MissingContentType => "missing_content_type",
            Self::InvalidStreamSeq => "invalid_stream_seq",
            Self::RepeatedOffset => "repeated_offset",
            Self::InvalidOffset => "invalid_offset",
            Self::InvalidLive => "invalid_live",
            Self::MissingOffset => "missing_offset",
        }
    }

    /// The answer: the status, `Content-Type: application/json` and the body
    /// `{"error":"<code>","message":"<message>"}`; `Allow` for a method the protocol does not
    /// have; `WWW-Authenticate: Bearer` for missing credentials; for a store's refusal, `Stream-Closed` and `Stream-Next-Offset` (a closed stream),
    /// `Producer-Epoch` (a stale producer epoch), `Producer-Expected-Seq` and
    /// `Producer-Received-Seq` (a producer's sequence gap).
    pub(crate) fn into_response(self) -> Response<PushBody> {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = Response::new(PushBody::full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Self::MethodNotAllowed => {
                let methods = "GET, HEAD, PUT, POST, DELETE, OPTIONS";
                headers.insert(ALLOW, HeaderValue::from_static(methods));
            }
            Self::Unauthenticated => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Store(StoreError::Closed { tail }) => {
                set_true(headers, STREAM_CLOSED);
                headers.insert(STREAM_NEXT_OFFSET, tail.to_header_value());
            }
            Self::Store(StoreError::StaleEpoch { current }) => {
                headers.insert(PRODUCER_EPOCH, HeaderValue::from(current));
            }
            Self::Store(StoreError::Unavailable) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Store(StoreError::SeqGap { expected, received }) => {
                headers.insert(PRODUCER_EXPECTED_SEQ, HeaderValue::from(expected));
                headers.insert(PRODUCER_RECEIVED_SEQ, HeaderValue::from(received));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(err) => err.fmt(f),
            Self::Deleted => f.write_str("the stream was deleted"),
            Self::MethodNotAllowed => f.write_str("use GET, HEAD, PUT, POST, DELETE or OPTIONS"),
            Self::Unauthenticated => f.write_str(
                "credentials are missing, invalid or revoked: authenticate and try again",
            ),
            Self::Forbidden => f.write_str("these credentials may not create this stream"),
            Self::NameTooLong { max } => {
                write!(f, "the stream name is longer than {max} bytes")
            }
            Self::BodyTooLarge { max } => write!(f, "the body is larger than {max} bytes"),
            Self::BodyUnreadable => f.write_str("the request body could not be read"),
            Self::InvalidContentType => f.write_str("content-type is not text"),
            Self::InvalidExpiry => f.write_str("stream-ttl or stream-expires-at is not text"),
            Self::TtlAndExpiresAt => f.write_str("give stream-ttl or stream-expires-at, not both"),
            Self::InvalidTtl => {
                f.write_str("stream-ttl is not a whole number of seconds below 2^64")
            }
            Self::InvalidExpiresAt => f.write_str("stream-expires-at is not RFC 3339"),
            Self::InvalidFork => f.write_str("a fork header is not text"),
            Self::InvalidForkOffset => f.write_str("stream-fork-offset is not an offset"),
            Self::SubOffsetWithoutFork => {
                f.write_str("stream-fork-sub-offset needs stream-forked-from")
            }
            Self::InvalidForkSubOffset => {
                f.write_str("stream-fork-sub-offset is not a whole number")
            }
            Self::PartialProducer => {
                f.write_str("give producer-id, producer-epoch and producer-seq together")
            }
            Self::InvalidProducerId => f.write_str("producer-id is empty"),
            Self::ProducerIdTooLong { max } => {
                write!(f, "producer-id is longer than {max} bytes")
            }
            Self::InvalidProducerNumber => {
                f.write_str("producer-epoch and producer-seq are whole numbers up to 2^53 - 1")
            }
            Self::EmptyBody => f.write_str("an append needs a body (or stream-closed: true)"),
            Self::MissingContentType => f.write_str("an append needs a content-type"),
            Self::InvalidStreamSeq => f.write_str("stream-seq is not text"),
            Self::RepeatedOffset => f.write_str("give offset once"),
            Self::InvalidOffset => {
                f.write_str("offset is not -1, now, or 16 digits, '_', 16 digits")
            }
            Self::InvalidLive => f.write_str("live is long-poll or sse"),
            Self::MissingOffset => f.write_str("live reads need an offset"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::Offset;
    use http_body_util::BodyExt;

    async fn json(response: Response<PushBody>) -> serde_json::Value {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn errors_answer_with_status_code_message_and_headers() {
        let response = Error::BodyTooLarge { max: 64 }.into_response();
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            json(response).await,
            serde_json::json!({
                "error": "body_too_large",
                "message": "the body is larger than 64 bytes",
            })
        );

        let closed = StoreError::Closed {
            tail: Offset::new(2),
        };
        let response = Error::from(closed).into_response();
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()[STREAM_CLOSED], "true");
        assert_eq!(
            response.headers()[STREAM_NEXT_OFFSET],
            "0000000000000000_0000000000000002"
        );
        assert_eq!(json(response).await["error"], "stream_closed");

        let response = Error::MethodNotAllowed.into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(
            response.headers()[ALLOW],
            "GET, HEAD, PUT, POST, DELETE, OPTIONS"
        );
        let response = Error::Deleted.into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(json(response).await["error"], "stream_not_found");
    }
}
