//! The protocol service: [`DurableStreams`], its settings, and the routing of each request to
//! what answers it: the writes (`write.rs`), the reads (`read.rs`), and the refusals
//! (`answer.rs`), which every route returns as an [`Error`] that becomes a response in one
//! place.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::answer::{empty, ready, Answer, Error};
use super::format::{DurablePoll, DurableSse};
use super::headers::{preflight, security};
use super::key::Prefix;
use super::source::StreamSource;
use super::store::{Store, StoreError};
use crate::authorize::{Access, Authorize, Authorizer, Check, Verdict};
use crate::compression::Compression;
use crate::{
    BoxError, ChunkedStream, ChunkedStreamBuilder, ChunkedStreamLayer, ConfigError, LongPoll,
    LongPollBuilder, LongPollLayer, PushBody,
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

/// The settings the routes read.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) prefix: Prefix,
    pub(super) max_body: usize,
    pub(super) max_read: usize,
    pub(super) max_name: usize,
    pub(super) max_producer_id: usize,
    /// Who may do what with which streams, if anyone is checked.
    pub(super) authorizer: Option<Authorizer>,
    /// How catch-up reads are compressed, if they are.
    pub(super) compression: Option<Compression>,
}

/// The Durable Streams protocol over a [`Store`]: see the [module docs](super).
///
/// A `tower::Service<http::Request<B>>` for any body, that never fails: every problem is an
/// HTTP answer with a short JSON body (`{"error":"<code>","message":"..."}`). The live modes
/// go through the crate's [`LongPoll`] and [`ChunkedStream`] layers.
pub struct DurableStreams<St> {
    pub(super) store: Arc<St>,
    pub(super) config: Arc<Config>,
    pub(super) poll: LongPoll<StreamSource<St>, DurablePoll>,
    pub(super) sse: ChunkedStream<StreamSource<St>, DurableSse>,
}

impl<St> Clone for DurableStreams<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
            poll: self.poll.clone(),
            sse: self.sse.clone(),
        }
    }
}

impl<St> fmt::Debug for DurableStreams<St> {
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
    /// assert_eq!(service.held_polls(), 0);
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
            authorizer: None,
            compression: None,
        }
    }
}

impl<St> DurableStreams<St> {
    /// The store.
    pub fn store(&self) -> &Arc<St> {
        &self.store
    }

    /// How many long-poll reads are held right now.
    pub fn held_polls(&self) -> usize {
        self.poll.held()
    }

