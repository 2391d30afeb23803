//! The request body the server hands to the service: hyper's, with a deadline.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// The body of every request [`Server`](super::Server) serves: hyper's [`Incoming`] body,
/// which must arrive whole within the server's
/// [`body_read_timeout`](super::Server::body_read_timeout) of the request's head.
///
/// A client that sends a few bytes of a large body and then waits would otherwise keep its
/// request, its connection and a file descriptor for as long as it likes. Once the deadline
/// passes, the next poll fails with a [`BodyError`] whose
/// [`is_timeout`](BodyError::is_timeout) is true: answer `408 Request Timeout` (the examples
/// do), and the connection closes once the answer is written, since its body was not read to
/// the end.
///
/// A request with a body also holds one of the server's
/// [`max_body_reads`](super::Server::max_body_reads) places until its body has ended or is
/// dropped; requests without a body (a long poll, a stream) hold none.
#[derive(Debug)]
pub struct Body {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Made at the first `Pending` only: most bodies arrive with their head, and cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// The place under `max_body_reads`, given back when the body ends.
    place: Option<OwnedSemaphorePermit>,
}

impl Body {
    pub(super) fn new(
        inner: Incoming,
        timeout: Duration,
        place: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
            place,
        }
    }

    /// Reads the whole body, at most `max` bytes of it.
    ///
    /// # Errors
    ///
    /// A [`ReadError`] when the body is larger than `max` (known from `Content-Length` before
    /// anything is read), did not arrive within the body-read timeout, or could not be read;
    /// its [`status`](ReadError::status) and [`code`](ReadError::code) make the answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Request, Response};
    /// use tower_push::server::Body;
    ///
    /// async fn publish(req: Request<Body>) -> Response<String> {
    ///     match req.into_body().collect_at_most(64 * 1024).await {
    ///         Ok(bytes) => Response::new(format!("{} bytes", bytes.len())),
    ///         Err(err) => {
    ///             let mut refused = Response::new(format!(r#"{{"error":"{}"}}"#, err.code()));
    ///             *refused.status_mut() = err.status();
    ///             refused
    ///         }
    ///     }
    /// }
    /// # let _ = publish;
    /// ```
    pub async fn collect_at_most(self, max: usize) -> Result<Bytes, ReadError> {
        use http_body::Body as _;
        let too_large = ReadError::TooLarge { max };
        if self.size_hint().lower() > max as u64 {
            return Err(too_large);
        }
        let mut body = std::pin::pin!(self);
        let mut collected = bytes::BytesMut::new();
        let mut first: Option<Bytes> = None;
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(|err| match err.kind {
                Kind::Timeout(after) => ReadError::Timeout(after),
                Kind::Hyper(_) => ReadError::Failed(err),
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let len = first.as_ref().map_or(0, Bytes::len) + collected.len() + data.len();
            if len > max {
                return Err(too_large);
            }
            // One frame is kept as it is, without a copy; more are gathered.
            match first.take() {
                None if collected.is_empty() => first = Some(data),
                None => collected.extend_from_slice(&data),
                Some(earlier) => {
                    collected.extend_from_slice(&earlier);
                    collected.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| collected.freeze()))
    }

    /// Whether the client sent no body (no `Content-Length` above 0, no chunked body, or an
    /// HTTP/2 request that ended with its headers): such a request holds no body-read place.
    pub(super) fn is_empty(inner: &Incoming) -> bool {
        http_body::Body::is_end_stream(inner)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || this.inner.is_end_stream() {
                    this.place = None;
                }
                return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::hyper)));
            }
            Poll::Pending => {}
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.place = None;
                Poll::Ready(Some(Err(BodyError::timeout(this.timeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why [`Body::collect_at_most`] could not read a body whole.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The body is larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The body did not arrive within the body-read timeout.
    Timeout(Duration),
    /// hyper could not read the body: the client closed the connection, or sent a malformed
    /// body.
    Failed(BodyError),
}

impl ReadError {
    /// The status to answer with: `413`, `408` or `400`.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => http::StatusCode::REQUEST_TIMEOUT,
            Self::Failed(_) => http::StatusCode::BAD_REQUEST,
        }
    }

    /// A machine-readable code: `body_too_large`, `body_timeout` or `body_error`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::Timeout(_) => "body_timeout",
            Self::Failed(_) => "body_error",
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { max } => write!(f, "request body is larger than {max} bytes"),
            Self::Timeout(after) => write!(f, "request body not received within {after:?}"),
            Self::Failed(_) => f.write_str("could not read the request body"),
        }
    }
}

impl StdError for ReadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Failed(err) => Some(err),
            Self::TooLarge { .. } | Self::Timeout(_) => None,
        }
    }
}

/// Why reading a request [`Body`] failed: the client took longer than the body-read timeout,
/// or hyper failed to read it (the client closed the connection, or sent a malformed body).
pub struct BodyError {
    kind: Kind,
}

enum Kind {
    Timeout(Duration),
    Hyper(hyper::Error),
}

impl BodyError {
    fn timeout(after: Duration) -> Self {
        Self {
            kind: Kind::Timeout(after),
        }
    }

    fn hyper(err: hyper::Error) -> Self {
        Self {
            kind: Kind::Hyper(err),
        }
    }

    /// Whether the body did not arrive within the body-read timeout: answer `408`.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }
}

impl fmt::Debug for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout(after) => f.debug_tuple("BodyError::Timeout").field(after).finish(),
            Kind::Hyper(err) => f.debug_tuple("BodyError::Hyper").field(err).finish(),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout(after) => write!(f, "request body not received within {after:?}"),
            Kind::Hyper(_) => f.write_str("could not read the request body"),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            Kind::Timeout(_) => None,
            Kind::Hyper(err) => Some(err),
        }
    }
}
