//! Wire formats: how answers are written on the wire.
//!
//! The layers decide *what* to answer (events, an empty hold, a heartbeat, a rejection); a format
//! decides how it looks.
//!
//! - [`PollFormat`] writes long-poll answers; [`JsonFormat`] is the default.
//! - [`StreamFormat`] writes stream messages; [`NdjsonFormat`] and [`SseFormat`] are the built-in
//!   ones, and [`AutoFormat`], the default, picks one of them per request from `Accept`.
//!
//! A format may also say where a request starts reading ([`PollFormat::start`],
//! [`StreamFormat::start`]), for a protocol that names positions its own way; by default the
//! layers read their cursor parameter (`after`, `Last-Event-ID`).
//!
//! The layers add the anti-buffering headers (see [`crate::headers`]) to every response
//! afterwards, so a format need not and cannot leave them out.

mod auto;
pub(crate) mod json;
mod ndjson;
pub(crate) mod sse;

pub use self::auto::{AutoFormat, Framing};
pub use self::json::JsonFormat;
pub use self::ndjson::NdjsonFormat;
pub use self::sse::SseFormat;

/// What a [`StreamFormat`] writes the same bytes for: see [`StreamFormat::frame_key`].
///
/// It is made from the format's type and a number the format chooses for its own variants (a
/// setting that changes how events are written), so that two formats cannot share a key by
/// accident and send each other's bytes.
///
/// # Examples
///
/// ```
/// use tower_push::format::{FrameKey, NdjsonFormat, SseFormat};
///
/// assert_eq!(FrameKey::of::<SseFormat>(0), FrameKey::of::<SseFormat>(0));
/// assert_ne!(FrameKey::of::<SseFormat>(0), FrameKey::of::<NdjsonFormat>(0));
/// assert_ne!(FrameKey::of::<SseFormat>(0), FrameKey::of::<SseFormat>(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameKey {
    format: std::any::TypeId,
    variant: u64,
}

impl FrameKey {
    /// The key of format `F`'s events written in its variant `variant`.
    pub fn of<F: StreamFormat>(variant: u64) -> Self {
        Self {
            format: std::any::TypeId::of::<F>(),
            variant,
        }
    }
}

use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Response};

use crate::source::{Batch, Position};
use crate::{CompositeCursor, Event, PushBody, Rejection};

