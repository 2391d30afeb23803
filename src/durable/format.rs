//! How the live modes look on the wire: the protocol's long-poll answers and SSE events, as
//! formats of the crate's layers.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};

use super::answer::Error;
use super::headers::{
    set_true, STREAM_CLOSED, STREAM_CURSOR, STREAM_NEXT_OFFSET, STREAM_UP_TO_DATE,
};
use super::json_array::{inside, json_array};
use super::store::Mode;
use super::Offset;
use crate::format::sse::push_lines;
use crate::format::{PollFormat, StreamEnd, StreamFormat};
use crate::source::{Batch, Position};
use crate::{CompositeCursor, Cursor, Event, PushBody, Rejection};

fn offset(cursor: Cursor) -> Offset {
    Offset::new(cursor.seq())
}

/// The offset where a request stands. Every live read starts at a position in one stream (the
/// formats' `start`), which turns multiplexing off: a composite cursor cannot reach these
/// formats, and would read as the start.
fn offset_of(cursor: &CompositeCursor) -> Offset {
    Offset::new(cursor.single().map_or(0, Cursor::seq))
}

/// The body of a batch: the JSON array of every value, or the bytes one after another.
fn body(batch: &Batch) -> Bytes {
    let events = batch.events();
    if events.first().is_some_and(|e| !e.data().is_raw()) {
        // Each event holds the JSON array of its append: join what is inside.
        return json_array(events.iter().map(|e| inside(e.data().as_bytes()))).into();
    }
    let size: usize = events.iter().map(|e| e.data().as_bytes().len()).sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        out.extend_from_slice(event.data().as_bytes());
    }
    out.into()
}

/// The protocol's long-poll answers (`live=long-poll`): `200` with the data after the offset,
/// `204` with `Stream-Next-Offset` when the hold expires or the stream is closed at the tail.
///
/// [`DurableStreams`](super::DurableStreams) sets it on the long-poll layer it builds, and
/// makes one for each live read with what the answers say besides the data, found when the read
/// starts: where it starts (its [`start`](PollFormat::start)), the stream's `Content-Type` on
/// answers with data, and the `Stream-Cursor` on answers about an open stream. The default
/// knows none of these: it leaves the position to the layer's cursor parameter, and its
/// answers carry only what their events or offset say.
///
/// # Examples
///
/// ```
/// use tower_push::durable::DurablePoll;
/// use tower_push::format::PollFormat;
/// use tower_push::{Cursor, Epoch};
///
/// let closed = DurablePoll::default().closed(&Cursor::new(Epoch::new(1), 3).into());
/// assert_eq!(closed.status(), 204);
/// assert_eq!(closed.headers()["stream-next-offset"], "0000000000000000_0000000000000003");
/// assert_eq!(closed.headers()["stream-closed"], "true");
/// ```
#[derive(Clone, Debug, Default)]
pub struct DurablePoll {
    // Where the read starts, in the stream's incarnation; `None`: where the layer's cursor
    // parameter says.
    start: Option<Cursor>,
    // The stream's content type, on answers with data.
    content_type: Option<HeaderValue>,
    // The `Stream-Cursor` of answers about an open stream.
    stream_cursor: Option<u64>,
}

impl DurablePoll {
    /// The answers of one live read: it starts after `start`, its stream is of `content_type`,
    /// and `stream_cursor` is the `Stream-Cursor` of its answers.
    pub(crate) fn read(
        start: Cursor,
        content_type: Option<HeaderValue>,
        stream_cursor: u64,
    ) -> Self {
        Self {
            start: Some(start),
            content_type,
            stream_cursor: Some(stream_cursor),
        }
    }

    fn empty(cursor: &CompositeCursor) -> Response<PushBody> {
        let mut response = Response::new(PushBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(STREAM_NEXT_OFFSET, offset_of(cursor).to_header_value());
        set_true(headers, STREAM_UP_TO_DATE);
        response
    }

    /// Adds the `Stream-Cursor` to an answer about an open stream.
    fn open(&self, mut response: Response<PushBody>) -> Response<PushBody> {
        if let Some(cursor) = self.stream_cursor {
            let headers = response.headers_mut();
            headers.insert(STREAM_CURSOR, HeaderValue::from(cursor));
        }
        response
    }
}

impl PollFormat for DurablePoll {
    fn start(&self, _parts: &Parts) -> Result<Option<Position>, Rejection> {
        Ok(self.start.map(Position::After))
    }

    fn events(&self, batch: &Batch) -> Response<PushBody> {
        let mut response = Response::new(PushBody::full(body(batch)));
        let headers = response.headers_mut();
        if let Some(content_type) = &self.content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
        headers.insert(STREAM_NEXT_OFFSET, offset(batch.last()).to_header_value());
        if batch.reaches_head() {
            set_true(headers, STREAM_UP_TO_DATE);
        }
        if batch.closes() {
            set_true(headers, STREAM_CLOSED);
            return response;
        }
        self.open(response)
    }

    fn timeout(&self, cursor: &CompositeCursor) -> Response<PushBody> {
        self.open(Self::empty(cursor))
    }

    fn closed(&self, cursor: &CompositeCursor) -> Response<PushBody> {
        let mut response = Self::empty(cursor);
        set_true(response.headers_mut(), STREAM_CLOSED);
        response
    }

