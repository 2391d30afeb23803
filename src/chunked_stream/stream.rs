//! The frames of one stream: events from the source, heartbeats, and the final message.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::Frames;
use crate::follow::{Follow, Step};
use crate::format::{StreamEnd, StreamFormat};
use crate::source::EventSource;
use crate::source::Subscribe;
use crate::telemetry::{self, Kind};
use crate::{CompositeCursor, Rejection};

pin_project! {
    /// Follows an event source for as long as a stream lives, writing each batch of events as one
    /// frame as soon as the source has it.
    pub(crate) struct EventStream<S, F>
    where
        S: Service<Subscribe>,
    {
        #[pin]
        follow: Follow<S>,
        format: F,
        // Reset, not recreated, by every frame.
        #[pin]
        heartbeat: Sleep,
        every: Duration,
        #[pin]
        lifetime: Sleep,
        // The cursor the stream opened at, once known.
        opened_at: Option<CompositeCursor>,
        // Bytes written and not yet handed to the body.
        out: Vec<u8>,
        // A frame encoded once for every stream at the same cursor, not yet handed to the body.
        shared: Option<Bytes>,
        // Whether the stream's head went out, and whether it has ended since: a stream dropped
        // in between lost its client.
        opened: bool,
        ended: bool,
        // Whether the source said its log has ended where the stream stands.
        closed: bool,
    }

    impl<S, F> PinnedDrop for EventStream<S, F>
    where
        S: Service<Subscribe>,
    {
        fn drop(this: Pin<&mut Self>) {
            if this.opened && !this.ended {
                this.follow.telemetry().finished("client_gone", this.follow.cursor());
            }
        }
    }
}

