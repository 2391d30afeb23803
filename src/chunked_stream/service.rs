use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::stream::EventStream;
use crate::format::{AutoFormat, StreamFormat};
use crate::source::{Outcome, Subscribe};
use crate::{BoxError, PushBody, Rejection, Shutdown};

/// Chunked streaming over an event source `S`: see the [module docs](crate::chunked_stream).
///
/// Built by [`ChunkedStreamLayer`](super::ChunkedStreamLayer).
#[derive(Clone, Debug)]
pub struct ChunkedStream<S, F = AutoFormat> {
    inner: S,
    config: Arc<Config>,
    format: F,
}

impl<S, F> ChunkedStream<S, F> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>, format: F) -> Self {
        Self {
            inner,
            config,
            format,
        }
    }

    /// The event source.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The event source, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// How many streams of this service's layer are open right now.
    pub fn open_streams(&self) -> usize {
        self.config.limits.current()
    }

    /// Consumes the service and returns the event source.
    pub fn into_inner(self) -> S {
        self.inner
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
        let config = &*self.config;
        let format = self.format.negotiate(&parts);
        if config.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
            let retry_after = crate::random::retry_after();
            let rejection = Rejection::ShuttingDown { retry_after };
            return ResponseFuture::rejected(format.rejection(&rejection));
        }
        let position = match config.param.position(&parts, config.origin) {
            Ok(position) => position,
            Err(err) => {
                let rejection = Rejection::MalformedCursor(err);
                return ResponseFuture::rejected(format.rejection(&rejection));
            }
        };
        let Ok(slot) = config.limits.acquire(&parts) else {
            let retry_after = crate::random::retry_after();
            let rejection = Rejection::Overloaded { retry_after };
            return ResponseFuture::rejected(format.rejection(&rejection));
        };
        let subscribe = Subscribe::new(position, config.max_events, Arc::new(parts));
        let lifetime = crate::random::shorten(config.max_lifetime, config.lifetime_jitter);
        let stream = EventStream::new(
            self.inner.clone(),
            subscribe,
            format,
            config.heartbeat,
            lifetime,
            config.shutdown.as_ref(),
            slot,
        );
        ResponseFuture::starting(Box::pin(stream))
    }
}
