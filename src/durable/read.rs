//! The reads: `HEAD` tells where a stream stands; `GET` reads it from `offset`, at once
//! (catch-up) or, with `live=long-poll` or `live=sse`, through the crate's layers, with formats
//! made for the read.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;

use super::answer::{empty, Answer, Error};
use super::format::{DurablePoll, DurableSse};
use super::headers::*;
use super::json_array::json_array;
use super::query::Query;
use super::service::DurableStreams;
use super::source::StreamSource;
use super::store::{Info, Mode, Payload, Store, StoreError};
use super::Offset;
use crate::{
    chunked_stream, compression, long_poll, ChunkedStream, Cursor, Epoch, LongPoll, PushBody,
};

impl<St: Store> DurableStreams<St> {
    /// `HEAD`: the stream's tail, content type, expiry and whether it is closed.
    pub(super) fn head(&self, parts: &Parts) -> Answer {
        let info = self.store.info(self.key(parts.uri.path()));
        Box::pin(async move { Ok(head(info.await?)) })
    }

    /// `GET`: what follows `offset` (`-1`, the default: the start; `now`: the tail), at once or
    /// live.
    pub(super) fn read(&self, parts: Parts) -> Answer {
        let start = Box::pin(self.clone().start_read(parts));
        Box::pin(Reading::Starting { start })
    }

    /// What a `GET` answers at once, or the live read that answers it.
    async fn start_read(self, parts: Parts) -> Result<Started<St>, Error> {
        let key = self.key(parts.uri.path()).to_owned();
        let query = Query::parse(parts.uri.query());
        // Existence first, then the offset.
        let info = self.store.info(&key).await?;
        let start = match &query.offsets[..] {
            [] => None,
            [one] => Some(one.as_slice()),
            _ => return Err(Error::RepeatedOffset),
        };
        // `None`: the tail (`now`).
        let after = match start {
            None | Some(b"-1") => Some(Offset::ZERO),
            Some(b"now") => None,
            Some(text) => {
                let offset = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok());
                Some(offset.ok_or(Error::InvalidOffset)?)
            }
        };
        let sse = match query.live.as_deref() {
            None => {
                let answer = self.catch_up(&parts, &key, start, after).await?;
                return Ok(Started::Now(answer));
            }
            Some(b"long-poll") => false,
            Some(b"sse") => true,
            Some(_) => return Err(Error::InvalidLive),
        };
        if start.is_none() {
            return Err(Error::MissingOffset);
        }
        // A live read renews the TTL when it starts.
        let read = self.store.read(&key, after, 0, 0).await?;
        if read.info.epoch != info.epoch {
            return Err(StoreError::NotFound.into());
        }
        let mode = Mode::of(&info.content_type);
        let cursor = stream_cursor(query.cursor.as_deref());
        // The stream's incarnation is the cursors' epoch: the source answers `Gone` to a cursor
        // of one that was deleted.
        let start = Cursor::new(Epoch::new(info.epoch), read.from.get());
        // The live layers read no body.
        let request = Request::from_parts(parts, ());
        Ok(if sse {
            let at_tail = read.up_to_date() && !read.info.closed;
            let format = DurableSse::read(start, at_tail, mode, cursor);
            Started::Sse(self.sse, request, format, mode == Mode::Binary)
        } else {
            let content_type = HeaderValue::try_from(&info.content_type).ok();
            let format = DurablePoll::read(start, content_type, cursor);
            Started::Poll(self.poll, request, format)
        })
    }

    /// A read without `live`: what follows the offset now, up to the read bound, with an
    /// `ETag` (`304` when the client has it).
    async fn catch_up(
        &self,
        parts: &Parts,
        key: &str,
        start: Option<&[u8]>,
        after: Option<Offset>,
    ) -> Result<Response<PushBody>, Error> {
        let read = self
            .store
            .read(key, after, usize::MAX, self.config.max_read);
        let read = read.await?;
        let up_to_date = read.up_to_date();
        let closed = up_to_date && read.info.closed;
        let next = read.next();
        let start = match start {
            None | Some(b"-1") => "-1".to_owned(),
            Some(_) => read.from.to_string(),
        };
        let body = if Mode::of(&read.info.content_type) == Mode::Json {
            let values = read.chunks.iter().flat_map(|chunk| match &chunk.payload {
                Payload::Json(values) => &values[..],
                Payload::Bytes(_) => &[],
            });
            json_array(values.map(|value| &value[..]))
        } else {
            let mut body = Vec::new();
            for chunk in &read.chunks {
                if let Payload::Bytes(bytes) = &chunk.payload {
                    body.extend_from_slice(bytes);
                }
            }
            body
        };
        // Each coding is a representation of its own, with an entity tag of its own.
        let settings = self.config.compression.as_ref();
        let choice = compression::negotiate(&parts.headers, settings);
        let coding = compression::coding_for(choice, settings, body.len());
        let etag = format!(
            "\"{:x}:{start}:{next}{}{}{}\"",
            read.info.epoch,
            if closed { ":c" } else { "" },
            if coding.is_some() { ":" } else { "" },
            coding.map_or("", |coding| coding.as_str()),
        );
        let etag = HeaderValue::try_from(etag).expect("hex, digits and punctuation");
        let matches = parts
            .headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .any(|v| v == etag || v == "*");
        let response = if matches {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            Response::new(PushBody::full(body))
        };
        let mut response = compression::answer(response, choice, settings);
        let out = response.headers_mut();
        if let Ok(ct) = HeaderValue::try_from(&read.info.content_type) {
            out.insert(CONTENT_TYPE, ct);
        }
        out.insert(STREAM_NEXT_OFFSET, next.to_header_value());
        out.insert(ETAG, etag);
        if up_to_date {
            set_true(out, STREAM_UP_TO_DATE);
            // What follows this offset changes with the next append.
            out.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        } else {
            out.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60, stale-while-revalidate=300"),
            );
        }
        if closed {
            set_true(out, STREAM_CLOSED);
        }
        Ok(response)
    }
}

