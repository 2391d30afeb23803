//! The protocol service: every method of the protocol over a [`Store`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, LOCATION,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::format::{DurablePoll, DurableSse};
use super::headers::*;
use super::json_array::json_array;
use super::key::Prefix;
use super::query::Query;
use super::source::StreamSource;
use super::store::{
    Append, Create, ExpiresAt, ForkFrom, Mode, Payload, Producer, Store, StoreError,
};
use super::Offset;
use crate::{
    BoxError, ChunkedStream, ChunkedStreamBuilder, ChunkedStreamLayer, ConfigError, Cursor, Epoch,
    LongPoll, LongPollBuilder, LongPollLayer, PushBody,
};

/// The response future of [`DurableStreams`].
///
/// Boxed, unlike the layers' named futures: a write reads its body before it reaches the store,
/// and a live read is the answer of a [`LongPoll`] or [`ChunkedStream`] future with headers
/// added, so one allocation per request buys one type for all of them. A held long poll or an
/// open SSE stream is the layers' own future inside it.
///
/// # Cancel safety
///
/// Dropping it (a client that disconnects) loses nothing: a write that has not reached the
/// store did not happen, and a live read holds only its place in the layer.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<PushBody>, Infallible>> + Send + 'static>>;

#[derive(Debug)]
struct Config {
    prefix: Prefix,
    max_body: usize,
    max_read: usize,
    max_name: usize,
    max_producer_id: usize,
}

/// The Durable Streams protocol over a [`Store`]: see the [module docs](super).
///
/// A `tower::Service<http::Request<B>>` for any body, that never fails: every problem is an
/// HTTP answer with a short JSON body (`{"error":"<code>","message":"..."}`). The live modes
/// go through the crate's [`LongPoll`] and [`ChunkedStream`] layers.
pub struct DurableStreams<St: ?Sized> {
    store: Arc<St>,
    config: Arc<Config>,
    poll: LongPoll<StreamSource<St>, DurablePoll>,
    sse: ChunkedStream<StreamSource<St>, DurableSse>,
}

impl<St: ?Sized> Clone for DurableStreams<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
            poll: self.poll.clone(),
            sse: self.sse.clone(),
        }
    }
}

impl<St: ?Sized> fmt::Debug for DurableStreams<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStreams")
            .field("prefix", &self.config.prefix)
            .field("max_body", &self.config.max_body)
            .finish_non_exhaustive()
    }
}

impl<St: Store> DurableStreams<St> {
    /// A service over `store` with the default settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::durable::{DurableStreams, MemoryStore};
    ///
    /// let service = DurableStreams::new(MemoryStore::new());
    /// assert_eq!(service.parked_polls(), 0);
    /// ```
    pub fn new(store: St) -> Self {
        Self::builder(store)
            .build()
            .expect("default settings are valid")
    }

    /// A builder for a service over `store`.
    pub fn builder(store: St) -> DurableStreamsBuilder<St> {
        DurableStreamsBuilder {
            store,
            prefix: String::new(),
            max_body: 16 << 20,
            max_read: 1 << 20,
            max_name: 1024,
            max_producer_id: 256,
            poll: LongPollLayer::builder(),
            sse: ChunkedStreamLayer::builder().max_lifetime(Duration::from_secs(60)),
        }
    }
}

impl<St: ?Sized> DurableStreams<St> {
    /// The store.
    pub fn store(&self) -> &Arc<St> {
        &self.store
    }

    /// How many long polls are held right now.
    pub fn parked_polls(&self) -> usize {
        self.poll.parked_polls()
    }

    /// How many SSE streams are open right now.
    pub fn open_streams(&self) -> usize {
        self.sse.open_streams()
    }
}