    fn rejection(&self, rejection: &Rejection) -> Response<PushBody> {
        rejected(rejection)
    }
}

/// A stream deleted (or recreated) while a reader waited reads as missing; one its reader may
/// no longer read (its grant revoked while it waited) exactly as one deleted then, so that the
/// reader cannot tell them apart; credentials revoked while it waited, as any request without
/// them.
fn rejected(rejection: &Rejection) -> Response<PushBody> {
    match rejection {
        Rejection::Gone { .. } | Rejection::UnknownTopic { .. } => Error::Deleted.into_response(),
        Rejection::Unauthenticated => Error::Unauthenticated.into_response(),
        other => other.to_json_response(),
    }
}

/// The protocol's SSE (`live=sse`): an `event: data` per append, each followed by an
/// `event: control` with the offset after it, and a final control with `streamClosed` when the
/// stream is closed. Payloads are text for `text/*`, one JSON array for JSON, and base64
/// otherwise.
///
/// [`DurableStreams`](super::DurableStreams) sets it on the stream layer it builds, and makes one
/// for each live read with what its messages depend on, found when the read starts: where it
/// starts (its [`start`](StreamFormat::start)), whether that is the tail, the payload mode of
/// the stream and the `streamCursor` of its controls. The default leaves the position to the
/// layer's cursor parameter and carries payloads as base64.
///
/// # Examples
///
/// ```
/// use tower_push::durable::DurableSse;
/// use tower_push::format::{StreamEnd, StreamFormat};
/// use tower_push::{Cursor, Epoch};
///
/// let mut out = Vec::new();
/// let end = StreamEnd::Closed { cursor: Cursor::new(Epoch::new(1), 2).into() };
/// DurableSse::default().end(&end, &mut out);
/// assert_eq!(
///     out,
///     b"event: control\ndata:{\"streamNextOffset\":\"0000000000000000_0000000000000002\",\
///       \"streamClosed\":true,\"upToDate\":true}\n\n"
/// );
/// ```
#[derive(Clone, Debug)]
pub struct DurableSse {
    // Where the read starts, in the stream's incarnation; `None`: where the layer's cursor
    // parameter says.
    start: Option<Cursor>,
    // Whether that is the tail of an open stream.
    at_tail: bool,
    mode: Mode,
    // The `streamCursor` of the controls.
    cursor: u64,
}

impl Default for DurableSse {
    fn default() -> Self {
        Self {
            start: None,
            at_tail: false,
            mode: Mode::Binary,
            cursor: 0,
        }
    }
}

impl DurableSse {
    /// The messages of one live read: it starts after `start` (`at_tail`: the tail of an open
    /// stream), its stream holds payloads of `mode`, and `cursor` is the `streamCursor` of its
    /// controls.
    pub(crate) fn read(start: Cursor, at_tail: bool, mode: Mode, cursor: u64) -> Self {
        Self {
            start: Some(start),
            at_tail,
            mode,
            cursor,
        }
    }

    fn control(&self, cursor: Cursor, up_to_date: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: control\ndata:{\"streamNextOffset\":\"");
        out.extend_from_slice(offset(cursor).to_string().as_bytes());
        out.extend_from_slice(b"\",\"streamCursor\":\"");
        out.extend_from_slice(self.cursor.to_string().as_bytes());
        out.push(b'"');
        if up_to_date {
            out.extend_from_slice(b",\"upToDate\":true");
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn data(&self, event: &Event, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: data\n");
        let bytes = event.data().as_bytes();
        match self.mode {
            Mode::Binary => {
                out.extend_from_slice(b"data:");
                base64(bytes, out);
                out.push(b'\n');
            }
            // One line already (JSON), or split at every line break so that no payload can
            // end the event.
            _ => push_lines(out, b"data:", bytes),
        }
        out.push(b'\n');
    }
}

/// Standard base64 with padding (RFC 4648).
pub(crate) fn base64(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

impl StreamFormat for DurableSse {
    fn start(&self, _parts: &Parts) -> Result<Option<Position>, Rejection> {
        Ok(self.start.map(Position::After))
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/event-stream")
    }

    fn open(&self, cursor: &CompositeCursor, out: &mut Vec<u8>) {
        // A reader at the tail learns at once that it is caught up; one with data to catch up
        // on learns it with the last of it.
        if let (true, Some(cursor)) = (self.at_tail, cursor.single()) {
            self.control(cursor, true, out);
        }
    }

    fn event(&self, event: &Event, out: &mut Vec<u8>) {
        self.data(event, out);
        self.control(event.id(), false, out);
    }

    fn batch(&self, batch: &Batch, out: &mut Vec<u8>) {
        let events = batch.events();
        for (i, event) in events.iter().enumerate() {
            self.data(event, out);
            let last = i + 1 == events.len();
            self.control(event.id(), last && batch.reaches_head(), out);
        }
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b": ping\n\n");
    }

    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>) {
        // A stream that reaches its lifetime or a shutdown just ends: the client reconnects from
        // the last control's offset.
        if let StreamEnd::Closed { cursor } = end {
            out.extend_from_slice(b"event: control\ndata:{\"streamNextOffset\":\"");
            out.extend_from_slice(offset_of(cursor).to_string().as_bytes());
            out.extend_from_slice(b"\",\"streamClosed\":true,\"upToDate\":true}\n\n");
        }
    }

    fn rejection(&self, rejection: &Rejection) -> Response<PushBody> {
        rejected(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Hello", "SGVsbG8="),
        ] {
            let mut out = Vec::new();
            base64(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded.as_bytes(), "{plain}");
        }
    }

    #[test]
    fn lines_never_end_an_event() {
        let mut out = Vec::new();
        push_lines(&mut out, b"data:", b"a\r\n\r\nevent: x\rb\n");
        assert_eq!(out, b"data:a\ndata:\ndata:event: x\ndata:b\ndata:\n");
    }
}
