//! The response future of [`ChunkedStream`](super::ChunkedStream).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::CONTENT_TYPE;
use http::Response;
use tower_service::Service;

use super::stream::EventStream;
use crate::compression;
use crate::format::StreamFormat;
use crate::headers::{self, PUSH_CURSOR};
use crate::source::EventSource;
use crate::source::Subscribe;
use crate::PushBody;

/// The response future of [`ChunkedStream`](super::ChunkedStream).
///
/// It resolves on its first poll: with the stream, or with an error status when the request's
/// cursor is malformed or refused by the source before any byte is streamed.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<S, F>
where
    S: Service<Subscribe>,
{
    state: State<S, F>,
}

enum State<S, F>
where
    S: Service<Subscribe>,
{
    Rejected(Option<Response<PushBody>>),
    Opening(Option<Pin<Box<EventStream<S, F>>>>),
}

impl<S, F> ResponseFuture<S, F>
where
    S: Service<Subscribe>,
{
    pub(crate) fn rejected(response: Response<PushBody>) -> Self {
        Self {
            state: State::Rejected(Some(response)),
        }
    }

    pub(crate) fn opening(stream: Pin<Box<EventStream<S, F>>>) -> Self {
        Self {
            state: State::Opening(Some(stream)),
        }
    }
}

impl<S, F> Future for ResponseFuture<S, F>
where
    S: EventSource + Send + 'static,
    S::Future: Send + 'static,
    F: StreamFormat,
{
    type Output = Result<Response<PushBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match &mut self.get_mut().state {
            State::Rejected(response) => response.take().expect("polled after completion"),
            State::Opening(stream) => {
                let mut stream = stream.take().expect("polled after completion");
                // Kept while the stream moves into the body.
                let compression = stream.compression();
                let response = match stream.as_mut().poll_open(cx) {
                    Err(rejection) => {
                        stream.as_mut().refused(&rejection);
                        stream.format().rejection(&rejection)
                    }
                    Ok(()) => {
                        stream.as_mut().opened();
                        let content_type = stream.format().content_type();
                        let cursor = stream.opened_at();
                        let mut response = Response::new(PushBody::stream(stream));
                        let headers = response.headers_mut();
                        headers.insert(CONTENT_TYPE, content_type);
                        if let Some(cursor) = cursor {
                            headers.insert(PUSH_CURSOR, cursor.to_header_value());
                        }
                        response
                    }
                };
                match compression {
                    Some((choice, settings)) => {
                        compression::answer(response, Some(choice), Some(&settings))
                    }
                    None => response,
                }
            }
        };
        headers::stream(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

impl<S, F> fmt::Debug for ResponseFuture<S, F>
where
    S: Service<Subscribe>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected(_) => "rejected",
            State::Opening(_) => "opening",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