/// Settings of a [`DurableStreams`] service, checked by [`build`](Self::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use tower_push::durable::{DurableStreams, MemoryStore};
/// use tower_push::{ChunkedStreamLayer, LongPollLayer, Shutdown};
///
/// let shutdown = Shutdown::new();
/// let service = DurableStreams::builder(MemoryStore::new())
///     .prefix("/v1/stream")
///     .max_body_bytes(4 << 20)
///     .long_poll(
///         LongPollLayer::builder()
///             .hold_timeout(Duration::from_secs(20))
///             .shutdown(shutdown.clone()),
///     )
///     .sse(ChunkedStreamLayer::builder().heartbeat_interval(Duration::from_secs(10)))
///     .build()?;
/// assert_eq!(service.open_streams(), 0);
///
/// let zero = DurableStreams::builder(MemoryStore::new()).max_body_bytes(0).build();
/// assert!(zero.is_err());
/// # Ok::<(), tower_push::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct DurableStreamsBuilder<St> {
    store: St,
    prefix: String,
    max_body: usize,
    max_read: usize,
    max_name: usize,
    max_producer_id: usize,
    poll: LongPollBuilder,
    sse: ChunkedStreamBuilder,
}

impl<St: Store> DurableStreamsBuilder<St> {
    /// A path prefix removed from request paths and from `Stream-Forked-From` values where
    /// present, so that streams are keyed by what follows it (`/v1/stream`): the same streams
    /// then answer whether the service sees full paths or, nested under a router, stripped ones.
    ///
    /// Default is none: streams are keyed by the whole path.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// The largest request body; a larger one answers `413 Payload Too Large`.
    ///
    /// Default is 16 MiB.
    #[must_use]
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// About the most bytes of data one catch-up read answers with (it always carries at least
    /// one whole append); the rest comes with the next read, from `Stream-Next-Offset`.
    ///
    /// Default is 1 MiB.
    #[must_use]
    pub fn max_read_bytes(mut self, max: usize) -> Self {
        self.max_read = max;
        self
    }

    /// The longest stream name: the request path after the [`prefix`](Self::prefix), in bytes
    /// as sent (percent-encoded), its leading `/` included. A request for a longer one,
    /// whatever its method (`OPTIONS` aside), answers `414 URI Too Long` with the code
    /// `stream_name_too_long`, as the protocol asks servers to keep URL components within
    /// acceptable limits.
    ///
    /// Default is 1,024 bytes.
    #[must_use]
    pub fn max_stream_name_bytes(mut self, max: usize) -> Self {
        self.max_name = max;
        self
    }

    /// The longest `Producer-Id`, in bytes; a longer one answers `400 Bad Request` with the
    /// code `producer_id_too_long`. A stream keeps the id of every producer that wrote to it.
    ///
    /// Default is 256 bytes.
    #[must_use]
    pub fn max_producer_id_bytes(mut self, max: usize) -> Self {
        self.max_producer_id = max;
        self
    }

    /// The settings of `live=long-poll`: the hold (keep it below every idle timeout on the
    /// way), caps, the shutdown signal. The format is the protocol's.
    ///
    /// Default is [`LongPollLayer::builder`]: a 25 second hold.
    #[must_use]
    pub fn long_poll(mut self, builder: LongPollBuilder) -> Self {
        self.poll = builder;
        self
    }

    /// The settings of `live=sse`: heartbeats, lifetime, caps, the shutdown signal. The format
    /// is the protocol's.
    ///
    /// Default is [`ChunkedStreamLayer::builder`] with a 60 second lifetime, which the protocol
    /// recommends so that caches can collapse readers.
    #[must_use]
    pub fn sse(mut self, builder: ChunkedStreamBuilder) -> Self {
        self.sse = builder;
        self
    }

    /// The service.
    ///
    /// # Errors
    ///
    /// What the long-poll or SSE settings refuse, and a zero body, read, stream name or
    /// producer id limit.
    pub fn build(self) -> Result<DurableStreams<St>, ConfigError> {
        for (setting, value) in [
            ("max body bytes", self.max_body),
            ("max read bytes", self.max_read),
            ("max stream name bytes", self.max_name),
            ("max producer id bytes", self.max_producer_id),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroCount { setting });
            }
        }
        let store = Arc::new(self.store);
        let prefix = Prefix::new(&self.prefix);
        let source = StreamSource::new(store.clone(), prefix.clone(), self.max_read);
        let poll = self
            .poll
            .format(DurablePoll::default())
            .build()?
            .layer(source.clone());
        let sse = self
            .sse
            .format(DurableSse::default())
            .build()?
            .layer(source);
        Ok(DurableStreams {
            store,
            config: Arc::new(Config {
                prefix: prefix.clone(),
                max_body: self.max_body,
                max_read: self.max_read,
                max_name: self.max_name,
                max_producer_id: self.max_producer_id,
            }),
            poll,
            sse,
        })
    }
}