/// The answer to a `HEAD` of the stream `info` describes.
fn head(info: Info) -> Response<PushBody> {
    let mut response = empty(StatusCode::OK);
    let out = response.headers_mut();
    if let Ok(ct) = HeaderValue::try_from(&info.content_type) {
        out.insert(CONTENT_TYPE, ct);
    }
    out.insert(STREAM_NEXT_OFFSET, info.tail.to_header_value());
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(ttl) = info.ttl {
        out.insert(STREAM_TTL, HeaderValue::from(ttl));
    }
    if let Some(at) = info
        .expires_at
        .and_then(|at| HeaderValue::try_from(at).ok())
    {
        out.insert(STREAM_EXPIRES_AT, at);
    }
    if info.closed {
        set_true(out, STREAM_CLOSED);
    }
    response
}

/// How a `GET` goes on once the store has answered: with an answer now, or as a live read of
/// one of the layers (with the request, its format, and for SSE whether the data is base64).
enum Started<St> {
    Now(Response<PushBody>),
    Poll(
        LongPoll<StreamSource<St>, DurablePoll>,
        Request<()>,
        DurablePoll,
    ),
    Sse(
        ChunkedStream<StreamSource<St>, DurableSse>,
        Request<()>,
        DurableSse,
        bool,
    ),
}

pin_project! {
    /// The answer to a `GET`: the store's answers first (boxed, and only until they arrive),
    /// then, for a live read, the layer's future in place.
    ///
    /// A named future rather than an `async` block: a held read keeps it for as long as it is
    /// held, and an `async` block that awaits the layer's future keeps room for that future
    /// twice (about 0.5 KiB more per parked reader).
    #[project = ReadingProj]
    enum Reading<St: Store> {
        Starting {
            start: Pin<Box<dyn Future<Output = Result<Started<St>, Error>> + Send>>,
        },
        Poll {
            #[pin]
            answer: long_poll::future::ResponseFuture<StreamSource<St>, DurablePoll>,
        },
        Sse {
            #[pin]
            answer: chunked_stream::future::ResponseFuture<StreamSource<St>, DurableSse>,
            base64: bool,
        },
    }
}

