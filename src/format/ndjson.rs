use http::HeaderValue;

use super::json::push_event_object;
use super::{FrameKey, StreamEnd, StreamFormat};
use crate::Event;

/// Newline-delimited JSON (`application/x-ndjson`): one JSON object per line.
///
/// | line | meaning |
/// | --- | --- |
/// | `{"id":"<cursor>","data":<event JSON>}` | an event (with `"event":"<name>"` if it has a name) |
/// | `{"id":"<cursor>","topic":"<topic>","data":<event JSON>,"cursor":"<composite>"}` | an event of a multiplexed stream: its topic, its cursor in that topic, and the composite cursor to resume after it |
/// | `{"heartbeat":true}` | nothing new; keeps proxies from closing an idle stream |
/// | `{"end":"lifetime","cursor":"<cursor>"}` | the stream reached its lifetime: reconnect from `cursor` |
/// | `{"end":"shutdown","cursor":"<cursor>"}` | the server is shutting down: reconnect from `cursor` after a pause |
/// | `{"error":"<code>","message":"...",...}` | the stream cannot go on (the same body as a [`Rejection`](crate::Rejection)); for `cursor_expired`, resync |
///
/// A client tells the lines apart by their first key: `id`, `heartbeat`, `end` or `error`.
///
/// # Examples
///
/// ```
/// use tower_push::format::{NdjsonFormat, StreamFormat};
///
/// let mut out = Vec::new();
/// NdjsonFormat.heartbeat(&mut out);
/// assert_eq!(out, b"{\"heartbeat\":true}\n");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NdjsonFormat;

impl StreamFormat for NdjsonFormat {
    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("application/x-ndjson")
    }

    fn frame_key(&self) -> Option<FrameKey> {
        Some(FrameKey::of::<Self>(0))
    }

    fn event(&self, event: &Event, out: &mut Vec<u8>) {
        // Payloads are single-line JSON by construction (`EventData`).
        push_event_object(out, event);
        if event.topic().is_some() {
            // A multiplexed stream resumes from the composite cursor, not from the event's own.
            out.pop();
            out.extend_from_slice(b",\"cursor\":\"");
            event.push_composite_cursor(out);
            out.extend_from_slice(b"\"}");
        }
        out.push(b'\n');
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"heartbeat\":true}\n");
    }

    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>) {
        out.extend_from_slice(&end.to_json());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Resync, ResyncReason};
    use crate::{Cursor, Epoch, EventData, EventName, Rejection};

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_exact() {
        let c = |seq| Cursor::new(Epoch::new(3), seq);
        let event = Event::new(c(1), EventData::from_json("{\"a\":\n[1]}").unwrap());
        assert_eq!(
            text(|out| NdjsonFormat.event(&event, out)),
            "{\"id\":\"0000000000000003-1\",\"data\":{\"a\": [1]}}\n"
        );
        let named = event.with_name(EventName::new("x").unwrap());
        assert_eq!(
            text(|out| NdjsonFormat.event(&named, out)),
            "{\"id\":\"0000000000000003-1\",\"event\":\"x\",\"data\":{\"a\": [1]}}\n"
        );
        assert_eq!(
            text(|out| NdjsonFormat.end(
                &StreamEnd::Lifetime {
                    cursor: c(4).into()
                },
                out
            )),
            "{\"end\":\"lifetime\",\"cursor\":\"0000000000000003-4\"}\n"
        );
        assert_eq!(
            text(|out| {
                let retry = std::time::Duration::from_millis(2345);
                NdjsonFormat.end(
                    &StreamEnd::Shutdown {
                        cursor: c(4).into(),
                        retry,
                    },
                    out,
                )
            }),
            "{\"end\":\"shutdown\",\"cursor\":\"0000000000000003-4\",\"retry_ms\":2345}\n"
        );
        let resync = Rejection::Resync(Resync::new(ResyncReason::Expired, c(5), c(9)));
        let line = text(|out| NdjsonFormat.end(&StreamEnd::Rejected(resync), out));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["error"], "cursor_expired");
        assert_eq!(value["oldest"], "0000000000000003-5");
    }
}
