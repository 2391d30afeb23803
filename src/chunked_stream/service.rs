use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::stream::EventStream;
use crate::format::{AutoFormat, StreamFormat};
use crate::source::{Outcome, Subscribe};
use crate::{BoxError, PushBody};

/// Chunked streaming over an event source `S`: see the [module docs](crate::chunked_stream).
///
/// Built by [`ChunkedStreamLayer`](super::ChunkedStreamLayer).
#[derive(Clone, Debug)]
pub struct ChunkedStream<S, F = AutoFormat> {
    inner: S,
    config: Arc<Config>,
    format: F,
}

impl<S> ChunkedStream<S> {
    /// A service over the event source `source` with the default settings, like
    /// `tower::timeout::Timeout::new`; build a [`ChunkedStreamLayer`](super::ChunkedStreamLayer) for others.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{ChunkedStream, MemoryLog};
    ///
    /// let service = ChunkedStream::new(MemoryLog::new().topic("news"));
    /// assert_eq!(service.get_ref().name(), "news");
    /// ```
    pub fn new(source: S) -> Self {
        super::ChunkedStreamLayer::new().layer(source)
    }
}

impl<S, F> ChunkedStream<S, F> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>, format: F) -> Self {
        Self {
            inner,
            config,
            format,
        }
    }

    define_inner_service_accessors!();

    /// How many streams of this service's layer are open right now.
    pub fn open_streams(&self) -> usize {
        self.config.pipeline.held()
    }
}

impl<S, F, B> Service<Request<B>> for ChunkedStream<S, F>
where
    S: Service<Subscribe, Response = Outcome> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: StreamFormat,
{
    type Response = Response<PushBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S, F>;

    /// Always ready: the event source is driven to readiness by the stream itself.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// # Panics
    ///
    /// Panics when called outside a tokio runtime with the time driver enabled, which the
    /// heartbeat and lifetime timers need.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        drop(body);
        let format = self.format.negotiate(&parts);
        self.answer(parts, format)
    }
}

impl<S, F> ChunkedStream<S, F>
where
    S: Service<Subscribe, Response = Outcome> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: StreamFormat,
{
    /// Answers `req` as [`call`](Service::call) does, in `format` instead of the one the
    /// layer's format [negotiates](StreamFormat::negotiate): for a service in front of the
    /// layer that makes a format for each request (the Durable Streams service writes each
    /// read's messages with what it found when the read started).
    #[cfg(feature = "durable")]
    pub(crate) fn call_with_format<B>(
        &mut self,
        req: Request<B>,
        format: F,
    ) -> ResponseFuture<S, F> {
        let (parts, body) = req.into_parts();
        drop(body);
        self.answer(parts, format)
    }

    fn answer(&mut self, parts: Parts, format: F) -> ResponseFuture<S, F> {
        let config = &*self.config;
        let admitted = config
            .pipeline
            .admit(parts, &self.inner, |parts| format.start(parts));
        let follow = match admitted {
            Ok(follow) => follow,
            Err(rejection) => return ResponseFuture::rejected(format.rejection(&rejection)),
        };
        let lifetime = crate::random::shorten(config.max_lifetime, config.lifetime_jitter);
        let stream = EventStream::new(follow, format, config.heartbeat, lifetime);
        ResponseFuture::opening(Box::pin(stream))
    }
}