/// An error answer: `status` and `{"error":"<code>","message":"<message>"}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<PushBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = Response::new(PushBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn bad_request(code: &str, message: &str) -> Response<PushBody> {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn store_error(err: &StoreError) -> Response<PushBody> {
    let mut response = error(err.status(), err.code(), &err.to_string());
    let headers = response.headers_mut();
    match err {
        StoreError::Closed { tail } => {
            set_true(headers, STREAM_CLOSED);
            headers.insert(STREAM_NEXT_OFFSET, offset_value(*tail));
        }
        StoreError::StaleEpoch { current } => {
            headers.insert(PRODUCER_EPOCH, HeaderValue::from(*current));
        }
        StoreError::SeqGap { expected, received } => {
            headers.insert(PRODUCER_EXPECTED_SEQ, HeaderValue::from(*expected));
            headers.insert(PRODUCER_RECEIVED_SEQ, HeaderValue::from(*received));
        }
        _ => {}
    }
    response
}

fn offset_value(offset: Offset) -> HeaderValue {
    HeaderValue::try_from(offset.to_string()).expect("digits and '_'")
}

fn status(status: StatusCode) -> Response<PushBody> {
    let mut response = Response::new(PushBody::empty());
    *response.status_mut() = status;
    response
}

/// A header's value as text, if present; `Err` for a value that is not visible ASCII.
fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ()))
        .transpose()
}

/// A non-negative integer without sign, leading zeros or anything else.
fn integer(text: &str) -> Option<u64> {
    let plain = text == "0" || (!text.starts_with('0') && !text.is_empty());
    (plain && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Whether a content type has the shape `type/subtype`; anything else means the default.
fn valid_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
    };
    essence
        .split_once('/')
        .is_some_and(|(a, b)| token(a) && token(b))
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

impl<St: ?Sized> DurableStreams<St> {
    /// The store key of a path: without the prefix, if it has it.
    fn key<'a>(&self, path: &'a str) -> &'a str {
        self.config.prefix.key(path)
    }
}

impl<St, B> Service<Request<B>> for DurableStreams<St>
where
    St: Store + ?Sized,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<PushBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let (parts, body) = req.into_parts();
        let max_name = self.config.max_name;
        let too_long = self.key(parts.uri.path()).len() > max_name;
        let answer: ResponseFuture = match parts.method {
            Method::OPTIONS => {
                let mut response = status(StatusCode::NO_CONTENT);
                preflight(response.headers_mut());
                ready(response)
            }
            _ if too_long => {
                let mut response = error(
                    StatusCode::URI_TOO_LONG,
                    "stream_name_too_long",
                    &format!("the stream name is longer than {max_name} bytes"),
                );
                if parts.method == Method::HEAD {
                    // A HEAD answer has no body.
                    *response.body_mut() = PushBody::empty();
                }
                ready(response)
            }
            Method::PUT => {
                let this = self.clone();
                Box::pin(async move { Ok(this.put(parts, body).await) })
            }
            Method::POST => {
                let this = self.clone();
                Box::pin(async move { Ok(this.post(parts, body).await) })
            }
            Method::GET => {
                drop(body);
                self.get(parts)
            }
            Method::HEAD => ready(self.head(&parts)),
            Method::DELETE => ready(match self.store.delete(self.key(parts.uri.path())) {
                Ok(()) => status(StatusCode::NO_CONTENT),
                Err(err) => store_error(&err),
            }),
            _ => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET, HEAD, PUT, POST, DELETE or OPTIONS",
                );
                response.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"),
                );
                ready(response)
            }
        };
        Box::pin(async move {
            let mut response = answer.await?;
            security(response.headers_mut());
            Ok(response)
        })
    }
}

fn ready(response: Response<PushBody>) -> ResponseFuture {
    Box::pin(std::future::ready(Ok(response)))
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Failed,
}