    /// How many SSE reads are held (open) right now.
    pub fn held_streams(&self) -> usize {
        self.sse.held()
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
/// assert_eq!(service.held_streams(), 0);
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
    authorizer: Option<Authorizer>,
    compression: Option<Compression>,
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

    /// Checks who may do what with which streams, with `authorize`, which is asked with the
    /// request's head, the stream's name (the path after the [`prefix`](Self::prefix)) and
    /// the operation: [`Access::Create`] for a `PUT` (and [`Access::Read`] of the stream a
    /// fork starts from), [`Access::Write`] for a `POST` (an append or a close),
    /// [`Access::Delete`], and [`Access::Read`] for `GET` and `HEAD`. It is asked before the
    /// store is: a refusal tells nothing of whether the stream exists.
    ///
    /// - [`Verdict::Unauthenticated`]: `401 unauthenticated` with `WWW-Authenticate: Bearer`.
    /// - [`Verdict::Deny`]: exactly the answer for a stream that does not exist (`404
    ///   stream_not_found`; `404 fork_source_not_found` for the source of a fork), but for a
    ///   create, which a missing stream would not refuse: `403 forbidden`.
    ///
    /// Live reads check again while they wait, every `reauthorize_every` of the
    /// [`long_poll`](Self::long_poll) and [`sse`](Self::sse) builders (60 s by default): a
    /// reader whose grant is revoked is answered `404 stream_not_found` (a long poll) or its
    /// stream ends; one whose credentials are revoked, `401`. See [`crate::authorize`].
    ///
    /// Default: no check.
    ///
    /// # Examples
    ///
    /// A token that may read every stream under `/public/`, and another that may do anything:
    ///
    /// ```
    /// use tower_push::authorize::{Access, Check, Verdict};
    /// use tower_push::durable::{DurableStreams, MemoryStore};
    ///
    /// let service = DurableStreams::builder(MemoryStore::new())
    ///     .prefix("/v1/stream")
    ///     .authorize(|request: &http::request::Parts, stream: Option<&str>, access: Access| {
    ///         let token = request.headers.get("authorization").and_then(|v| v.to_str().ok());
    ///         let stream = stream.unwrap_or_default();
    ///         Check::ready(match token {
    ///             Some("Bearer admin") => Verdict::Allow,
    ///             Some("Bearer reader") if access == Access::Read && stream.starts_with("/public/") => {
    ///                 Verdict::Allow
    ///             }
    ///             Some("Bearer reader") => Verdict::Deny,
    ///             _ => Verdict::Unauthenticated,
    ///         })
    ///     })
    ///     .build()?;
    /// # drop(service);
    /// # Ok::<(), tower_push::ConfigError>(())
    /// ```
    #[must_use]
    pub fn authorize(mut self, authorize: impl Authorize) -> Self {
        self.authorizer = Some(Authorizer::new(authorize));
        self
    }

    /// Compresses answers in a coding the request accepts: catch-up reads whole (from the
    /// setting's minimum size, each coding with an `ETag` of its own), and live reads with
    /// every event flushed, as [`sse`](Self::sse) and [`long_poll`](Self::long_poll) builders
    /// given this same setting do; see the [`compression`](crate::compression) module.
    ///
    /// Default: no compression.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::compression::Compression;
    /// use tower_push::durable::{DurableStreams, MemoryStore};
    ///
    /// let service = DurableStreams::builder(MemoryStore::new())
    ///     .compression(Compression::new())
    ///     .build()?;
    /// # drop(service);
    /// # Ok::<(), tower_push::ConfigError>(())
    /// ```
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
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
        let (mut poll, mut sse) = (self.poll, self.sse);
        let compression = match self.compression {
            Some(compression) => {
                poll = poll.compression(compression.clone());
                sse = sse.compression(compression.clone());
                Some(compression.check()?).filter(|c| !c.codings.is_empty())
            }
            None => None,
        };
        if let Some(authorizer) = &self.authorizer {
            // Live reads check again while they wait, for the stream the path names.
            let read = |authorizer: &Authorizer| {
                let (authorizer, prefix) = (authorizer.clone(), prefix.clone());
                move |parts: &Parts, _: Option<&str>, access: Access| {
                    authorizer.check(parts, prefix.key(parts.uri.path()), access)
                }
            };
            poll = poll.authorize(read(authorizer));
            sse = sse.authorize(read(authorizer));
        }
        let poll = poll
            .format(DurablePoll::default())
            .build()?
            .layer(source.clone());
        let sse = sse.format(DurableSse::default()).build()?.layer(source);
        Ok(DurableStreams {
            store,
            config: Arc::new(Config {
                prefix: prefix.clone(),
                max_body: self.max_body,
                max_read: self.max_read,
                max_name: self.max_name,
                max_producer_id: self.max_producer_id,
                authorizer: self.authorizer,
                compression,
            }),
            poll,
            sse,
        })
    }
}

impl<St> DurableStreams<St> {
    /// The store key of a path: without the prefix, if it has it.
    pub(super) fn key<'a>(&self, path: &'a str) -> &'a str {
        self.config.prefix.key(path)
    }
}

impl<St, B> Service<Request<B>> for DurableStreams<St>
where
    St: Store,
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
        let head = parts.method == Method::HEAD;
        let answer = self.route(parts, body);
        Box::pin(async move {
            let mut response = answer.await.unwrap_or_else(Error::into_response);
            security(response.headers_mut());
            if head {
                // A HEAD answer has no body, refusals included.
                *response.body_mut() = PushBody::empty();
            }
            Ok(response)
        })
    }
}

