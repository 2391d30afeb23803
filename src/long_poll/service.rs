use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{Hold, ResponseFuture};
use super::layer::Config;
use crate::format::{JsonFormat, PollFormat};
use crate::source::{Outcome, Subscribe};
use crate::{BoxError, PushBody, Rejection, Shutdown};

/// Long polling over an event source `S`: see the [module docs](crate::long_poll).
///
/// Built by [`LongPollLayer`](super::LongPollLayer).
#[derive(Clone, Debug)]
pub struct LongPoll<S, F = JsonFormat> {
    inner: S,
    config: Arc<Config>,
    format: F,
}

impl<S, F> LongPoll<S, F> {
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

    /// How many polls of this service's layer are held right now.
    pub fn parked_polls(&self) -> usize {
        self.config.limits.current()
    }

    /// Consumes the service and returns the event source.
    pub fn into_inner(self) -> S {
        self.inner
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
        let (parts, body) = req.into_parts();
        // A poll carries nothing in its body; do not keep it alive for the whole hold.
        drop(body);
        if self
            .config
            .shutdown
            .as_ref()
            .is_some_and(Shutdown::is_triggered)
        {
            let retry_after = crate::random::retry_after();
            let rejection = Rejection::ShuttingDown { retry_after };
            return ResponseFuture::rejected(self.format.rejection(&rejection));
        }
        let config = &*self.config;
        let position = match config.param.position(&parts, config.origin) {
            Ok(position) => position,
            Err(err) => {
                let rejection = Rejection::MalformedCursor(err);
                return ResponseFuture::rejected(self.format.rejection(&rejection));
            }
        };
        let Ok(slot) = config.limits.acquire(&parts) else {
            let retry_after = crate::random::retry_after();
            let rejection = Rejection::Overloaded { retry_after };
            return ResponseFuture::rejected(self.format.rejection(&rejection));
        };
        let superseded = config.supersede.as_ref().and_then(|s| s.register(&parts));
        let hold = match config.hold_jitter {
            0.0 => config.hold,
            jitter => crate::random::shorten(config.hold, jitter),
        };
        // The clone that was made ready is the one to call (tower's usual swap): here the source
        // is made ready in the future, so either copy will do; keep the original in `self`.
        let source = self.inner.clone();
        let subscribe = Subscribe::new(position, config.max_events, Arc::new(parts));
        ResponseFuture::hold(Hold {
            source,
            subscribe,
            hold,
            shutdown: config.shutdown.as_ref(),
            superseded,
            slot,
            format: self.format.clone(),
        })
    }
}