/// How a long-poll layer writes its answers.
///
/// # Examples
///
/// A format that answers an empty hold with `200` and an empty list instead of `204`, for
/// clients that cannot handle `204`:
///
/// ```
/// use http::Response;
/// use tower_push::format::{JsonFormat, PollFormat};
/// use tower_push::source::Batch;
/// use tower_push::{LongPollLayer, PushBody, CompositeCursor};
///
/// #[derive(Clone, Debug)]
/// struct AlwaysOk;
///
/// impl PollFormat for AlwaysOk {
///     fn events(&self, batch: &Batch) -> Response<PushBody> {
///         JsonFormat.events(batch)
///     }
///
///     fn timeout(&self, cursor: &CompositeCursor) -> Response<PushBody> {
///         Response::new(PushBody::full(format!(r#"{{"events":[],"cursor":"{cursor}"}}"#)))
///     }
/// }
///
/// let layer = LongPollLayer::builder().format(AlwaysOk).build()?;
/// # let _ = layer;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub trait PollFormat: Clone + Send + Sync + 'static {
    /// Where the request with head `parts` starts reading: for a protocol that names positions
    /// its own way (another query parameter, another text form), or a format made for one
    /// request that knows its position already.
    ///
    /// `Ok(None)`, the default, lets the layer read its cursor parameter (`after` or
    /// `Last-Event-ID`, and `topics` for a multiplexed request), or start at its origin when the
    /// request names none. `Ok(Some(position))` starts the request at `position`, following one
    /// log, whatever its cursor parameter says. `Err` refuses the request with that rejection,
    /// written by [`rejection`](Self::rejection). The layer asks after its own checks of the
    /// request (method, head size, shutdown) and before it takes a place under its caps.
    ///
    /// # Examples
    ///
    /// The default JSON answers, for clients that name their position as `?seq=<n>`:
    ///
    /// ```
    /// use http::request::Parts;
    /// use http::Response;
    /// use tower_push::format::{JsonFormat, PollFormat};
    /// use tower_push::source::{Batch, Position};
    /// use tower_push::{Cursor, CursorError, Epoch, PushBody, Rejection, CompositeCursor};
    ///
    /// #[derive(Clone, Debug)]
    /// struct Numbered;
    ///
    /// impl PollFormat for Numbered {
    ///     fn start(&self, parts: &Parts) -> Result<Option<Position>, Rejection> {
    ///         let Some(seq) = parts.uri.query().and_then(|q| q.strip_prefix("seq=")) else {
    ///             return Ok(None);
    ///         };
    ///         let seq = seq
    ///             .parse()
    ///             .map_err(|_| Rejection::MalformedCursor(CursorError::InvalidSequence))?;
    ///         Ok(Some(Position::After(Cursor::new(Epoch::new(1), seq))))
    ///     }
    ///
    ///     fn events(&self, batch: &Batch) -> Response<PushBody> {
    ///         JsonFormat.events(batch)
    ///     }
    ///
    ///     fn timeout(&self, cursor: &CompositeCursor) -> Response<PushBody> {
    ///         JsonFormat.timeout(cursor)
    ///     }
    /// }
    ///
    /// let head = |uri| http::Request::get(uri).body(()).unwrap().into_parts().0;
    /// let after = Position::After(Cursor::new(Epoch::new(1), 4));
    /// assert_eq!(Numbered.start(&head("/poll?seq=4")), Ok(Some(after)));
    /// assert_eq!(Numbered.start(&head("/poll")), Ok(None));
    /// assert!(Numbered.start(&head("/poll?seq=x")).is_err());
    /// ```
    fn start(&self, parts: &Parts) -> Result<Option<Position>, Rejection> {
        let _ = parts;
        Ok(None)
    }

    /// The answer carrying `batch`, the events after the request's cursor.
    fn events(&self, batch: &Batch) -> Response<PushBody>;

    /// The answer when the hold expired without events; `cursor` is where the client stands
    /// (for a multiplexed request, its composite cursor).
    fn timeout(&self, cursor: &CompositeCursor) -> Response<PushBody>;

    /// The answer at once when the source's log has ended at `cursor`, where the client stands
    /// ([`Outcome::Closed`](crate::source::Outcome::Closed)): no event will ever come.
    ///
    /// The default is the [`timeout`](Self::timeout) answer.
    fn closed(&self, cursor: &CompositeCursor) -> Response<PushBody> {
        self.timeout(cursor)
    }

    /// Whether [`events`](Self::events) depends on the batch alone (not on the request, nor on
    /// anything else that changes). Then the polls a publish wakes share one answer: a source
    /// hands the same batch to every poll waiting at one cursor, and the layer encodes it for
    /// the second poll answered with it and gives every later one a copy of the status, headers
    /// and body bytes (a poll at a cursor of its own keeps nothing for others).
    ///
    /// The default is `false`: every answer is written by [`events`](Self::events). The
    /// built-in [`JsonFormat`] says `true`.
    fn shares_answers(&self) -> bool {
        false
    }

    /// The answer to a held poll that the server's shutdown ends: `cursor` is where the client
    /// stands, and `retry` how long it should wait before it polls again, drawn at random from
    /// the layer's [reconnect window](crate::LongPollBuilder::reconnect_window) so that the
    /// clients of one shutdown do not all return at once.
    ///
    /// The default is the [`timeout`](Self::timeout) answer (`204` with `Push-Cursor` in
    /// [`JsonFormat`]: nothing happened, nothing is lost) with
    /// [`Push-Retry-Ms`](crate::headers::PUSH_RETRY_MS) and `Retry-After` (whole seconds,
    /// rounded up). A `204`, not a `503`: the poll was answered, and a client that ignores the
    /// hint still behaves correctly; the new requests of a draining server get `503` anyway.
    fn shutdown(&self, cursor: &CompositeCursor, retry: Duration) -> Response<PushBody> {
        let mut response = self.timeout(cursor);
        let headers = response.headers_mut();
        headers.insert(
            crate::headers::PUSH_RETRY_MS,
            HeaderValue::from(retry.as_millis() as u64),
        );
        let seconds = retry.as_millis().div_ceil(1000) as u64;
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }

    /// The answer to a request that gets an error status.
    ///
    /// The default writes [`Rejection::to_json_response`].
    fn rejection(&self, rejection: &Rejection) -> Response<PushBody> {
        rejection.to_json_response()
    }
}

/// Why a stream ends, for its final message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// The stream reached its maximum lifetime. The client reconnects from `cursor`.
    Lifetime {
        /// The cursor to resume from: the last event sent, or where the stream started.
        cursor: CompositeCursor,
    },
    /// The server is shutting down. The client reconnects from `cursor` after `retry`.
    Shutdown {
        /// The cursor to resume from.
        cursor: CompositeCursor,
        /// How long the client should wait before it reconnects: drawn at random from the
        /// layer's [reconnect window](crate::ChunkedStreamBuilder::reconnect_window), so that
        /// the clients of one shutdown do not all return at once.
        retry: Duration,
    },
    /// The stream cannot go on: the client fell behind retention
    /// ([`Rejection::Resync`]), the log was deleted ([`Rejection::Gone`]), or the source
    /// failed.
    Rejected(Rejection),
    /// The source's log has ended at `cursor`
    /// ([`Outcome::Closed`](crate::source::Outcome::Closed)): the client has everything, and
    /// nothing more will come.
    Closed {
        /// The cursor of the last event.
        cursor: CompositeCursor,
    },
}