impl<S, F> EventStream<S, F>
where
    S: EventSource,
    F: StreamFormat,
{
    /// A stream admitted to `follow` its source, with a heartbeat `every` so often, ending after
    /// `lifetime`.
    pub(crate) fn new(follow: Follow<S>, format: F, every: Duration, lifetime: Duration) -> Self {
        let mut out = Vec::new();
        let opened_at = follow.composite_cursor();
        if let Some(cursor) = &opened_at {
            format.open(cursor, &mut out);
        }
        Self {
            follow,
            format,
            heartbeat: tokio::time::sleep(every),
            every,
            lifetime: tokio::time::sleep(lifetime),
            opened_at,
            out,
            shared: None,
            opened: false,
            ended: false,
            closed: false,
        }
    }

    pub(crate) fn format(&self) -> &F {
        &self.format
    }

    /// The coding the request accepts and the layer's compression settings, if it compresses.
    pub(crate) fn compression(
        &self,
    ) -> Option<(
        crate::compression::Choice,
        std::sync::Arc<crate::compression::Compression>,
    )> {
        self.follow.compression()
    }

    /// The cursor the stream opened at, once the request or the source has named it.
    pub(crate) fn opened_at(&self) -> Option<CompositeCursor> {
        self.opened_at.clone()
    }

    /// Drives the source as far as it goes without waiting, so that a cursor the source refuses
    /// is answered with an error status before any byte of the stream is sent.
    pub(crate) fn poll_open(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Result<(), Rejection> {
        // A stream keeps its request head for its whole life: do not pin hyper's read buffer.
        self.as_mut().project().follow.detach();
        match self.poll_events(cx) {
            Poll::Ready(Err(rejection)) => Err(rejection),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    /// Polls the source until it has events (written to `out`), refuses, or is pending.
    fn poll_events(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Rejection>> {
        let mut this = self.project();
        loop {
            match ready!(this.follow.as_mut().poll_step(cx))? {
                Step::Events(batch) => {
                    let format = &*this.format;
                    match format.frame_key() {
                        // Nothing else in this frame: it can be the frame every stream at this
                        // cursor sends.
                        Some(key) if this.out.is_empty() => {
                            let frame = this.follow.shared_frame(&batch, key, || {
                                let mut out = Vec::new();
                                format.batch(&batch, &mut out);
                                Bytes::from(out)
                            });
                            *this.shared = Some(frame);
                        }
                        _ => format.batch(&batch, this.out),
                    }
                    return Poll::Ready(Ok(()));
                }
                Step::Closed(cursor) => {
                    if this.opened_at.is_none() {
                        this.format.open(&cursor, this.out);
                        *this.opened_at = Some(cursor);
                    }
                    *this.closed = true;
                    return Poll::Ready(Ok(()));
                }
                Step::Head(cursor) => {
                    this.format.open(&cursor, this.out);
                    *this.opened_at = Some(cursor);
                }
            }
        }
    }

    /// The stream is refused before it starts, with `rejection` as the answer.
    pub(crate) fn refused(self: Pin<&mut Self>, rejection: &Rejection) {
        *self.project().ended = true;
        telemetry::rejected(Kind::Stream, rejection);
    }

    /// The stream starts: its response head goes out.
    pub(crate) fn opened(self: Pin<&mut Self>) {
        let this = self.project();
        *this.opened = true;
        this.follow.telemetry().meters.answered("stream");
    }

    /// Writes the final message for `end` and marks the stream ended.
    fn finish(
        self: Pin<&mut Self>,
        end: impl FnOnce(CompositeCursor) -> StreamEnd,
    ) -> (Bytes, bool) {
        let this = self.project();
        let cursor = this.follow.cursor();
        let end = match this.follow.composite_cursor() {
            Some(resume) => end(resume),
            None => StreamEnd::Rejected(Rejection::SourceUnavailable),
        };
        let reason = match &end {
            StreamEnd::Lifetime { .. } => "lifetime",
            StreamEnd::Closed { .. } => "closed",
            StreamEnd::Shutdown { .. } => "shutdown",
            StreamEnd::Rejected(Rejection::Resync(_) | Rejection::TopicResync { .. }) => "resync",
            StreamEnd::Rejected(Rejection::Gone { .. }) => "gone",
            StreamEnd::Rejected(_) => "failed",
        };
        this.follow.telemetry().finished(reason, cursor);
        // Events not sent yet go out first, in the final frame: the end's cursor is after them.
        if let Some(frame) = this.shared.take() {
            this.out.splice(0..0, frame.iter().copied());
        }
        this.format.end(&end, this.out);
        *this.ended = true;
        // The stream is over; do not wait for the server to drop the body to free its place,
        // its source's future and its timers' registrations.
        this.follow.release();
        (Bytes::from(std::mem::take(this.out)), true)
    }
}

impl<S, F> Frames for EventStream<S, F>
where
    S: EventSource + Send + 'static,
    S::Future: Send + 'static,
    F: StreamFormat,
{
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(Bytes, bool)>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.as_mut().project().follow.poll_shutdown(cx) {
            let retry = self.follow.reconnect_delay();
            let end = self.finish(|cursor| StreamEnd::Shutdown { cursor, retry });
            return Poll::Ready(Some(end));
        }
        if self.as_mut().project().lifetime.poll(cx).is_ready() {
            let end = self.finish(|cursor| StreamEnd::Lifetime { cursor });
            return Poll::Ready(Some(end));
        }
        // What the stream's opening already wrote goes out first, alone: one frame never holds
        // more than one batch of events.
        if self.out.is_empty() && self.shared.is_none() && !self.closed {
            if let Poll::Ready(Err(rejection)) = self.as_mut().poll_events(cx) {
                let end = self.finish(|_| StreamEnd::Rejected(rejection));
                return Poll::Ready(Some(end));
            }
        }
        if self.closed {
            // The log is over: what is left goes out with the final message.
            let end = self.finish(|cursor| StreamEnd::Closed { cursor });
            return Poll::Ready(Some(end));
        }
        let mut this = self.project();
        if let Some(frame) = this.shared.take() {
            this.heartbeat.reset(Instant::now() + *this.every);
            this.follow.telemetry().frame(false);
            return Poll::Ready(Some((frame, false)));
        }
        let heartbeat = this.out.is_empty() && this.heartbeat.as_mut().poll(cx).is_ready();
        if heartbeat {
            this.format.heartbeat(this.out);
        }
        if this.out.is_empty() {
            return Poll::Pending;
        }
        this.follow.telemetry().frame(heartbeat);
        // Any message restarts the heartbeat interval.
        this.heartbeat.reset(Instant::now() + *this.every);
        Poll::Ready(Some((Bytes::from(std::mem::take(this.out)), false)))
    }
}
