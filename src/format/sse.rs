use std::time::Duration;

use http::HeaderValue;

use super::json::push_event_object;
use super::{FrameKey, StreamEnd, StreamFormat};
use crate::{CompositeCursor, Event, Rejection};

/// Server-sent events (`text/event-stream`), as the WHATWG HTML standard defines them, readable
/// by a browser's `EventSource`.
///
/// | message | meaning |
/// | --- | --- |
/// | `retry: <ms>` then `id: <cursor>` | opens the stream: the reconnection delay if one is set, and the start cursor, so a client that reconnects before any event still resumes without a gap (an `id` without `data` sets `lastEventId` and dispatches nothing) |
/// | `id: <cursor>`, optional `event: <name>`, `data: <event JSON>` | an event; `EventSource` sends the id back as `Last-Event-ID` when it reconnects |
/// | `id: <composite>`, optional `event: <name>`, `data: {"id":"<cursor>","topic":"<topic>","data":<event JSON>}` | an event of a multiplexed stream: the id is the composite cursor after it, so that `Last-Event-ID` resumes every topic |
/// | `: heartbeat` | a comment that keeps proxies from closing an idle stream; `EventSource` ignores it |
/// | `event: end`, `data: {"end":"lifetime"\|"shutdown","cursor":"..."}` | the stream ends cleanly; `EventSource` reconnects by itself |
/// | `event: resync`, `data: {"error":"cursor_expired",...}` | the client fell behind retention: close the `EventSource`, reload state, open a new one without `Last-Event-ID` |
/// | `event: gone`, `data: {"error":"topic_gone",...}` | the log was deleted: close the `EventSource`, since a new request gets `404` |
/// | `event: failed`, `data: {"error":"<code>",...}` | the source failed; the stream ends and `EventSource` reconnects |
///
/// Data is split into one `data:` line per line of the payload, as the standard requires, so no
/// payload can break a field (payloads are single-line JSON already).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_push::format::{SseFormat, StreamFormat};
/// use tower_push::{Cursor, Epoch, Event, EventData};
///
/// let sse = SseFormat::new().retry(Duration::from_secs(2));
/// let mut out = Vec::new();
/// let event = Event::new(Cursor::new(Epoch::new(1), 7), EventData::from_json("[1]")?);
/// sse.event(&event, &mut out);
/// assert_eq!(out, b"id: 0000000000000001-7\ndata: [1]\n\n");
/// # Ok::<(), tower_push::InvalidJson>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SseFormat {
    retry: Option<Duration>,
}

impl SseFormat {
    /// SSE without a `retry:` hint (clients use their own reconnection delay, about 3 seconds
    /// in browsers).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `retry: <milliseconds>` when the stream opens: how long `EventSource` waits before
    /// it reconnects after the stream ends.
    ///
    /// Default is none.
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }
}

/// Appends one `data: ` line per line of `payload`, splitting at CRLF, CR and LF as the
/// standard's parser does.
fn push_data(out: &mut Vec<u8>, payload: &[u8]) {
    push_lines(out, b"data: ", payload);
}

