//! Requests the layers answer without events, and the error body they share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::source::Resync;
use crate::{CompositeCursor, Cursor, CursorError, PushBody, TopicsError};

/// Why a request is answered with an error status instead of events.
///
/// Every rejection has a status, a machine-readable [`code`](Rejection::code) and a
/// human-readable message (its `Display`). The default formats write it as
/// `{"error":"<code>","message":"<message>"}`, plus `oldest` and `head` cursors where a client
/// needs them to start over.
///
/// | rejection | status | code |
/// | --- | --- | --- |
/// | [`MethodNotAllowed`](Rejection::MethodNotAllowed) | `405` with `Allow: GET, HEAD` | `method_not_allowed` |
/// | [`Unauthenticated`](Rejection::Unauthenticated) | `401` with `WWW-Authenticate: Bearer` | `unauthenticated` |
/// | [`HeadTooLarge`](Rejection::HeadTooLarge) | `431` | `head_too_large` |
/// | [`MalformedCursor`](Rejection::MalformedCursor) | `400` | `malformed_cursor` |
/// | [`CursorAhead`](Rejection::CursorAhead) | `400` | `cursor_ahead` |
/// | [`Resync`](Rejection::Resync), cursor too old | `410` | `cursor_expired` |
/// | [`Resync`](Rejection::Resync), other epoch | `410` | `epoch_mismatch` |
/// | [`Topics`](Rejection::Topics) | `400` | `too_many_topics` or `invalid_topics` |
/// | [`UnknownTopic`](Rejection::UnknownTopic) | `400` | `unknown_topic` |
/// | [`Gone`](Rejection::Gone) | `404` | `topic_gone` |
/// | [`TopicAhead`](Rejection::TopicAhead) | `400` | `cursor_ahead` |
/// | [`TopicResync`](Rejection::TopicResync) | `410` | `cursor_expired` or `epoch_mismatch` |
/// | [`SourceUnavailable`](Rejection::SourceUnavailable) | `503` | `source_unavailable` |
/// | [`ShuttingDown`](Rejection::ShuttingDown) | `503` with `Retry-After` | `shutting_down` |
/// | [`Overloaded`](Rejection::Overloaded) | `503` with `Retry-After` | `overloaded` |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The request's method is neither `GET` nor `HEAD`: push endpoints only read.
    MethodNotAllowed,
    /// The request carries no credentials, or ones that are invalid or were revoked (see
    /// [`authorize`](crate::authorize)): the client authenticates again.
    Unauthenticated,
    /// The request's head (URI and headers) is larger than the layer keeps for a held request
    /// (see the builders' `max_head_bytes`).
    HeadTooLarge {
        /// The size of the request's head, in bytes.
        size: usize,
        /// The largest head the layer accepts, in bytes.
        max: usize,
    },
    /// The request's cursor could not be parsed.
    MalformedCursor(CursorError),
    /// The request's cursor is beyond the newest event.
    CursorAhead {
        /// The newest event's id.
        head: Cursor,
    },
    /// The request's cursor can no longer be served.
    Resync(Resync),
    /// The topics of a multiplexed request are refused.
    Topics(TopicsError),
    /// The event source serves no topic of this name (`None`: the request names no topic, and
    /// the source serves topics by name only).
    UnknownTopic {
        /// The topic's name.
        topic: Option<Arc<str>>,
    },
    /// The log the request follows no longer exists
    /// ([`Outcome::Gone`](crate::source::Outcome::Gone)): it was deleted, or replaced by a new
    /// log of the same name. Nothing more will come after the request's cursor.
    Gone {
        /// The topic whose log is gone, for a multiplexed request; `None` for a request that
        /// follows one log.
        topic: Option<Arc<str>>,
    },
    /// A multiplexed request's position in `topic` is beyond that topic's newest event.
    TopicAhead {
        /// The topic.
        topic: Arc<str>,
        /// The request's composite cursor with `topic` at its newest event.
        head: CompositeCursor,
    },
    /// A multiplexed request's position in `topic` can no longer be served: that topic must
    /// resync, and only that one. `oldest` and `head` are the request's composite cursor with
    /// `topic`'s position moved, so the other topics resume exactly where they were.
    TopicResync {
        /// The topic that must resync.
        topic: Arc<str>,
        /// Why, and that topic's own oldest and head cursors.
        resync: Resync,
        /// The composite cursor that reads every retained event of `topic`.
        oldest: CompositeCursor,
        /// The composite cursor that reads only new events of `topic`.
        head: CompositeCursor,
    },
    /// The event source failed or did not answer.
    SourceUnavailable,
    /// The server is shutting down (see [`Shutdown`](crate::Shutdown)) and takes no new
    /// requests.
    ShuttingDown {
        /// When the client should come back; sent as `Retry-After` in whole seconds.
        retry_after: Duration,
    },
    /// A cap on parked polls or open streams is reached (see the layers' `max_*` settings).
    Overloaded {
        /// When the client should come back; sent as `Retry-After` in whole seconds.
        retry_after: Duration,
    },
}

