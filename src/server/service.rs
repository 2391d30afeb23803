//! The hyper service of one connection: the user's tower service, its requests' bodies under
//! the body-read deadline and cap.

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::body::Body;
use crate::{random, BoxError, PushBody, Rejection};

/// What every connection's service shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) body_read: Duration,
    pub(super) body_reads: Arc<Semaphore>,
}

/// The service hyper calls for each request of one connection.
pub(super) struct Connection<S> {
    /// The connection's own clone of the server's service, called in place. hyper calls with
    /// `&self`, and one request at a time from the connection's task; cloning the service for
    /// each request instead (as hyper-util's `TowerToHyperService` does) costs an atomic
    /// increment and decrement per `Arc` the service holds, on counters every connection on
    /// every thread shares.
    pub(super) inner: RefCell<S>,
    pub(super) shared: Arc<Shared>,
    /// The connection's place under `max_connections`.
    pub(super) _place: OwnedSemaphorePermit,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Connection<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<Answer<B>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, Request<Body>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (parts, incoming) = req.into_parts();
        let place = if Body::is_empty(&incoming) {
            None
        } else {
            match self.shared.body_reads.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    return ResponseFuture {
                        state: State::Refused,
                    }
                }
            }
        };
        let req = Request::from_parts(parts, Body::new(incoming, self.shared.body_read, place));
        let mut service = self.inner.borrow_mut();
        // hyper keeps this future inline in the connection for as long as the request lasts
        // (minutes, for a held poll), so it is sized for the service's own future alone. Most
        // services are always ready (the layers, an axum `Router`): they are called here, in
        // place. One that is not waits in a box with the very instance that said so (a
        // `ConcurrencyLimit` waiting for a permit keeps its place in the queue), and is asked
        // again with the real waker when polled; the connection goes on with a fresh clone.
        let mut noop = Context::from_waker(std::task::Waker::noop());
        let state = match service.poll_ready(&mut noop) {
            Poll::Ready(Ok(())) => State::Called {
                future: service.call(req),
            },
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                let fresh = service.clone();
                let waiting = std::mem::replace(&mut *service, fresh);
                State::NotReady {
                    waiting: Some(Box::new((waiting, req))),
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The answer to one request: the service's, or the server's own refusal.
    #[must_use = "futures do nothing unless polled"]
    pub(super) struct ResponseFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<R>, R> {
        NotReady { waiting: Option<Box<(S, R)>> },
        Called { #[pin] future: S::Future },
        // `503 overloaded`, made when polled (the future stays as small as the service's).
        Refused,
    }
}

impl<S, B> Future for ResponseFuture<S, Request<Body>>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
{
    type Output = Result<Response<Answer<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::NotReady { waiting } => {
                    let (service, _) = &mut **waiting.as_mut().expect("polled after completion");
                    match ready!(service.poll_ready(cx)) {
                        Ok(()) => {}
                        Err(never) => match never {},
                    }
                    let (mut service, req) = *waiting.take().expect("polled after completion");
                    let future = service.call(req);
                    state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    return Poll::Ready(Ok(response.map(|body| Answer::Service { body })));
                }
                StateProj::Refused => {
                    let retry_after = random::retry_after();
                    let refused = Rejection::Overloaded { retry_after }.to_json_response();
                    return Poll::Ready(Ok(refused.map(|body| Answer::Refused { body })));
                }
            }
        }
    }
}

impl<S: Service<R>, R> fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// The body of an answer: the service's, or the server's refusal.
    #[project = AnswerProj]
    pub(super) enum Answer<B> {
        Service { #[pin] body: B },
        Refused { #[pin] body: PushBody },
    }
}

impl<B> http_body::Body for Answer<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            AnswerProj::Service { body } => body.poll_frame(cx).map_err(Into::into),
            AnswerProj::Refused { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Service { body } => body.is_end_stream(),
            Self::Refused { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Service { body } => body.size_hint(),
            Self::Refused { body } => body.size_hint(),
        }
    }
}
