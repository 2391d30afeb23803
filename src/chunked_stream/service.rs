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
    pub struct ChunkedStream<S, F = AutoFormat>, built by ChunkedStreamLayer in Streaming;

    /// How many streams of this service's layer are open right now.
    fn held;
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
        self.respond(req, |parts| self.format.negotiate(parts))
    }
}

impl<S, F> ChunkedStream<S, F>
where
    S: EventSource + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: StreamFormat,
{
    /// Answers `req` as [`call`](Service::call) does, in the format `format` makes of its head:
    /// the one the layer's format [negotiates](StreamFormat::negotiate), or, for a service in
    /// front of the layer, one made for the request (the Durable Streams service writes each
    /// read's messages with what it found when the read started).
    pub(crate) fn respond<B>(
        &self,
        req: Request<B>,
        format: impl FnOnce(&Parts) -> F,
    ) -> ResponseFuture<S, F> {
        let (parts, body) = req.into_parts();
        drop(body);
        let format = format(&parts);
        let mode = &self.config.mode;
        match self.config.admit(parts, &self.inner, &format) {
            Err(refused) => ResponseFuture::rejected(refused),
            Ok(follow) => {
                let lifetime = crate::random::shorten(mode.max_lifetime, mode.lifetime_jitter);
                let stream = EventStream::new(follow, format, mode.heartbeat, lifetime);
                ResponseFuture::opening(Box::pin(stream))
            }
        }
    }
}