impl<St: Store> Future for Reading<St> {
    type Output = Result<Response<PushBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                ReadingProj::Starting { start } => match ready!(start.as_mut().poll(cx))? {
                    Started::Now(answer) => return Poll::Ready(Ok(answer)),
                    Started::Poll(mut poll, request, format) => Reading::Poll {
                        answer: poll.call_with_format(request, format),
                    },
                    Started::Sse(sse, request, format, base64) => Reading::Sse {
                        answer: sse.respond(request, |_| format),
                        base64,
                    },
                },
                ReadingProj::Poll { answer } => {
                    let Ok(response) = ready!(answer.poll(cx));
                    return Poll::Ready(Ok(response));
                }
                ReadingProj::Sse { answer, base64 } => {
                    let Ok(mut response) = ready!(answer.poll(cx));
                    if *base64 && response.status() == StatusCode::OK {
                        let base64 = HeaderValue::from_static("base64");
                        response
                            .headers_mut()
                            .insert(STREAM_SSE_DATA_ENCODING, base64);
                    }
                    return Poll::Ready(Ok(response));
                }
            };
            self.set(next);
        }
    }
}

/// The `Stream-Cursor` of a live answer: the current 20 second interval since 2024-10-09, or,
/// when the client already holds that one, a later one, so that caches do not serve a client
/// its own previous answer again.
fn stream_cursor(client: Option<&[u8]>) -> u64 {
    const EPOCH_MS: u128 = 1_728_432_000_000;
    const INTERVAL_MS: u128 = 20_000;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let current = (now.saturating_sub(EPOCH_MS) / INTERVAL_MS) as u64;
    let client = client
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok());
    match client {
        Some(c) if c >= current => c.saturating_add(crate::random::seconds(1..=180)),
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use http::Method;

    /// A live reader of a stream that is deleted while it waits learns that it is gone: a held
    /// long poll answers `404 stream_not_found`, an SSE stream ends.
    #[tokio::test(start_paused = true)]
    async fn live_reads_of_a_stream_deleted_meanwhile_end() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let service = DurableStreams::new(crate::durable::MemoryStore::new());
        let send = |method: Method, uri: &str| {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "text/plain")
                .body(String::new())
                .unwrap();
            service.clone().oneshot(request)
        };
        let later = |uri: &'static str| {
            let delete = send(Method::DELETE, uri);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                delete.await.unwrap()
            }
        };
        assert_eq!(send(Method::PUT, "/p").await.unwrap().status(), 201);
        let poll = send(Method::GET, "/p?offset=now&live=long-poll");
        let (poll, deleted) = tokio::join!(poll, later("/p"));
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let poll = poll.unwrap();
        assert_eq!(poll.status(), StatusCode::NOT_FOUND);
        let body = poll.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "stream_not_found");

        assert_eq!(send(Method::PUT, "/s").await.unwrap().status(), 201);
        let sse = send(Method::GET, "/s?offset=now&live=sse").await.unwrap();
        assert_eq!(sse.status(), StatusCode::OK);
        let (body, deleted) = tokio::join!(sse.into_body().collect(), later("/s"));
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let body = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
        // The control that says the reader is at the tail, and nothing after it.
        assert_eq!(body.matches("event: control").count(), 1, "{body}");
        assert!(body.contains("\"upToDate\":true"), "{body}");
    }

    #[test]
    fn stream_cursors_move_past_the_clients() {
        let now = stream_cursor(None);
        assert!(stream_cursor(Some(b"1")) == now || stream_cursor(Some(b"1")) == now + 1);
        let ahead = now + 1000;
        assert!(stream_cursor(Some(ahead.to_string().as_bytes())) > ahead);
        assert!(stream_cursor(Some(b"garbage")) >= now);
    }
}
