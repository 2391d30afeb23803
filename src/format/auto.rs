use http::header::ACCEPT;
use http::request::Parts;
use http::HeaderValue;

use super::{NdjsonFormat, SseFormat, StreamEnd, StreamFormat};
use crate::PushBody;
use crate::{CompositeCursor, Event, Rejection};

/// The two built-in stream framings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// [`NdjsonFormat`].
    #[default]
    Ndjson,
    /// [`SseFormat`].
    Sse,
}

/// The default stream format: SSE or NDJSON per request, from its `Accept` header.
///
/// A request that accepts `text/event-stream` (as `EventSource` always does) gets SSE, one that
/// accepts `application/x-ndjson` gets NDJSON; when it accepts both, the higher `q` wins; when it
/// names neither (or sends no `Accept`), it gets the default framing.
///
/// # Examples
///
/// ```
/// use tower_push::format::{AutoFormat, Framing, StreamFormat};
///
/// let auto = AutoFormat::new(Framing::Ndjson);
/// let request = http::Request::get("/stream")
///     .header("accept", "text/event-stream")
///     .body(())?;
/// let chosen = auto.negotiate(&request.into_parts().0);
/// assert_eq!(chosen.framing(), Framing::Sse);
/// assert_eq!(chosen.content_type(), "text/event-stream");
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AutoFormat {
    sse: SseFormat,
    default: Framing,
    chosen: Framing,
}

impl AutoFormat {
    /// Negotiates per request, falling back to `default`.
    pub fn new(default: Framing) -> Self {
        Self {
            sse: SseFormat::new(),
            default,
            chosen: default,
        }
    }

    /// Uses `sse` (with its `retry` hint) when SSE is chosen.
    #[must_use]
    pub fn sse(mut self, sse: SseFormat) -> Self {
        self.sse = sse;
        self
    }

    /// The framing this value writes: the default, or what [`negotiate`](StreamFormat::negotiate)
    /// chose for a request.
    pub fn framing(&self) -> Framing {
        self.chosen
    }

    fn choose(&self, accept: &[HeaderValue]) -> Framing {
        let (mut sse, mut ndjson) = (None::<f32>, None::<f32>);
        let ranges = accept
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for range in ranges {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = if media.eq_ignore_ascii_case("text/event-stream") {
                &mut sse
            } else if media.eq_ignore_ascii_case("application/x-ndjson") {
                &mut ndjson
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match (sse.filter(|q| *q > 0.0), ndjson.filter(|q| *q > 0.0)) {
            (Some(s), Some(n)) if s > n => Framing::Sse,
            (Some(s), Some(n)) if n > s => Framing::Ndjson,
            (Some(_), None) => Framing::Sse,
            (None, Some(_)) => Framing::Ndjson,
            _ => self.default,
        }
    }
}

/// Calls the same method on the chosen format.
macro_rules! dispatch {
    ($auto:expr, $format:ident => $call:expr) => {
        match $auto.chosen {
            Framing::Ndjson => {
                let $format = &NdjsonFormat;
                $call
            }
            Framing::Sse => {
                let $format = &$auto.sse;
                $call
            }
        }
    };
}

impl StreamFormat for AutoFormat {
    fn negotiate(&self, parts: &Parts) -> Self {
        let accept: Vec<_> = parts.headers.get_all(ACCEPT).iter().cloned().collect();
        Self {
            chosen: self.choose(&accept),
            ..*self
        }
    }

    fn content_type(&self) -> HeaderValue {
        dispatch!(self, f => f.content_type())
    }

    fn frame_key(&self) -> Option<super::FrameKey> {
        dispatch!(self, f => f.frame_key())
    }

    fn open(&self, cursor: &CompositeCursor, out: &mut Vec<u8>) {
        dispatch!(self, f => f.open(cursor, out))
    }

    fn event(&self, event: &Event, out: &mut Vec<u8>) {
        dispatch!(self, f => f.event(event, out))
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        dispatch!(self, f => f.heartbeat(out))
    }

    fn end(&self, end: &StreamEnd, out: &mut Vec<u8>) {
        dispatch!(self, f => f.end(end, out))
    }

    fn rejection(&self, rejection: &Rejection) -> http::Response<PushBody> {
        rejection.to_json_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(default: Framing, accept: &[&str]) -> Framing {
        let mut request = http::Request::get("/");
        for value in accept {
            request = request.header(ACCEPT, *value);
        }
        let parts = request.body(()).unwrap().into_parts().0;
        AutoFormat::new(default).negotiate(&parts).framing()
    }

    #[test]
    fn accept_picks_the_framing() {
        use Framing::*;
        assert_eq!(chosen(Ndjson, &[]), Ndjson);
        assert_eq!(chosen(Sse, &[]), Sse);
        assert_eq!(chosen(Ndjson, &["text/event-stream"]), Sse);
        assert_eq!(chosen(Sse, &["application/x-ndjson"]), Ndjson);
        assert_eq!(chosen(Sse, &["*/*"]), Sse);
        assert_eq!(chosen(Ndjson, &["text/html, Text/Event-Stream;q=0.5"]), Sse);
        assert_eq!(
            chosen(
                Sse,
                &["text/event-stream;q=0.2, application/x-ndjson;q=0.9"]
            ),
            Ndjson
        );
        assert_eq!(
            chosen(Ndjson, &["application/x-ndjson", "text/event-stream"]),
            Ndjson
        );
        assert_eq!(chosen(Ndjson, &["text/event-stream;q=0"]), Ndjson);
        assert_eq!(chosen(Ndjson, &["text/event-stream;q=oops"]), Sse);
    }
}