impl<St: Store> DurableStreams<St> {
    /// The answer to a request, by method: the writes (`PUT`, `POST`, `DELETE`) are in
    /// `write.rs`, the reads (`GET`, `HEAD`) in `read.rs`.
    fn route<B>(&mut self, parts: Parts, body: B) -> Answer
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if parts.method == Method::OPTIONS {
            let mut response = empty(StatusCode::NO_CONTENT);
            preflight(response.headers_mut());
            return ready(Ok(response));
        }
        let max = self.config.max_name;
        if self.key(parts.uri.path()).len() > max {
            return ready(Err(Error::NameTooLong { max }));
        }
        let Some(authorizer) = &self.config.authorizer else {
            return self.dispatch(parts, body);
        };
        let checks = self.checks(authorizer, &parts);
        let verdicts: Option<Vec<Verdict>> = checks.iter().map(|(check, _)| check.now()).collect();
        if let Some(verdicts) = verdicts {
            if let Err(refused) = decide(&verdicts, checks.into_iter().map(|(_, d)| d)) {
                return ready(Err(refused));
            }
            return self.dispatch(parts, body);
        }
        // A check that waits: the request waits for it, then goes on or is refused.
        let mut this = self.clone();
        Box::pin(async move {
            let mut verdicts = Vec::with_capacity(checks.len());
            let mut denied = Vec::with_capacity(checks.len());
            for (check, refusal) in checks {
                verdicts.push(check.await);
                denied.push(refusal);
            }
            decide(&verdicts, denied)?;
            this.dispatch(parts, body).await
        })
    }

    /// The checks a request needs, each with the answer if it is denied.
    fn checks(&self, authorizer: &Authorizer, parts: &Parts) -> Vec<(Check, Error)> {
        let stream = self.key(parts.uri.path());
        let missing = || Error::Store(StoreError::NotFound);
        let mut checks = Vec::with_capacity(2);
        let mut check = |stream: &str, access, denied| {
            checks.push((authorizer.check(parts, stream, access), denied));
        };
        match parts.method {
            Method::PUT => {
                check(stream, Access::Create, Error::Forbidden);
                let forked = parts.headers.get(super::headers::STREAM_FORKED_FROM);
                if let Some(source) = forked.and_then(|v| v.to_str().ok()) {
                    let source = self.key(source);
                    check(
                        source,
                        Access::Read,
                        Error::Store(StoreError::ForkSourceNotFound),
                    );
                }
            }
            Method::POST => check(stream, Access::Write, missing()),
            Method::DELETE => check(stream, Access::Delete, missing()),
            Method::GET | Method::HEAD => check(stream, Access::Read, missing()),
            _ => {}
        }
        checks
    }

    /// The answer to a request allowed to go on, by method.
    fn dispatch<B>(&mut self, parts: Parts, body: B) -> Answer
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        match parts.method {
            Method::PUT => Box::pin(self.writes().create(parts, body)),
            Method::POST => Box::pin(self.writes().append(parts, body)),
            Method::DELETE => self.delete(&parts),
            Method::GET => {
                drop(body);
                self.read(parts)
            }
            Method::HEAD => self.head(&parts),
            _ => ready(Err(Error::MethodNotAllowed)),
        }
    }
}

/// What a request's `verdicts` decide: missing credentials anywhere answer `401`, else the
/// first denied check answers with its own refusal (`denied`, in the same order).
fn decide(verdicts: &[Verdict], denied: impl IntoIterator<Item = Error>) -> Result<(), Error> {
    if verdicts.contains(&Verdict::Unauthenticated) {
        return Err(Error::Unauthenticated);
    }
    match verdicts
        .iter()
        .zip(denied)
        .find(|(v, _)| **v == Verdict::Deny)
    {
        Some((_, refusal)) => Err(refusal),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    use crate::durable::headers::REQUEST_HEADERS;

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
        let protocol_headers = REQUEST_HEADERS;
        let protocol = protocol_headers.iter().map(HeaderName::as_str);
        let names: Vec<&str> = ["content-type", "if-none-match"]
            .into_iter()
            .chain(protocol)
            .collect();
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
}
