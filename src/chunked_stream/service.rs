use http::request::Parts;
use http::Request;
use tower_service::Service;

use super::future::ResponseFuture;
use super::stream::EventStream;
use crate::format::{AutoFormat, StreamFormat};
use crate::source::EventSource;

define_push_service! {
    /// Chunked streaming over an event source `S`: see the [module docs](crate::chunked_stream).
    ///
    /// Built by [`ChunkedStreamLayer`](super::ChunkedStreamLayer).
    pub struct ChunkedStream<S, F = AutoFormat>, built by ChunkedStreamLayer;

    /// How many streams of this service's layer are open right now.
    fn open_streams;
}

impl<S, F, B> Service<Request<B>> for ChunkedStream<S, F>
where
    S: EventSource + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: StreamFormat,
{
    define_push_service_readiness!();

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
    S: EventSource + Clone + Send + 'static,
    S::Future: Send + 'static,
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
        let start = |parts: &_| format.start(parts);
        let refuse = |rejection: &_| format.rejection(rejection);
        let follow = match config.pipeline.admit(parts, &self.inner, start, refuse) {
            Ok(follow) => follow,
            Err(refused) => return ResponseFuture::rejected(refused),
        };
        let lifetime = crate::random::shorten(config.max_lifetime, config.lifetime_jitter);
        let stream = EventStream::new(follow, format, config.heartbeat, lifetime);
        ResponseFuture::opening(Box::pin(stream))
    }
}
