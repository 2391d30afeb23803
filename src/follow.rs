//! The request pipeline both layers share: admitting a request, then following its event source.
//!
//! A layer hands every request to [`Pipeline::admit`], which refuses a method other than `GET`
//! and `HEAD` (`405`), a head larger than it keeps (`431`), any request while shutting down
//! (`503 shutting_down`), reads the cursor (`400 malformed_cursor`) and takes a place under the
//! caps (`503 overloaded`). An admitted request becomes a [`Follow`]: the source, the
//! subscription, the place under the caps and the shutdown signal, driven one [`Step`] at a time.
//! What a layer adds on top is only its own: a long poll races the steps against its hold timer
//! and answers once; a stream writes every step as a frame until its lifetime ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::Method;
use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::limit::{Limits, Slot};
use crate::request::CursorParam;
use crate::shutdown::{self, Shutdown};
use crate::source::{Batch, Origin, Outcome, Position, StartAt, Subscribe};
use crate::telemetry::{self, Kind, Telemetry};
use crate::{BoxError, Cursor, PushBody, Rejection};

/// What a layer knows before any request: built from the builders' shared settings by
/// [`Shared::build`](crate::config::Shared::build).
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// Which layer it serves, for metrics.
    pub(crate) kind: Kind,
    pub(crate) limits: Limits,
    pub(crate) max_events: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_head_bytes: usize,
    pub(crate) param: CursorParam,
    pub(crate) origin: Origin,
    pub(crate) shutdown: Option<Shutdown>,
    pub(crate) reconnect_window: Duration,
    /// The last answer encoded for a batch, for the other polls answered with the same batch.
    pub(crate) shared_answer: Mutex<SharedAnswers>,
    /// The last stream frame encoded for a batch, per format key (a handful of keys at most:
    /// one per framing in use).
    pub(crate) shared_frame: Mutex<Vec<(Batch, u64, bytes::Bytes)>>,
    /// An empty request head, shared by the waiting requests that need theirs no more.
    pub(crate) no_head: Arc<Parts>,
}

/// What a layer remembers to share answers: the batch the last poll was answered with, and the
/// answer encoded for a batch that more than one poll got.
#[derive(Debug, Default)]
pub(crate) struct SharedAnswers {
    /// The last batch answered, kept only to notice the second poll answered with it; its
    /// answer is not kept, so that polls at cursors of their own pay for nothing more.
    last: Option<Batch>,
    answer: Option<SharedAnswer>,
}

