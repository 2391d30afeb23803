//! The response future of [`LongPoll`](super::LongPoll).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::supersede::Superseded;
use crate::format::PollFormat;
use crate::limit::Slot;
use crate::shutdown::{self, Shutdown};
use crate::source::{Outcome, Position, Subscribe};
use crate::{headers, BoxError, Cursor, PushBody, Rejection};

pin_project! {
    /// The response future of [`LongPoll`](super::LongPoll): holds the request until the event
    /// source has events or the hold timer fires.
    ///
    /// # Cancel safety
    ///
    /// Dropping it (a client that disconnects) drops the source's future, which by the
    /// [source contract](crate::source) loses nothing.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, F>
    where
        S: Service<Subscribe>,
    {
        #[pin]
        state: State<S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F>
    where
        S: Service<Subscribe>,
    {
        Rejected {
            response: Option<Response<PushBody>>,
        },
        Holding {
            source: S,
            subscribe: Subscribe,
            format: F,
            // The source's future; `None` while the source is not ready yet.
            #[pin]
            call: Option<S::Future>,
            // The hold timer, made only once the poll has to wait: most answers need none.
            #[pin]
            sleep: Option<Sleep>,
            deadline: Instant,
            #[pin]
            shutdown: Option<shutdown::Wait>,
            // Boxed: most layers do not track clients, and a parked poll should not pay for it.
            superseded: Option<Pin<Box<Superseded>>>,
            // The place under the layer's caps, given back when the answer is ready.
            slot: Slot,
            // Whether the request head has storage of its own yet.
            detached: bool,
        },
    }
}

impl<S, F> ResponseFuture<S, F>
where
    S: Service<Subscribe>,
{
    pub(crate) fn rejected(response: Response<PushBody>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn hold(hold: Hold<'_, S, F>) -> Self {
        Self {
            state: State::Holding {
                source: hold.source,
                subscribe: hold.subscribe,
                format: hold.format,
                call: None,
                sleep: None,
                deadline: Instant::now() + hold.hold,
                shutdown: hold.shutdown.map(Shutdown::wait),
                superseded: hold.superseded.map(Box::pin),
                slot: hold.slot,
                detached: false,
            },
        }
    }
}

/// What a held poll is made of.
pub(crate) struct Hold<'a, S, F> {
    pub(crate) source: S,
    pub(crate) subscribe: Subscribe,
    pub(crate) hold: Duration,
    pub(crate) shutdown: Option<&'a Shutdown>,
    pub(crate) superseded: Option<Superseded>,
    pub(crate) slot: Slot,
    pub(crate) format: F,
}

impl<S, F> Future for ResponseFuture<S, F>
where
    S: Service<Subscribe, Response = Outcome>,
    S::Error: Into<BoxError>,
    F: PollFormat,
{
    type Output = Result<Response<PushBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let mut response = ready!(state.as_mut().poll_answer(cx));
        // Free the source's future, the timers and the place under the caps at once, not when
        // the server gets around to dropping this future.
        state.set(State::Rejected { response: None });
        headers::long_poll(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

impl<S, F> State<S, F>
where
    S: Service<Subscribe, Response = Outcome>,
    S::Error: Into<BoxError>,
    F: PollFormat,
{
    fn poll_answer(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<PushBody>> {
        let (
            source,
            subscribe,
            format,
            mut call,
            mut sleep,
            deadline,
            shutdown,
            superseded,
            detached,
        ) = match self.project() {
            StateProj::Rejected { response } => {
                return Poll::Ready(response.take().expect("polled after completion"));
            }
            StateProj::Holding {
                source,
                subscribe,
                format,
                call,
                sleep,
                deadline,
                shutdown,
                superseded,
                slot: _,
                detached,
            } => (
                source, subscribe, format, call, sleep, *deadline, shutdown, superseded, detached,
            ),
        };
        let unavailable = |err: S::Error| {
            let err: BoxError = err.into();
            tracing::warn!(error = %err, "event source failed");
            format.rejection(&Rejection::SourceUnavailable)
        };
        loop {
            if call.is_none() {
                match source.poll_ready(cx) {
                    Poll::Ready(Ok(())) => call.set(Some(source.call(subscribe.clone()))),
                    Poll::Ready(Err(err)) => return Poll::Ready(unavailable(err)),
                    Poll::Pending => break,
                }
            }
            let future = call.as_mut().as_pin_mut().expect("set above");
            let outcome = match future.poll(cx) {
                Poll::Ready(Ok(outcome)) => outcome,
                Poll::Ready(Err(err)) => return Poll::Ready(unavailable(err)),
                Poll::Pending => break,
            };
            let rejection = match outcome {
                Outcome::Events(batch) => return Poll::Ready(format.events(&batch)),
                Outcome::Head(cursor) => {
                    // The request named no cursor; now it has one. Wait after it, within the
                    // same hold.
                    *subscribe = subscribe.after(cursor);
                    call.set(None);
                    continue;
                }
                Outcome::Resync(resync) => Rejection::Resync(resync),
                Outcome::Ahead { head } => Rejection::CursorAhead { head },
            };
            return Poll::Ready(format.rejection(&rejection));
        }
        // A shutdown, or a newer poll of the same client, answers like an expired hold, at once.
        let draining = shutdown
            .as_pin_mut()
            .is_some_and(|wait| wait.poll(cx).is_ready());
        let replaced = superseded
            .as_mut()
            .is_some_and(|wait| wait.as_mut().poll(cx).is_ready());
        if sleep.is_none() {
            sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        let expired = sleep
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready());
        if !(draining || replaced || expired) {
            if !std::mem::replace(detached, true) {
                // Parked for real: stop pinning hyper's read buffer for the rest of the hold.
                subscribe.detach_parts();
            }
            return Poll::Pending;
        }
        Poll::Ready(match current(subscribe) {
            Some(cursor) => format.timeout(cursor),
            // The source did not even say where the head is within the whole hold.
            None => format.rejection(&Rejection::SourceUnavailable),
        })
    }
}

/// The cursor a request stands at, once it has one.
fn current(subscribe: &Subscribe) -> Option<Cursor> {
    match subscribe.position() {
        Position::After(cursor) => Some(cursor),
        Position::Head | Position::Oldest => None,
    }
}

impl<S, F> fmt::Debug for ResponseFuture<S, F>
where
    S: Service<Subscribe>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Holding { .. } => "holding",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