impl StreamEnd {
    /// The final message as a JSON object: `{"end":"lifetime","cursor":"<cursor>"}`,
    /// `{"end":"closed","cursor":"<cursor>"}` or
    /// `{"end":"shutdown","cursor":"<cursor>","retry_ms":<delay>}` for a clean end, and the body
    /// of [`Rejection::to_json`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::format::StreamEnd;
    /// use tower_push::{Cursor, Epoch};
    ///
    /// let end = StreamEnd::Lifetime { cursor: Cursor::new(Epoch::new(1), 4).into() };
    /// assert_eq!(end.to_json(), br#"{"end":"lifetime","cursor":"0000000000000001-4"}"#);
    /// ```
    pub fn to_json(&self) -> Vec<u8> {
        let (kind, cursor, retry) = match self {
            Self::Lifetime { cursor } => ("lifetime", cursor, None),
            Self::Closed { cursor } => ("closed", cursor, None),
            Self::Shutdown { cursor, retry } => ("shutdown", cursor, Some(retry)),
            Self::Rejected(rejection) => return rejection.to_json(),
        };
        let mut json = Vec::with_capacity(80);
        json.extend_from_slice(b"{\"end\":\"");
        json.extend_from_slice(kind.as_bytes());
        json.extend_from_slice(b"\",\"cursor\":\"");
        cursor.push(&mut json);
        json.push(b'"');
        if let Some(retry) = retry {
            json.extend_from_slice(format!(",\"retry_ms\":{}", retry.as_millis()).as_bytes());
        }
        json.push(b'}');
        json
    }
}

/// How a stream layer writes its messages.
///
/// Every method appends complete messages to `out`; the stream sends what one call wrote (or
/// what several calls wrote for events that were ready together) as one frame.
///
/// # Examples
///
/// A format of plain text lines, one payload per line:
///
/// ```
/// use http::HeaderValue;
/// use tower_push::format::{StreamEnd, StreamFormat};
/// use tower_push::{ChunkedStreamLayer, Event};
///
/// #[derive(Clone, Debug)]
/// struct Lines;
///
/// impl StreamFormat for Lines {
///     fn content_type(&self) -> HeaderValue {
///         HeaderValue::from_static("text/plain; charset=utf-8")
///     }
///
///     fn event(&self, event: &Event, out: &mut Vec<u8>) {
///         out.extend_from_slice(event.data().as_bytes());
///         out.push(b'\n');
///     }
///
///     fn heartbeat(&self, out: &mut Vec<u8>) {
///         out.push(b'\n');
///     }
///
///     fn end(&self, _end: &StreamEnd, _out: &mut Vec<u8>) {}
/// }
///
/// let layer = ChunkedStreamLayer::builder().format(Lines).build()?;
/// # let _ = layer;
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
pub trait StreamFormat: Clone + Send + Sync + 'static {
    /// The format to use for one request, chosen from its head (content negotiation).
    ///
    /// The default keeps `self`.
    #[must_use]
    fn negotiate(&self, parts: &Parts) -> Self {
        let _ = parts;
        self.clone()
    }

    /// Where the request with head `parts` starts reading; asked of the format that
    /// [`negotiate`](Self::negotiate) chose. See [`PollFormat::start`].
    ///
    /// The default is `Ok(None)`: the layer reads its cursor parameter.
    fn start(&self, parts: &Parts) -> Result<Option<Position>, Rejection> {
        let _ = parts;
        Ok(None)
    }

    /// The `Content-Type` of the stream.
    fn content_type(&self) -> HeaderValue;

    /// Writes what opens a stream that starts after `cursor` (for a multiplexed request, its
    /// composite cursor), before any event.
    ///
    /// The default writes nothing.
    fn open(&self, cursor: &CompositeCursor, out: &mut Vec<u8>) {
        let _ = (cursor, out);
    }

    /// Writes one event. In the answer to a multiplexed request, [`Event::topic`] names its
    /// topic and [`Event::composite_cursor`] is the composite cursor to resume after it.
    fn event(&self, event: &Event, out: &mut Vec<u8>);

    /// Writes the events of `batch`, which went out together.
    ///
    /// The default writes each with [`event`](Self::event). A format that says something about
    /// the batch as a whole (that it [reaches the head](Batch::reaches_head)) writes it here.
    fn batch(&self, batch: &Batch, out: &mut Vec<u8>) {
        for event in batch.events() {
            self.event(event, out);
        }
    }

    /// A key for sharing encoded events: formats with the same key write the same bytes for the
    /// same event, whatever else they hold. The streams a publish wakes at one cursor then share
    /// one encoding of its events (a source hands them the same batch): the first writes the
    /// frame, the others send the same bytes.
    ///
    /// The default is `None`: every stream writes its own. The built-in formats give one key
    /// per framing (NDJSON, SSE). A key is made from the format's type ([`FrameKey::of`]), so
    /// the keys of two formats never collide.
    fn frame_key(&self) -> Option<FrameKey> {
        None
    }

    /// Writes a heartbeat. It must write at least one byte: hyper drops empty frames, and an
    /// idle proxy only sees bytes.
    fn heartbeat(&self, out: &mut Vec<u8>);

    /// Writes the final message of a stream.
    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>);

    /// The answer to a request that is refused before the stream starts.
    ///
    /// The default writes [`Rejection::to_json_response`].
    fn rejection(&self, rejection: &Rejection) -> Response<PushBody> {
        rejection.to_json_response()
    }
}