/// Reads a whole body of at most `max` bytes.
async fn read_body<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return Err(BodyError::Failed);
        };
        if let Ok(mut data) = frame.into_data() {
            use bytes::Buf;
            if out.len() + data.remaining() > max {
                return Err(BodyError::TooLarge);
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                out.extend_from_slice(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    // Storage of its own, exactly the body's size.
    Ok(Bytes::copy_from_slice(&out))
}

fn body_error(err: BodyError, max: usize) -> Response<PushBody> {
    match err {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the body is larger than {max} bytes"),
        ),
        BodyError::Failed => bad_request("body_unreadable", "the request body could not be read"),
    }
}

impl<St: Store + ?Sized> DurableStreams<St> {
    async fn put<B>(self, parts: Parts, body: B) -> Response<PushBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let headers = &parts.headers;
        let mut create = Create::default();
        let Ok(content_type) = text(headers, &CONTENT_TYPE) else {
            return bad_request("invalid_content_type", "content-type is not text");
        };
        create.content_type = content_type
            .filter(|ct| valid_content_type(ct))
            .map(str::to_owned);
        let (Ok(ttl), Ok(expires_at)) = (
            text(headers, &STREAM_TTL),
            text(headers, &STREAM_EXPIRES_AT),
        ) else {
            return bad_request(
                "invalid_expiry",
                "stream-ttl or stream-expires-at is not text",
            );
        };
        if ttl.is_some() && expires_at.is_some() {
            return bad_request(
                "ttl_and_expires_at",
                "give stream-ttl or stream-expires-at, not both",
            );
        }
        if let Some(ttl) = ttl {
            let Some(seconds) = integer(ttl) else {
                return bad_request(
                    "invalid_ttl",
                    "stream-ttl is not a whole number of seconds below 2^64",
                );
            };
            create.ttl = Some(seconds);
        }
        if let Some(at) = expires_at {
            let Some(unix_ms) = super::time::parse_rfc3339(at) else {
                return bad_request("invalid_expires_at", "stream-expires-at is not RFC 3339");
            };
            create.expires_at = Some(ExpiresAt {
                text: at.to_owned(),
                unix_ms,
            });
        }
        let (Ok(source), Ok(fork_offset), Ok(sub_offset)) = (
            text(headers, &STREAM_FORKED_FROM),
            text(headers, &STREAM_FORK_OFFSET),
            text(headers, &STREAM_FORK_SUB_OFFSET),
        ) else {
            return bad_request("invalid_fork", "a fork header is not text");
        };
        let fork_offset = match fork_offset.map(str::parse::<Offset>).transpose() {
            Ok(offset) => offset,
            Err(_) => {
                return bad_request("invalid_fork_offset", "stream-fork-offset is not an offset")
            }
        };
        let sub_offset = match sub_offset {
            None => 0,
            Some(_) if source.is_none() => {
                return bad_request(
                    "sub_offset_without_fork",
                    "stream-fork-sub-offset needs stream-forked-from",
                )
            }
            Some(text) => match integer(text) {
                Some(n) => n,
                None => {
                    return bad_request(
                        "invalid_fork_sub_offset",
                        "stream-fork-sub-offset is not a whole number",
                    )
                }
            },
        };
        if let Some(source) = source {
            create.fork = Some(ForkFrom {
                source: self.key(source).to_owned(),
                offset: fork_offset,
                sub_offset,
            });
        }
        create.closed = closed_header(headers);
        create.body = match read_body(headers, body, self.config.max_body).await {
            Ok(body) => body,
            Err(err) => return body_error(err, self.config.max_body),
        };
        let path = parts.uri.path();
        match self.store.create(self.key(path), create) {
            Ok(created) => {
                let code = if created.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut response = status(code);
                let out = response.headers_mut();
                if let Ok(ct) = HeaderValue::try_from(&created.info.content_type) {
                    out.insert(CONTENT_TYPE, ct);
                }
                out.insert(STREAM_NEXT_OFFSET, offset_value(created.info.tail));
                if created.info.closed {
                    set_true(out, STREAM_CLOSED);
                }
                if created.created {
                    let host = text(headers, &HOST).ok().flatten();
                    let authority = parts.uri.authority().map(|a| a.as_str()).or(host);
                    if let Some(location) = authority
                        .map(|host| format!("http://{host}{path}"))
                        .and_then(|l| HeaderValue::try_from(l).ok())
                    {
                        out.insert(LOCATION, location);
                    }
                }
                response
            }
            Err(err) => store_error(&err),
        }
    }

    async fn post<B>(self, parts: Parts, body: B) -> Response<PushBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let headers = &parts.headers;
        let producer = match producer(headers, self.config.max_producer_id) {
            Ok(producer) => producer,
            Err(response) => return response,
        };
        let body = match read_body(headers, body, self.config.max_body).await {
            Ok(body) => body,
            Err(err) => return body_error(err, self.config.max_body),
        };
        let close = closed_header(headers);
        let content_type = text(headers, &CONTENT_TYPE).ok().flatten();
        if body.is_empty() && !close {
            return bad_request(
                "empty_body",
                "an append needs a body (or stream-closed: true)",
            );
        }
        if !body.is_empty() && content_type.is_none() {
            return bad_request("missing_content_type", "an append needs a content-type");
        }
        let Ok(stream_seq) = text(headers, &STREAM_SEQ) else {
            return bad_request("invalid_stream_seq", "stream-seq is not text");
        };
        let with_producer = producer.is_some();
        let append = Append {
            content_type: content_type.map(str::to_owned),
            body,
            close,
            stream_seq: stream_seq.map(str::to_owned),
            producer,
        };
        match self.store.append(self.key(parts.uri.path()), append) {
            Ok(appended) => {
                let code = if appended.wrote && with_producer {
                    StatusCode::OK
                } else {
                    StatusCode::NO_CONTENT
                };
                let mut response = status(code);
                let out = response.headers_mut();
                out.insert(STREAM_NEXT_OFFSET, offset_value(appended.tail));
                if appended.closed {
                    set_true(out, STREAM_CLOSED);
                }
                if let Some((epoch, seq)) = appended.producer {
                    out.insert(PRODUCER_EPOCH, HeaderValue::from(epoch));
                    out.insert(PRODUCER_SEQ, HeaderValue::from(seq));
                }
                response
            }
            Err(err) => store_error(&err),
        }
    }

    fn head(&self, parts: &Parts) -> Response<PushBody> {
        let info = match self.store.info(self.key(parts.uri.path())) {
            Ok(info) => info,
            Err(err) => {
                let mut response = store_error(&err);
                // A HEAD answer has no body.
                *response.body_mut() = PushBody::empty();
                return response;
            }
        };
        let mut response = status(StatusCode::OK);
        let out = response.headers_mut();
        if let Ok(ct) = HeaderValue::try_from(&info.content_type) {
            out.insert(CONTENT_TYPE, ct);
        }
        out.insert(STREAM_NEXT_OFFSET, offset_value(info.tail));
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

    fn get(&mut self, parts: Parts) -> ResponseFuture {
        let key = self.key(parts.uri.path()).to_owned();
        let query = Query::parse(parts.uri.query());
        // Existence first, then the offset.
        let info = match self.store.info(&key) {
            Ok(info) => info,
            Err(err) => return ready(store_error(&err)),
        };
        let start = match &query.offsets[..] {
            [] => None,
            [one] => Some(one.as_slice()),
            _ => return ready(bad_request("repeated_offset", "give offset once")),
        };
        // `None`: the tail (`now`).
        let after = match start {
            None | Some(b"-1") => Some(Offset::ZERO),
            Some(b"now") => None,
            Some(text) => match std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()) {
                Some(offset) => Some(offset),
                None => {
                    return ready(bad_request(
                        "invalid_offset",
                        "offset is not -1, now, or 16 digits, '_', 16 digits",
                    ))
                }
            },
        };
        let live = match query.live.as_deref() {
            None => None,
            Some(b"long-poll") => Some(false),
            Some(b"sse") => Some(true),
            Some(_) => return ready(bad_request("invalid_live", "live is long-poll or sse")),
        };
        let Some(sse) = live else {
            return ready(self.catch_up(&parts, &key, start, after));
        };
        if start.is_none() {
            return ready(bad_request("missing_offset", "live reads need an offset"));
        }
        // A live read renews the TTL when it starts.
        let read = match self.store.read(&key, after, 0, 0) {
            Ok(read) => read,
            Err(err) => return ready(store_error(&err)),
        };
        if read.info.epoch != info.epoch {
            return ready(store_error(&StoreError::NotFound));
        }
        let mode = Mode::of(&info.content_type);
        let cursor = stream_cursor(query.cursor.as_deref());
        // The stream's incarnation is the cursors' epoch: the source answers `Gone` to a cursor
        // of one that was deleted.
        let start = Cursor::new(Epoch::new(info.epoch), read.from.get());
        // The live layers read no body.
        let request = Request::from_parts(parts, ());
        if sse {
            let at_tail = read.up_to_date() && !read.info.closed;
            let format = DurableSse::read(start, at_tail, mode, cursor);
            let answer = self.sse.call_with_format(request, format);
            Box::pin(async move {
                let mut response = answer.await?;
                if mode == Mode::Binary && response.status() == StatusCode::OK {
                    response
                        .headers_mut()
                        .insert(STREAM_SSE_DATA_ENCODING, HeaderValue::from_static("base64"));
                }
                Ok(response)
            })
        } else {
            let content_type = HeaderValue::try_from(&info.content_type).ok();
            let format = DurablePoll::read(start, content_type, cursor);
            Box::pin(self.poll.call_with_format(request, format))
        }
    }

    fn catch_up(
        &self,
        parts: &Parts,
        key: &str,
        start: Option<&[u8]>,
        after: Option<Offset>,
    ) -> Response<PushBody> {
        let read = match self
            .store
            .read(key, after, usize::MAX, self.config.max_read)
        {
            Ok(read) => read,
            Err(err) => return store_error(&err),
        };
        let up_to_date = read.up_to_date();
        let closed = up_to_date && read.info.closed;
        let next = read.next();
        let start = match start {
            None | Some(b"-1") => "-1".to_owned(),
            Some(_) => read.from.to_string(),
        };
        let etag = format!(
            "\"{:x}:{start}:{next}{}\"",
            read.info.epoch,
            if closed { ":c" } else { "" }
        );
        let etag = HeaderValue::try_from(etag).expect("hex, digits and punctuation");
        let matches = parts
            .headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .any(|v| v == etag || v == "*");
        let json = Mode::of(&read.info.content_type) == Mode::Json;
        let mut response = if matches {
            status(StatusCode::NOT_MODIFIED)
        } else {
            let body = if json {
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
            Response::new(PushBody::full(body))
        };
        let out = response.headers_mut();
        if let Ok(ct) = HeaderValue::try_from(&read.info.content_type) {
            out.insert(CONTENT_TYPE, ct);
        }
        out.insert(STREAM_NEXT_OFFSET, offset_value(next));
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
        response
    }
}

