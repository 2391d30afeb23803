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
use crate::follow::{Follow, Step};
use crate::format::PollFormat;
use crate::source::EventSource;
use crate::source::Subscribe;
use crate::{headers, PushBody, Rejection};

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
            #[pin]
            follow: Follow<S>,
            format: F,
            // The hold timer, made only once the poll has to wait: most answers need none.
            #[pin]
            sleep: Option<Sleep>,
            deadline: Instant,
            // Boxed: most layers do not track clients, and a parked poll should not pay for it.
            superseded: Option<Pin<Box<Superseded>>>,
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

    /// A poll admitted to `follow` its source, held for at most `hold` unless `superseded`.
    pub(crate) fn hold(
        follow: Follow<S>,
        format: F,
        hold: Duration,
        superseded: Option<Superseded>,
    ) -> Self {
        Self {
            state: State::Holding {
                follow,
                format,
                sleep: None,
                deadline: Instant::now() + hold,
                superseded: superseded.map(Box::pin),
            },
        }
    }
}

impl<S, F> Future for ResponseFuture<S, F>
where
    S: EventSource,
    F: PollFormat,
{
    type Output = Result<Response<PushBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let mut response = ready!(state.as_mut().poll_answer(cx));
        if let StateProj::Holding { follow, .. } = state.as_mut().project() {
            response = follow.compress(response);
        }
        // Free the source's future, the timers and the place under the caps at once, not when
        // the server gets around to dropping this future.
        state.set(State::Rejected { response: None });
        headers::long_poll(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

impl<S, F> State<S, F>
where
    S: EventSource,
    F: PollFormat,
{
    fn poll_answer(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<PushBody>> {
        let (mut follow, format, mut sleep, deadline, superseded) = match self.project() {
            StateProj::Rejected { response } => {
                return Poll::Ready(response.take().expect("polled after completion"));
            }
            StateProj::Holding {
                follow,
                format,
                sleep,
                deadline,
                superseded,
            } => (follow, format, sleep, *deadline, superseded),
        };
        let (response, outcome) = loop {
            match follow.as_mut().poll_step(cx) {
                Poll::Ready(Ok(Step::Events(batch))) => {
                    let response = if format.shares_answers() {
                        follow.shared_answer(&batch, || format.events(&batch))
                    } else {
                        format.events(&batch)
                    };
                    break (response, "events");
                }
                // The request named no cursor; now it has one. Wait after it, within the same
                // hold.
                Poll::Ready(Ok(Step::Head(_))) => continue,
                // Nothing will ever come: answer now rather than hold.
                Poll::Ready(Ok(Step::Closed(cursor))) => break (format.closed(&cursor), "closed"),
                Poll::Ready(Err(rejection)) => {
                    break (format.rejection(&rejection), rejection.code());
                }
                Poll::Pending => {
                    // A shutdown, or a newer poll of the same client, answers like an expired
                    // hold, at once.
                    let draining = follow.as_mut().poll_shutdown(cx);
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
                        // Parked for real: hold no request head (or at least not hyper's read
                        // buffer) for the rest of the hold.
                        follow.release_head();
                        return Poll::Pending;
                    }
                    break match follow.composite_cursor() {
                        Some(cursor) if draining => (
                            format.shutdown(&cursor, follow.reconnect_delay()),
                            "shutdown",
                        ),
                        Some(cursor) if replaced => (format.timeout(&cursor), "superseded"),
                        Some(cursor) => (format.timeout(&cursor), "timeout"),
                        // The source did not even say where the head is within the whole hold.
                        None => {
                            let rejection = Rejection::SourceUnavailable;
                            (format.rejection(&rejection), rejection.code())
                        }
                    };
                }
            }
        };
        follow.telemetry().finished(outcome, follow.cursor());
        if let Some(superseded) = superseded {
            superseded.answered();
        }
        Poll::Ready(response)
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