impl Rejection {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MalformedCursor(_)
            | Self::CursorAhead { .. }
            | Self::Topics(_)
            | Self::UnknownTopic { .. }
            | Self::TopicAhead { .. } => StatusCode::BAD_REQUEST,
            Self::Resync(_) | Self::TopicResync { .. } => StatusCode::GONE,
            Self::Gone { .. } => StatusCode::NOT_FOUND,
            Self::SourceUnavailable | Self::ShuttingDown { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The machine-readable code of this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::HeadTooLarge { .. } => "head_too_large",
            Self::MalformedCursor(_) => "malformed_cursor",
            Self::CursorAhead { .. } | Self::TopicAhead { .. } => "cursor_ahead",
            Self::Resync(resync) | Self::TopicResync { resync, .. } => resync.reason().code(),
            Self::Topics(err) => err.code(),
            Self::UnknownTopic { .. } => "unknown_topic",
            Self::Gone { .. } => "topic_gone",
            Self::SourceUnavailable => "source_unavailable",
            Self::ShuttingDown { .. } => "shutting_down",
            Self::Overloaded { .. } => "overloaded",
        }
    }

    /// The rejection as a JSON object: `{"error":"<code>","message":"<message>"}`, with the
    /// `oldest` and `head` cursors where they apply. Stream formats send it as their final
    /// message.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            topic: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            oldest: Option<CompositeCursor>,
            #[serde(skip_serializing_if = "Option::is_none")]
            head: Option<CompositeCursor>,
        }
        let (topic, oldest, head) = match self {
            Self::CursorAhead { head } => (None, None, Some(CompositeCursor::from(*head))),
            Self::Resync(resync) => (
                None,
                Some(resync.oldest().into()),
                Some(resync.head().into()),
            ),
            Self::UnknownTopic { topic } | Self::Gone { topic } => (topic.as_deref(), None, None),
            Self::TopicAhead { topic, head } => (Some(&**topic), None, Some(head.clone())),
            Self::TopicResync {
                topic,
                oldest,
                head,
                ..
            } => (Some(&**topic), Some(oldest.clone()), Some(head.clone())),
            Self::MethodNotAllowed
            | Self::Unauthenticated
            | Self::HeadTooLarge { .. }
            | Self::MalformedCursor(_)
            | Self::Topics(_)
            | Self::SourceUnavailable
            | Self::ShuttingDown { .. }
            | Self::Overloaded { .. } => (None, None, None),
        };
        let body = Body {
            error: self.code(),
            message: self.to_string(),
            topic,
            oldest,
            head,
        };
        serde_json::to_vec(&body).expect("plain strings serialize")
    }

    /// The rejection as a JSON response: the status, `Content-Type: application/json`,
    /// `Retry-After` for [`ShuttingDown`](Rejection::ShuttingDown) and
    /// [`Overloaded`](Rejection::Overloaded), `Allow` for
    /// [`MethodNotAllowed`](Rejection::MethodNotAllowed), `WWW-Authenticate: Bearer` for
    /// [`Unauthenticated`](Rejection::Unauthenticated), and the body of
    /// [`to_json`](Rejection::to_json).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{CursorError, Rejection};
    ///
    /// let response = Rejection::MalformedCursor(CursorError::Empty).to_json_response();
    /// assert_eq!(response.status(), 400);
    /// ```
    pub fn to_json_response(&self) -> Response<PushBody> {
        let mut response = Response::new(PushBody::full(self.to_json()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::ShuttingDown { retry_after } | Self::Overloaded { retry_after } = self {
            let seconds = retry_after.as_secs().max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Self::MethodNotAllowed = self {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if let Self::Unauthenticated = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MethodNotAllowed => f.write_str("only GET and HEAD are served here"),
            Self::Unauthenticated => f.write_str(
                "credentials are missing, invalid or revoked: authenticate and try again",
            ),
            Self::HeadTooLarge { size, max } => write!(
                f,
                "request head of {size} bytes is larger than the {max} bytes kept for a held request"
            ),
            Self::MalformedCursor(err) => err.fmt(f),
            Self::CursorAhead { head } => {
                write!(f, "cursor is beyond the newest event {head}")
            }
            Self::Resync(resync) => write!(
                f,
                "{}: resume from 'oldest' to read every retained event, or from 'head' for new \
                 ones only",
                resync.reason()
            ),
            Self::Topics(err) => err.fmt(f),
            Self::UnknownTopic { topic: Some(topic) } => {
                write!(f, "no topic {topic:?} is served here")
            }
            Self::UnknownTopic { topic: None } => {
                // A source that serves topics by name only, asked without one; or a route the
                // request's credentials do not grant (see `authorize`): the same words for both.
                f.write_str("no topic served here answers this request")
            }
            Self::Gone { topic: Some(topic) } => write!(f, "topic {topic:?} was deleted"),
            Self::Gone { topic: None } => f.write_str("the log the request follows was deleted"),
            Self::TopicAhead { topic, .. } => {
                write!(f, "cursor of topic {topic:?} is beyond its newest event")
            }
            Self::TopicResync { topic, resync, .. } => write!(
                f,
                "topic {topic:?}: {}: resume from 'oldest' to read every retained event of it, \
                 or from 'head' for its new ones only; the other topics keep their positions",
                resync.reason()
            ),
            Self::SourceUnavailable => f.write_str("event source is unavailable, try again later"),
            Self::ShuttingDown { .. } => {
                f.write_str("server is shutting down, try again after the retry-after delay")
            }
            Self::Overloaded { .. } => {
                f.write_str("too many open requests, try again after the retry-after delay")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ResyncReason;
    use crate::Epoch;
    use http_body_util::BodyExt;

    async fn json(rejection: Rejection) -> (StatusCode, serde_json::Value) {
        let response = rejection.to_json_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The JSON answer to `rejection` has `status`, the code `error`, and `header` (with its
    /// value) among its headers; returns the body.
    async fn answers(
        rejection: Rejection,
        status: u16,
        error: &str,
        header: (header::HeaderName, &str),
    ) -> serde_json::Value {
        assert_eq!(rejection.to_json_response().headers()[&header.0], header.1);
        let (got, body) = json(rejection).await;
        assert_eq!(got, status);
        assert_eq!(body["error"], error);
        body
    }

    #[tokio::test]
    async fn bodies_carry_code_message_and_resync_cursors() {
        let (status, body) = json(Rejection::MalformedCursor(CursorError::Empty)).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            serde_json::json!({"error": "malformed_cursor", "message": "cursor is empty"})
        );

        let epoch = Epoch::new(1);
        let resync = Resync::new(
            ResyncReason::Expired,
            Cursor::new(epoch, 10),
            Cursor::new(epoch, 20),
        );
        let (status, body) = json(Rejection::Resync(resync)).await;
        assert_eq!(status, 410);
        assert_eq!(body["error"], "cursor_expired");
        assert_eq!(body["oldest"], "0000000000000001-10");
        assert_eq!(body["head"], "0000000000000001-20");

        let (status, body) = json(Rejection::CursorAhead {
            head: Cursor::new(epoch, 3),
        })
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "cursor_ahead");
        assert_eq!(body["head"], "0000000000000001-3");
        assert!(body.get("oldest").is_none());

        let (status, body) = json(Rejection::Gone { topic: None }).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"], "topic_gone");
        assert!(body.get("topic").is_none());
        let topic = Some(Arc::from("news"));
        let (status, body) = json(Rejection::Gone { topic }).await;
        assert_eq!(status, 404);
        assert_eq!(body["topic"], "news");

        let (status, body) = json(Rejection::SourceUnavailable).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "source_unavailable");

        let shutting_down = Rejection::ShuttingDown {
            retry_after: Duration::from_secs(3),
        };
        let retry_after = (header::RETRY_AFTER, "3");
        answers(shutting_down, 503, "shutting_down", retry_after).await;
        let allow = (header::ALLOW, "GET, HEAD");
        answers(
            Rejection::MethodNotAllowed,
            405,
            "method_not_allowed",
            allow,
        )
        .await;

        let (status, body) = json(Rejection::HeadTooLarge {
            size: 9000,
            max: 8192,
        })
        .await;
        assert_eq!(status, 431);
        assert_eq!(body["error"], "head_too_large");
        assert!(body["message"].as_str().unwrap().contains("9000"));
    }
}
