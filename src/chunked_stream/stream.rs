//! The frames of one stream: events from the source, heartbeats, and the final message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::Frames;
use crate::format::{StreamEnd, StreamFormat};
use crate::limit::Slot;
use crate::shutdown::{self, Shutdown};
use crate::source::{Outcome, Position, Subscribe};
use crate::{BoxError, Cursor, Rejection};

pin_project! {
    /// Follows an event source for as long as a stream lives, writing each batch of events as one
    /// frame as soon as the source has it.
    pub(crate) struct EventStream<S, F>
    where
        S: Service<Subscribe>,
    {
        source: S,
        subscribe: Subscribe,
        format: F,
        // The source's future; `None` between calls.
        #[pin]
        call: Option<S::Future>,
        // Reset, not recreated, by every frame.
        #[pin]
        heartbeat: Sleep,
        every: Duration,
        #[pin]
        lifetime: Sleep,
        #[pin]
        shutdown: Option<shutdown::Wait>,
        // Where the stream started, once known.
        start: Option<Cursor>,
        // Bytes written and not yet handed to the body.
        out: Vec<u8>,
        ended: bool,
        // The place under the layer's caps, given back when the stream ends.
        slot: Option<Slot>,
    }
}

impl<S, F> EventStream<S, F>
where
    S: Service<Subscribe, Response = Outcome>,
    S::Error: Into<BoxError>,
    F: StreamFormat,
{
    pub(crate) fn new(
        source: S,
        mut subscribe: Subscribe,
        format: F,
        every: Duration,
        lifetime: Duration,
        shutdown: Option<&Shutdown>,
        slot: Slot,
    ) -> Self {
        // A stream keeps its request head for its whole life: do not pin hyper's read buffer.
        subscribe.detach_parts();
        let mut out = Vec::new();
        let start = match subscribe.position() {
            Position::After(cursor) => Some(cursor),
            Position::Head | Position::Oldest => None,
        };
        if let Some(cursor) = start {
            format.open(cursor, &mut out);
        }
        Self {
            source,
            subscribe,
            format,
            call: None,
            heartbeat: tokio::time::sleep(every),
            every,
            lifetime: tokio::time::sleep(lifetime),
            shutdown: shutdown.map(Shutdown::wait),
            start,
            out,
            ended: false,
            slot: Some(slot),
        }
    }

    pub(crate) fn format(&self) -> &F {
        &self.format
    }

    /// Where the stream started, once the source has said it.
    pub(crate) fn start(&self) -> Option<Cursor> {
        self.start
    }

    /// Where the stream stands, once the source has said it.
    fn cursor(&self) -> Option<Cursor> {
        match self.subscribe.position() {
            Position::After(cursor) => Some(cursor),
            Position::Head | Position::Oldest => None,
        }
    }

    /// Drives the source as far as it goes without waiting, so that a cursor the source refuses
    /// is answered with an error status before any byte of the stream is sent.
    pub(crate) fn poll_start(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<(), Rejection> {
        match self.poll_events(cx) {
            Poll::Ready(Err(rejection)) => Err(rejection),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    /// Polls the source until it has events (written to `out`), refuses, or is pending.
    fn poll_events(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Rejection>> {
        let mut this = self.project();
        loop {
            if this.call.is_none() {
                match this.source.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let call = this.source.call(this.subscribe.clone());
                        this.call.set(Some(call));
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let call = this.call.as_mut().as_pin_mut().expect("set above");
            let outcome = match call.poll(cx) {
                Poll::Ready(Ok(outcome)) => outcome,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                Poll::Pending => return Poll::Pending,
            };
            this.call.set(None);
            match outcome {
                Outcome::Events(batch) => {
                    for event in batch.events() {
                        this.format.event(event, this.out);
                    }
                    *this.subscribe = this.subscribe.after(batch.last());
                    return Poll::Ready(Ok(()));
                }
                Outcome::Head(cursor) => {
                    *this.subscribe = this.subscribe.after(cursor);
                    *this.start = Some(cursor);
                    this.format.open(cursor, this.out);
                }
                Outcome::Resync(resync) => return Poll::Ready(Err(Rejection::Resync(resync))),
                Outcome::Ahead { head } => {
                    return Poll::Ready(Err(Rejection::CursorAhead { head }));
                }
            }
        }
    }

    /// Writes the final message for `end` and marks the stream ended.
    fn finish(self: Pin<&mut Self>, end: impl FnOnce(Cursor) -> StreamEnd) -> (Bytes, bool) {
        let cursor = self.cursor();
        let mut this = self.project();
        let end = match cursor {
            Some(cursor) => end(cursor),
            None => StreamEnd::Rejected(Rejection::SourceUnavailable),
        };
        this.format.end(&end, this.out);
        *this.ended = true;
        // The stream is over; do not wait for the server to drop the body to free its place,
        // its source's future and its timers' registrations.
        this.slot.take();
        this.call.set(None);
        this.shutdown.set(None);
        (Bytes::from(std::mem::take(this.out)), true)
    }
}

fn failed<E: Into<BoxError>>(err: E) -> Rejection {
    let err: BoxError = err.into();
    tracing::warn!(error = %err, "event source failed during a stream");
    Rejection::SourceUnavailable
}

impl<S, F> Frames for EventStream<S, F>
where
    S: Service<Subscribe, Response = Outcome> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    F: StreamFormat,
{
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(Bytes, bool)>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let shutdown = self.as_mut().project().shutdown.as_pin_mut();
        if shutdown.is_some_and(|wait| wait.poll(cx).is_ready()) {
            let end = self.finish(|cursor| StreamEnd::Shutdown { cursor });
            return Poll::Ready(Some(end));
        }
        if self.as_mut().project().lifetime.poll(cx).is_ready() {
            let end = self.finish(|cursor| StreamEnd::Lifetime { cursor });
            return Poll::Ready(Some(end));
        }
        if let Poll::Ready(Err(rejection)) = self.as_mut().poll_events(cx) {
            let end = self.finish(|_| StreamEnd::Rejected(rejection));
            return Poll::Ready(Some(end));
        }
        let mut this = self.project();
        if this.out.is_empty() && this.heartbeat.as_mut().poll(cx).is_ready() {
            this.format.heartbeat(this.out);
        }
        if this.out.is_empty() {
            return Poll::Pending;
        }
        // Any message restarts the heartbeat interval.
        this.heartbeat.reset(Instant::now() + *this.every);
        Poll::Ready(Some((Bytes::from(std::mem::take(this.out)), false)))
    }
}