/// `Stream-Closed: true` (case-insensitive); any other value is ignored.
fn closed_header(headers: &HeaderMap) -> bool {
    headers
        .get(STREAM_CLOSED)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The producer headers: all three or none, an id that is not empty nor longer than `max_id`
/// bytes, and whole numbers up to 2^53 - 1.
#[allow(clippy::result_large_err)]
fn producer(headers: &HeaderMap, max_id: usize) -> Result<Option<Producer>, Response<PushBody>> {
    let id = headers.get(PRODUCER_ID);
    let epoch = headers.get(PRODUCER_EPOCH);
    let seq = headers.get(PRODUCER_SEQ);
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(bad_request(
                "partial_producer",
                "give producer-id, producer-epoch and producer-seq together",
            ))
        }
    };
    let id = match id.to_str() {
        Ok(id) if !id.trim().is_empty() => id.to_owned(),
        _ => return Err(bad_request("invalid_producer_id", "producer-id is empty")),
    };
    if id.len() > max_id {
        return Err(bad_request(
            "producer_id_too_long",
            &format!("producer-id is longer than {max_id} bytes"),
        ));
    }
    const MAX: u64 = (1 << 53) - 1;
    let number = |value: &HeaderValue| {
        let text = value.to_str().ok()?;
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .filter(|n| *n <= MAX)
    };
    let (Some(epoch), Some(seq)) = (number(epoch), number(seq)) else {
        return Err(bad_request(
            "invalid_producer_number",
            "producer-epoch and producer-seq are whole numbers up to 2^53 - 1",
        ));
    };
    Ok(Some(Producer { id, epoch, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_and_its_future_are_send_and_sync_where_hyper_needs_it() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<DurableStreams<super::super::MemoryStore>>();
        sync::<DurableStreams<super::super::MemoryStore>>();
        send::<ResponseFuture>();
        send::<super::super::MemoryStore>();
        sync::<super::super::MemoryStore>();
    }

    /// Thousands of requests made of protocol pieces and garbage: each gets an answer from the
    /// documented set with the security headers, and none panics or hangs.
    #[tokio::test(start_paused = true)]
    async fn arbitrary_requests_get_documented_answers() {
        use tower::ServiceExt;
        let store = super::super::MemoryStore::builder()
            .max_bytes(1 << 16)
            .build();
        let service = DurableStreams::builder(store)
            .max_body_bytes(64)
            .build()
            .unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let pick = |n: usize, options: &[&'static str]| options[n % options.len()];
        let values = [
            "",
            "-1",
            "now",
            "0",
            "1",
            "05",
            "abc",
            "true",
            "text/plain",
            "application/json",
            "0000000000000000_0000000000000001",
            "9999999999999999_9999999999999999",
            "2030-01-01T00:00:00Z",
            "/a",
            "/b",
            "{\"x\":1}",
            "[]",
            "[1,2]",
            "\u{0}",
            "%zz",
        ];
        let names = [
            "content-type",
            "stream-ttl",
            "stream-expires-at",
            "stream-closed",
            "stream-seq",
            "stream-forked-from",
            "stream-fork-offset",
            "stream-fork-sub-offset",
            "producer-id",
            "producer-epoch",
            "producer-seq",
            "if-none-match",
        ];
        let methods = [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::HEAD,
            Method::DELETE,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let path = pick(next(3), &["/a", "/b", "/c"]);
            let query = format!(
                "?offset={}&live={}&cursor={}",
                pick(next(20), &values),
                pick(next(4), &["", "long-poll", "sse", "x"]),
                pick(next(20), &values),
            );
            let uri = format!("{path}{}", if next(2) == 0 { &query } else { "" });
            let Ok(uri) = uri.parse::<http::Uri>() else {
                continue;
            };
            let mut request = Request::builder()
                .method(methods[next(methods.len())].clone())
                .uri(uri);
            for _ in 0..next(5) {
                let value = pick(next(20), &values);
                if let Ok(value) = HeaderValue::from_str(value) {
                    request = request.header(names[next(names.len())], value);
                }
            }
            let body = match next(4) {
                0 => String::new(),
                1 => "x".repeat(100),
                _ => pick(next(20), &values).to_owned(),
            };
            let response = service
                .clone()
                .oneshot(request.body(body).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                matches!(
                    status,
                    200 | 201 | 204 | 304 | 400 | 403 | 404 | 409 | 410 | 413 | 507
                ),
                "{status}"
            );
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            seen.insert(status);
        }
        for status in [200, 201, 204, 400, 404, 409, 413] {
            assert!(seen.contains(&status), "{status} never answered: {seen:?}");
        }
    }

    /// The protocol bounds `Stream-TTL` by its grammar only: the largest TTL is accepted,
    /// echoed, and the stream answers every method.
    #[tokio::test]
    async fn the_largest_ttl_makes_a_stream_that_answers() {
        use tower::ServiceExt;
        let service = DurableStreams::new(super::super::MemoryStore::new());
        let send = |method: Method, ttl: Option<&str>| {
            let mut request = Request::builder().method(method).uri("/s");
            if let Some(ttl) = ttl {
                request = request.header("stream-ttl", ttl);
            }
            service
                .clone()
                .oneshot(request.body(String::new()).unwrap())
        };
        let largest = u64::MAX.to_string();
        let created = send(Method::PUT, Some(&largest)).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let head = send(Method::HEAD, None).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["stream-ttl"], largest.as_str());
        assert_eq!(
            send(Method::GET, None).await.unwrap().status(),
            StatusCode::OK
        );
        let again = send(Method::PUT, Some(&largest)).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let delete = send(Method::DELETE, None).await.unwrap();
        assert_eq!(delete.status(), StatusCode::NO_CONTENT);
        let beyond = send(Method::PUT, Some("18446744073709551616"))
            .await
            .unwrap();
        assert_eq!(beyond.status(), StatusCode::BAD_REQUEST);
    }

    /// JSON nested beyond what readers parse is refused with a code saying so, and nothing of
    /// it is stored.
    #[tokio::test]
    async fn json_nested_too_deep_gets_400_json_too_deep() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let service = DurableStreams::new(super::super::MemoryStore::new());
        let send = |method: Method, path: &str, body: String| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            service.clone().oneshot(request)
        };
        let created = send(Method::PUT, "/j", String::new()).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for (method, path) in [(Method::POST, "/j"), (Method::PUT, "/k")] {
            let refused = send(method, path, deep.clone()).await.unwrap();
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
            let body = refused.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "json_too_deep");
        }
        let read = send(Method::GET, "/j", String::new()).await.unwrap();
        let body = read.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"[]");
        let missing = send(Method::GET, "/k", String::new()).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    /// A stream name (the path after the prefix) beyond 1,024 bytes gets 414 from every
    /// method, and a producer id beyond 256 bytes gets 400; both limits themselves are fine.
    #[tokio::test]
    async fn long_names_and_producer_ids_are_refused() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let service = DurableStreams::builder(super::super::MemoryStore::new())
            .prefix("/v1/stream")
            .build()
            .unwrap();
        let send = |method: Method, name: &str, producer: Option<&str>| {
            let mut request = Request::builder()
                .method(method)
                .uri(format!("/v1/stream{name}"))
                .header("content-type", "text/plain");
            if let Some(id) = producer {
                request = request
                    .header("producer-id", id)
                    .header("producer-epoch", "0")
                    .header("producer-seq", "0");
            }
            service
                .clone()
                .oneshot(request.body("x".to_owned()).unwrap())
        };
        let code = |response: Response<PushBody>| async move {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"].clone()
        };
        let longest = format!("/{}", "n".repeat(1023));
        let created = send(Method::PUT, &longest, None).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let too_long = format!("/{}", "n".repeat(1024));
        for method in [Method::PUT, Method::POST, Method::GET, Method::DELETE] {
            let refused = send(method, &too_long, None).await.unwrap();
            assert_eq!(refused.status(), StatusCode::URI_TOO_LONG);
            assert_eq!(code(refused).await, "stream_name_too_long");
        }
        let head = send(Method::HEAD, &too_long, None).await.unwrap();
        assert_eq!(head.status(), StatusCode::URI_TOO_LONG);
        assert!(head
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());

        let id = "p".repeat(256);
        let written = send(Method::POST, &longest, Some(&id)).await.unwrap();
        assert_eq!(written.status(), StatusCode::OK);
        let id = "p".repeat(257);
        let refused = send(Method::POST, &longest, Some(&id)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code(refused).await, "producer_id_too_long");
    }

    #[tokio::test]
    async fn name_and_producer_id_limits_are_settings() {
        use tower::ServiceExt;
        let store = super::super::MemoryStore::new();
        let service = DurableStreams::builder(store.clone())
            .max_stream_name_bytes(4)
            .max_producer_id_bytes(2)
            .build()
            .unwrap();
        let put = |path: &str| {
            let request = Request::builder()
                .method(Method::PUT)
                .uri(path)
                .body(String::new())
                .unwrap();
            service.clone().oneshot(request)
        };
        assert_eq!(put("/abc").await.unwrap().status(), 201);
        assert_eq!(put("/abcd").await.unwrap().status(), 414);
        let post = |id: &str| {
            let request = Request::builder()
                .method(Method::POST)
                .uri("/abc")
                .header("content-type", "application/octet-stream")
                .header("producer-id", id)
                .header("producer-epoch", "0")
                .header("producer-seq", "0")
                .body("x".to_owned())
                .unwrap();
            service.clone().oneshot(request)
        };
        assert_eq!(post("ab").await.unwrap().status(), 200);
        assert_eq!(post("abc").await.unwrap().status(), 400);
        for zero in [
            DurableStreams::builder(store.clone()).max_stream_name_bytes(0),
            DurableStreams::builder(store.clone()).max_producer_id_bytes(0),
        ] {
            assert!(zero.build().is_err());
        }
    }

    /// A live reader of a stream that is deleted while it waits learns that it is gone: a held
    /// long poll answers `404 stream_not_found`, an SSE stream ends.
    #[tokio::test(start_paused = true)]
    async fn live_reads_of_a_stream_deleted_meanwhile_end() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let service = DurableStreams::new(super::super::MemoryStore::new());
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
    fn integers_are_plain() {
        for good in ["0", "1", "60", "99999"] {
            assert!(integer(good).is_some(), "{good}");
        }
        for bad in ["", "abc", "-1", "00060", "+60", "60.5", "1e3", "05"] {
            assert_eq!(integer(bad), None, "{bad}");
        }
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