/// Appends one line per line of `payload`, each starting with `field` (`data: `, or `data:` for
/// formats that write no space), split at CRLF, CR and LF, so that no payload can break a field
/// or end an event.
pub(crate) fn push_lines(out: &mut Vec<u8>, field: &[u8], payload: &[u8]) {
    let mut rest = payload;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.extend_from_slice(field);
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

fn push_message(out: &mut Vec<u8>, name: &str, payload: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    push_data(out, payload);
    out.push(b'\n');
}

impl StreamFormat for SseFormat {
    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/event-stream")
    }

    /// Events are written the same whatever `retry` is: it only goes into the opening and the
    /// shutdown message.
    fn frame_key(&self) -> Option<FrameKey> {
        Some(FrameKey::of::<Self>(0))
    }

    fn open(&self, cursor: &CompositeCursor, out: &mut Vec<u8>) {
        if let Some(retry) = self.retry {
            out.extend_from_slice(format!("retry: {}\n", retry.as_millis()).as_bytes());
        }
        out.extend_from_slice(b"id: ");
        cursor.push(out);
        out.extend_from_slice(b"\n\n");
    }

    fn event(&self, event: &Event, out: &mut Vec<u8>) {
        out.extend_from_slice(b"id: ");
        event.push_composite_cursor(out);
        out.push(b'\n');
        if let Some(name) = event.name() {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_str().as_bytes());
            out.push(b'\n');
        }
        if event.topic().is_some() {
            // A multiplexed stream: the data says which topic the event comes from.
            let mut object = Vec::with_capacity(event.data().as_bytes().len() + 80);
            push_event_object(&mut object, event);
            push_data(out, &object);
        } else {
            push_data(out, &event.data().to_json());
        }
        out.push(b'\n');
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b": heartbeat\n\n");
    }

    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>) {
        if let StreamEnd::Shutdown { retry, .. } = end {
            // `EventSource` waits this long before it reconnects: the clients of one shutdown
            // come back spread over the reconnect window.
            out.extend_from_slice(format!("retry: {}\n", retry.as_millis()).as_bytes());
        }
        let name = match end {
            StreamEnd::Lifetime { .. } | StreamEnd::Closed { .. } | StreamEnd::Shutdown { .. } => {
                "end"
            }
            StreamEnd::Rejected(Rejection::Resync(_) | Rejection::TopicResync { .. }) => "resync",
            StreamEnd::Rejected(Rejection::Gone { .. }) => "gone",
            StreamEnd::Rejected(_) => "failed",
        };
        push_message(out, name, &end.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Resync, ResyncReason};
    use crate::{Cursor, Epoch, EventData, EventName};
    use proptest::prelude::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn c(seq: u64) -> Cursor {
        Cursor::new(Epoch::new(3), seq)
    }

    #[test]
    fn fields_are_exact() {
        let sse = SseFormat::new().retry(Duration::from_millis(1500));
        assert_eq!(
            text(|out| sse.open(&c(0).into(), out)),
            "retry: 1500\nid: 0000000000000003-0\n\n"
        );
        assert_eq!(
            text(|out| SseFormat::new().open(&c(0).into(), out)),
            "id: 0000000000000003-0\n\n"
        );
        let event = Event::new(c(1), EventData::from_json("{\"a\":1}").unwrap())
            .with_name(EventName::new("tick").unwrap());
        assert_eq!(
            text(|out| sse.event(&event, out)),
            "id: 0000000000000003-1\nevent: tick\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(text(|out| sse.heartbeat(out)), ": heartbeat\n\n");
        assert_eq!(
            text(|out| sse.end(
                &StreamEnd::Lifetime {
                    cursor: c(1).into()
                },
                out
            )),
            "event: end\ndata: {\"end\":\"lifetime\",\"cursor\":\"0000000000000003-1\"}\n\n"
        );
        assert_eq!(
            text(|out| {
                let retry = Duration::from_millis(2345);
                sse.end(
                    &StreamEnd::Shutdown {
                        cursor: c(1).into(),
                        retry,
                    },
                    out,
                )
            }),
            "retry: 2345\nevent: end\ndata: \
             {\"end\":\"shutdown\",\"cursor\":\"0000000000000003-1\",\"retry_ms\":2345}\n\n"
        );
        let resync = Rejection::Resync(Resync::new(ResyncReason::Expired, c(5), c(9)));
        let message = text(|out| sse.end(&StreamEnd::Rejected(resync), out));
        assert!(message.starts_with("event: resync\ndata: {\"error\":\"cursor_expired\""));
        let gone = text(|out| sse.end(&StreamEnd::Rejected(Rejection::Gone { topic: None }), out));
        assert!(
            gone.starts_with("event: gone\ndata: {\"error\":\"topic_gone\""),
            "{gone}"
        );
        let failed = text(|out| sse.end(&StreamEnd::Rejected(Rejection::SourceUnavailable), out));
        assert!(failed.starts_with("event: failed\ndata: {\"error\":\"source_unavailable\""));
    }

    #[test]
    fn multi_line_data_gets_one_field_per_line() {
        let out = text(|out| push_data(out, b"a\nb\r\nc\rd\n"));
        assert_eq!(out, "data: a\ndata: b\ndata: c\ndata: d\ndata: \n");
    }

    /// A minimal parser of the standard's data lines, to check that splitting round-trips.
    fn parse_data(stream: &[u8]) -> Vec<u8> {
        let mut lines = Vec::new();
        for line in stream.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let value = line.strip_prefix(b"data:").expect("only data lines");
            lines.push(value.strip_prefix(b" ").unwrap_or(value).to_vec());
        }
        lines.join(&b'\n')
    }

    proptest! {
        #[test]
        fn data_lines_never_break_a_field(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            push_data(&mut out, &payload);
            // Every line is a data field; no CR survives, and the lines rebuild the payload with
            // its line breaks normalised to LF.
            prop_assert!(!out.contains(&b'\r'));
            let normalised = String::from_utf8_lossy(&payload)
                .replace("\r\n", "\n")
                .replace('\r', "\n");
            let rebuilt = parse_data(&out);
            prop_assert_eq!(String::from_utf8_lossy(&rebuilt), normalised);
        }
    }
}
