use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::PollFormat;
use crate::headers::PUSH_CURSOR;
use crate::source::Batch;
use crate::{CompositeCursor, Cursor, Event, PushBody};

/// The default long-poll format: a JSON envelope, `204` on an empty hold, and the cursor in a
/// `Push-Cursor` header on both.
///
/// - Events: `200 OK`, `Content-Type: application/json`, body
///   `{"events":[{"id":"<cursor>","data":<event JSON>},...],"cursor":"<last id>"}`.
/// - Empty hold: `204 No Content` without a body.
/// - Both carry `Push-Cursor: <cursor>`: send it back as `after` to get what comes next.
/// - Rejections: the status and `{"error":"<code>","message":"..."}` of
///   [`Rejection::to_json_response`](crate::Rejection::to_json_response).
///
/// # Examples
///
/// ```
/// use tower_push::format::{JsonFormat, PollFormat};
/// use tower_push::{Cursor, Epoch};
///
/// let response = JsonFormat.timeout(&Cursor::new(Epoch::new(1), 5).into());
/// assert_eq!(response.status(), 204);
/// assert_eq!(response.headers()["push-cursor"], "0000000000000001-5");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFormat;

impl JsonFormat {
    /// Writes the JSON envelope of `batch`; also says where the closing cursor's text is.
    pub(crate) fn envelope(batch: &Batch) -> (Vec<u8>, std::ops::Range<usize>) {
        // Written by hand: the payloads are JSON already and are copied in as they are.
        const PER_EVENT: usize = r#"{"id":"","data":},"#.len() + Cursor::MAX_LEN;
        let events = batch.events();
        let payload: usize = events.iter().map(|e| e.data().as_bytes().len()).sum();
        let mut out = Vec::with_capacity(payload + events.len() * PER_EVENT + 96);
        out.extend_from_slice(br#"{"events":["#);
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_event_object(&mut out, event);
        }
        out.extend_from_slice(br#"],"cursor":""#);
        let start = out.len();
        batch.composite_cursor().push(&mut out);
        let cursor = start..out.len();
        out.extend_from_slice(br#""}"#);
        (out, cursor)
    }
}

/// Appends `{"id":"<cursor>","event":"<name>","data":<payload>}`, without `event` when the event
/// has no name; in the answer to a multiplexed request with `"topic":"<topic>"` after the id.
/// Neither cursors nor names nor topics ever need JSON escaping.
pub(crate) fn push_event_object(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(br#"{"id":""#);
    push_cursor(out, event.id());
    if let Some(topic) = event.topic() {
        out.extend_from_slice(br#"","topic":""#);
        out.extend_from_slice(topic.as_bytes());
    }
    if let Some(name) = event.name() {
        out.extend_from_slice(br#"","event":""#);
        out.extend_from_slice(name.as_str().as_bytes());
    }
    out.extend_from_slice(br#"","data":"#);
    out.extend_from_slice(&event.data().to_json());
    out.push(b'}');
}

/// Appends the text form of `cursor`, which never needs JSON escaping.
pub(crate) fn push_cursor(out: &mut Vec<u8>, cursor: Cursor) {
    out.extend_from_slice(cursor.text().as_bytes());
}

impl PollFormat for JsonFormat {
    fn events(&self, batch: &Batch) -> Response<PushBody> {
        let (envelope, cursor) = Self::envelope(batch);
        let body = Bytes::from(envelope);
        // `Push-Cursor` shares the body's bytes instead of formatting and copying them again.
        let cursor = HeaderValue::from_maybe_shared(body.slice(cursor))
            .expect("cursor text is a valid header value");
        let mut response = Response::new(PushBody::full(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(PUSH_CURSOR, cursor);
        response
    }

    fn shares_answers(&self) -> bool {
        true
    }

    fn timeout(&self, cursor: &CompositeCursor) -> Response<PushBody> {
        let mut response = Response::new(PushBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
            .headers_mut()
            .insert(PUSH_CURSOR, cursor.to_header_value());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, EventData, EventName};

    #[test]
    fn envelope_is_valid_json_with_raw_payloads() {
        let epoch = Epoch::new(2);
        let events = [r#"{"a":"x\"y"}"#, "[1,2]", "null"]
            .iter()
            .zip(1..)
            .map(|(json, seq)| {
                Event::new(
                    Cursor::new(epoch, seq),
                    EventData::from_json(*json).unwrap(),
                )
            })
            .collect();
        let batch = Batch::new(events).unwrap();
        let (bytes, cursor) = JsonFormat::envelope(&batch);
        assert_eq!(&bytes[cursor], b"0000000000000002-3");
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"events":[{"id":"0000000000000002-1","data":{"a":"x\"y"}},{"id":"0000000000000002-2","data":[1,2]},{"id":"0000000000000002-3","data":null}],"cursor":"0000000000000002-3"}"#
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["events"][0]["data"]["a"], "x\"y");
    }

    #[test]
    fn named_events_carry_their_name() {
        let event = Event::new(
            Cursor::new(Epoch::new(2), 1),
            EventData::from_json("1").unwrap(),
        )
        .with_name(EventName::new("tick").unwrap());
        let mut out = Vec::new();
        push_event_object(&mut out, &event);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"0000000000000002-1","event":"tick","data":1}"#
        );
    }

    #[test]
    fn raw_payloads_are_json_strings_in_every_json_framing() {
        use crate::format::{NdjsonFormat, SseFormat, StreamFormat};
        let event = Event::new(
            Cursor::new(Epoch::new(2), 1),
            EventData::from_bytes(&b"line\n\"two\"\r\n\x00"[..]),
        );
        let mut out = Vec::new();
        push_event_object(&mut out, &event);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["data"], "line\n\"two\"\r\n\u{0}");
        let mut line = Vec::new();
        NdjsonFormat.event(&event, &mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let mut sse = Vec::new();
        SseFormat::new().event(&event, &mut sse);
        let text = String::from_utf8(sse).unwrap();
        assert!(text.ends_with("\n\n") && text.matches("\n\n").count() == 1);
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(value, "line\n\"two\"\r\n\u{0}");
    }
}
