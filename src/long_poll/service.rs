use http::Request;
use tower_service::Service;

use super::future::ResponseFuture;
use crate::format::{JsonFormat, PollFormat};
use crate::source::EventSource;

define_push_service! {
    /// Long polling over an event source `S`: see the [module docs](crate::long_poll).
    ///
    /// Built by [`LongPollLayer`](super::LongPollLayer).
    pub struct LongPoll<S, F = JsonFormat>, built by LongPollLayer in LongPolling;

    /// How many polls of this service's layer are held right now.
    fn held;
}

impl<S, F, B> Service<Request<B>> for LongPoll<S, F>
where
    S: EventSource + Clone,
    F: PollFormat,
{
    define_push_service_readiness!();

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
    S: EventSource + Clone,
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
        let follow = self.config.admit(parts, &self.inner, &format);
        follow.map_or_else(ResponseFuture::rejected, |follow| {
            let mode = &self.config.mode;
            let superseded = (mode.supersede.as_ref()).and_then(|s| s.register(follow.parts()));
            let hold = match mode.hold_jitter {
                0.0 => mode.hold,
                jitter => crate::random::shorten(mode.hold, jitter),
            };
            ResponseFuture::hold(follow, format, hold, superseded)
        })
    }
}