/// An answer encoded once for a batch: what each poll answered with that batch gets a copy of.
#[derive(Debug)]
pub(crate) struct SharedAnswer {
    batch: Batch,
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl SharedAnswer {
    fn response(&self) -> Response<PushBody> {
        let mut response = Response::new(PushBody::full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl Pipeline {
    /// How many admitted requests hold a place now.
    pub(crate) fn held(&self) -> usize {
        self.limits.current()
    }

    /// Admits the request with head `parts` to follow `source`, or says why it is refused.
    pub(crate) fn admit<S>(
        self: &Arc<Self>,
        parts: Parts,
        source: &S,
    ) -> Result<Follow<S>, Rejection>
    where
        S: Service<Subscribe> + Clone,
    {
        let admitted = self.try_admit(parts, source);
        if let Err(rejection) = &admitted {
            telemetry::rejected(self.kind, rejection);
        }
        admitted
    }

    fn try_admit<S>(self: &Arc<Self>, parts: Parts, source: &S) -> Result<Follow<S>, Rejection>
    where
        S: Service<Subscribe> + Clone,
    {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(Rejection::MethodNotAllowed);
        }
        let size = head_size(&parts);
        if size > self.max_head_bytes {
            let max = self.max_head_bytes;
            return Err(Rejection::HeadTooLarge { size, max });
        }
        if self.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
            let retry_after = crate::random::retry_after();
            return Err(Rejection::ShuttingDown { retry_after });
        }
        let position = match parts.extensions.get::<StartAt>() {
            Some(start) => start.position(),
            None => self
                .param
                .position(&parts, self.origin)
                .map_err(Rejection::MalformedCursor)?,
        };
        let Ok(slot) = self.limits.acquire(&parts) else {
            let retry_after = crate::random::retry_after();
            return Err(Rejection::Overloaded { retry_after });
        };
        let cursor = match position {
            Position::After(cursor) => Some(cursor),
            Position::Head | Position::Oldest => None,
        };
        Ok(Follow {
            telemetry: Telemetry::admitted(self.kind, cursor),
            pipeline: self.clone(),
            // The clone that was made ready is the one to call (tower's usual swap): here the
            // source is made ready in the follower, so either copy will do.
            source: source.clone(),
            subscribe: Subscribe::new(position, self.max_events, Arc::new(parts)),
            call: None,
            shutdown: self.shutdown.as_ref().map(Shutdown::wait),
            slot: Some(slot),
            detached: false,
        })
    }
}

/// One step of following a source.
#[derive(Debug)]
pub(crate) enum Step {
    /// Events after the position; the follower now stands after the last of them.
    Events(Batch),
    /// The request named no cursor, and the source said where the head is; the follower now
    /// stands there.
    Head(Cursor),
    /// The source's log has ended at this cursor, where the follower stands: nothing more will
    /// come.
    Closed(Cursor),
}

pin_project! {
    /// An admitted request following its source: asks for what comes after its position, one
    /// call at a time, and moves the position on with every answer.
    pub(crate) struct Follow<S>
    where
        S: Service<Subscribe>,
    {
        source: S,
        subscribe: Subscribe,
        // The source's future; `None` between calls and while the source is not ready.
        #[pin]
        call: Option<S::Future>,
        #[pin]
        shutdown: Option<shutdown::Wait>,
        // The place under the layer's caps, given back by `release` or on drop.
        slot: Option<Slot>,
        // Whether the request head has storage of its own yet.
        detached: bool,
        // The most bytes of event data one step hands over.
        // The layer's settings: the byte bound of a step, the reconnect window.
        pipeline: Arc<Pipeline>,
        // Metrics and the request's span; nothing without the `metrics` feature.
        telemetry: Telemetry,
    }
}

impl<S> Follow<S>
where
    S: Service<Subscribe>,
{
    /// What the request records.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Where the request stands, once it or its source has named a cursor.
    pub(crate) fn cursor(&self) -> Option<Cursor> {
        match self.subscribe.position() {
            Position::After(cursor) => Some(cursor),
            Position::Head | Position::Oldest => None,
        }
    }
}

impl<S> Follow<S>
where
    S: Service<Subscribe, Response = Outcome>,
    S::Error: Into<BoxError>,
{
    /// The request's head.
    pub(crate) fn parts(&self) -> &Parts {
        self.subscribe.parts()
    }

    /// Gives the request head storage of its own, once, for a request that is going to wait:
    /// see [`Subscribe::detach_parts`].
    pub(crate) fn detach(self: Pin<&mut Self>) {
        let this = self.project();
        if !std::mem::replace(this.detached, true) {
            this.subscribe.detach_parts();
        }
    }

    /// Lets go of the request head, once, for a request that waits for the answer to a call it
    /// has already made and will make no other (a long poll after a cursor): the source had the
    /// head when it was called, and keeps its own clone if it needs it later. The request then
    /// holds no head at all while it waits. Anything else gets [`detach`](Self::detach).
    pub(crate) fn release_head(self: Pin<&mut Self>) {
        let last_call =
            self.call.is_some() && matches!(self.subscribe.position(), Position::After(_));
        if !last_call {
            return self.detach();
        }
        let this = self.project();
        if !std::mem::replace(this.detached, true) {
            this.subscribe.replace_parts(this.pipeline.no_head.clone());
        }
    }

    /// Drives the source until it answers, and maps its answer: events and the head move the
    /// position on; a cursor it cannot serve and a failure become the [`Rejection`] to answer
    /// with (a failure is logged here, once).
    pub(crate) fn poll_step(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Step, Rejection>> {
        let mut this = self.project();
        if this.call.is_none() {
            match ready!(this.source.poll_ready(cx)) {
                Ok(()) => this
                    .call
                    .set(Some(this.source.call(this.subscribe.clone()))),
                Err(err) => return Poll::Ready(Err(failed(err))),
            }
        }
        let call = this.call.as_mut().as_pin_mut().expect("set above");
        let outcome = ready!(call.poll(cx));
        this.call.set(None);
        Poll::Ready(match outcome.map_err(failed)? {
            Outcome::Events(mut batch) => {
                // Bytes bound what one answer or frame holds until the client reads it; the
                // events left out come with the next step, from the advanced position.
                batch.truncate_to_bytes(this.pipeline.max_bytes);
                this.telemetry.delivered(batch.events());
                this.subscribe.advance(batch.last());
                Ok(Step::Events(batch))
            }
            Outcome::Head(cursor) => {
                this.subscribe.advance(cursor);
                Ok(Step::Head(cursor))
            }
            Outcome::Resync(resync) => Err(Rejection::Resync(resync)),
            Outcome::Ahead { head } => Err(Rejection::CursorAhead { head }),
            Outcome::Closed { head } => {
                this.subscribe.advance(head);
                Ok(Step::Closed(head))
            }
        })
    }

    /// Whether the shutdown signal has been triggered; registers for it otherwise.
    pub(crate) fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let shutdown = self.project().shutdown.as_pin_mut();
        shutdown.is_some_and(|wait| wait.poll(cx).is_ready())
    }

    /// A delay drawn at random from the reconnect window: when the client of a request that a
    /// shutdown ends should come back, so that clients ended together do not return together.
    pub(crate) fn reconnect_delay(&self) -> Duration {
        crate::random::within(self.pipeline.reconnect_window)
    }

    /// The answer for `batch`: a copy of the one already encoded for this very batch, or what
    /// `encode` writes, kept for the next poll answered with it.
    pub(crate) fn shared_answer(
        &self,
        batch: &Batch,
        encode: impl FnOnce() -> Response<PushBody>,
    ) -> Response<PushBody> {
        let mut shared = self
            .pipeline
            .shared_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = shared.answer.as_ref().filter(|a| a.batch.same(batch)) {
            return answer.response();
        }
        let response = encode();
        // The second poll answered with this batch: keep its answer for the others.
        let repeated = shared.last.as_ref().is_some_and(|last| last.same(batch));
        match response.body().shared_bytes() {
            Some(body) if repeated => {
                shared.answer = Some(SharedAnswer {
                    batch: batch.clone(),
                    status: response.status(),
                    headers: response.headers().clone(),
                    body,
                });
            }
            _ => shared.last = Some(batch.clone()),
        }
        response
    }

    /// The frame of `batch` in the format of `key`: the bytes already encoded for this very batch
    /// and key, or what `encode` writes, kept for the next stream that sends it.
    pub(crate) fn shared_frame(
        &self,
        batch: &Batch,
        key: u64,
        encode: impl FnOnce() -> bytes::Bytes,
    ) -> bytes::Bytes {
        let mut shared = self
            .pipeline
            .shared_frame
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = shared
            .iter()
            .position(|(_, shared_key, _)| *shared_key == key);
        if let Some((shared_batch, _, frame)) = slot.map(|i| &shared[i]) {
            if shared_batch.same(batch) {
                return frame.clone();
            }
        }
        let frame = encode();
        let entry = (batch.clone(), key, frame.clone());
        match slot {
            Some(i) => shared[i] = entry,
            // A new key: keep at most a few, so that formats with ever-new keys cannot grow it.
            None if shared.len() < 4 => shared.push(entry),
            None => shared[0] = entry,
        }
        frame
    }

    /// Gives back the place under the caps and drops the source's future and the shutdown
    /// registration at once, for a request that has its last answer, without waiting for the
    /// server to drop it.
    pub(crate) fn release(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.slot.take();
        this.call.set(None);
        this.shutdown.set(None);
    }
}

/// The bytes of a request head as a held request keeps it: the URI and every header.
fn head_size(parts: &Parts) -> usize {
    let uri = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    uri + headers
}

fn failed<E: Into<BoxError>>(err: E) -> Rejection {
    let err: BoxError = err.into();
    tracing::warn!(error = %err, "event source failed");
    Rejection::SourceUnavailable
}

impl<S> fmt::Debug for Follow<S>
where
    S: Service<Subscribe>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("position", &self.subscribe.position())
            .field("calling", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Pipeline {
    /// Checks the defaults both builders document for the settings they share.
    pub(crate) fn assert_shared_defaults(&self) {
        assert_eq!(self.limits.max(), None, "no cap");
        assert_eq!(self.limits.max_per_key(), None, "no cap per key");
        assert_eq!(self.max_events, 256);
        assert_eq!(self.max_bytes, 256 * 1024);
        assert_eq!(self.max_head_bytes, 32 * 1024);
        assert_eq!(self.param, CursorParam::default());
        assert_eq!(self.origin, Origin::Head);
        assert!(self.shutdown.is_none());
        assert_eq!(self.reconnect_window, Duration::from_secs(5));
    }
}
