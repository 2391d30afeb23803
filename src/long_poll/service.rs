use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use crate::format::{JsonFormat, PollFormat};
use crate::source::{Outcome, Subscribe};
use crate::{BoxError, PushBody};

/// Long polling over an event source `S`: see the [module docs](crate::long_poll).
///
/// Built by [`LongPollLayer`](super::LongPollLayer).
#[derive(Clone, Debug)]
pub struct LongPoll<S, F = JsonFormat> {
    inner: S,
    config: Arc<Config>,
    format: F,
}

impl<S> LongPoll<S> {
    /// A service over the event source `source` with the default settings, like
    /// `tower::timeout::Timeout::new`; build a [`LongPollLayer`](super::LongPollLayer) for others.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_push::{LongPoll, MemoryLog};
    ///
    /// let service = LongPoll::new(MemoryLog::new().topic("news"));
    /// assert_eq!(service.get_ref().name(), "news");
    /// ```
    pub fn new(source: S) -> Self {
        super::LongPollLayer::new().layer(source)
    }
}

impl<S, F> LongPoll<S, F> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>, format: F) -> Self {
        Self {
            inner,
            config,
            format,
        }
    }

    define_inner_service_accessors!();

    /// How many polls of this service's layer are held right now.
    pub fn parked_polls(&self) -> usize {
        self.config.pipeline.held()
    }
}

impl<S, F, B> Service<Request<B>> for LongPoll<S, F>
where
    S: Service<Subscribe, Response = Outcome> + Clone,
    S::Error: Into<BoxError>,
    F: PollFormat,
{
    type Response = Response<PushBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S, F>;

    /// Always ready: the event source is driven to readiness inside each response future, so a
    /// source that is not ready becomes a `503`, not back-pressure on the connection.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// # Panics
    ///
    /// Panics when called outside a tokio runtime with the time driver enabled, which the hold
    /// timer needs.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let format = self.format.clone();
        self.call_with_format(req, format)
    }
}

impl<S, F> LongPoll<S, F>
where
    S: Service<Subscribe, Response = Outcome> + Clone,
    S::Error: Into<BoxError>,
    F: PollFormat,
{
    /// Answers `req` as [`call`](Service::call) does, in `format` instead of the layer's: for a
    /// service in front of the layer that makes a format for each request (the Durable Streams
    /// service writes each read's answers with what it found when the read started).
    pub(crate) fn call_with_format<B>(
        &mut self,
        req: Request<B>,
        format: F,
    ) -> ResponseFuture<S, F> {
        let (parts, body) = req.into_parts();
        // A poll carries nothing in its body; do not keep it alive for the whole hold.
        drop(body);
        let config = &*self.config;
        let admitted = config
            .pipeline
            .admit(parts, &self.inner, |parts| format.start(parts));
        let follow = match admitted {
            Ok(follow) => follow,
            Err(rejection) => return ResponseFuture::rejected(format.rejection(&rejection)),
        };
        let superseded = config
            .supersede
            .as_ref()
            .and_then(|s| s.register(follow.parts()));
        let hold = match config.hold_jitter {
            0.0 => config.hold,
            jitter => crate::random::shorten(config.hold, jitter),
        };
        ResponseFuture::hold(follow, format, hold, superseded)
    }
}
