//! The response body of both layers.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The body of every response the layers produce.
///
/// Each data frame is one complete encoded message. A long-poll answer is a single frame whose
/// length is known up front; `is_end_stream` and `size_hint` are exact.
///
/// It is `Send + Sync + 'static`, its data is [`Bytes`] and it never fails, so it fits hyper,
/// axum and tonic without adapters.
///
/// # Examples
///
/// ```
/// use http_body::Body;
/// use tower_push::PushBody;
///
/// let body = PushBody::full("{}");
/// assert_eq!(body.size_hint().exact(), Some(2));
/// assert!(!body.is_end_stream());
/// assert!(PushBody::empty().is_end_stream());
/// ```
pub struct PushBody {
    kind: Kind,
}

enum Kind {
    /// One frame, not yet sent; `None` once it has been.
    Full(Option<Bytes>),
}

impl PushBody {
    /// A body without any bytes, for `204 No Content` and the like.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// A body of one frame.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }
}

impl Default for PushBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for PushBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl fmt::Debug for PushBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_struct("PushBody")
                .field("remaining", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn is_send_sync_static() {
        assert_send_sync::<PushBody>();
    }

    #[tokio::test]
    async fn full_body_yields_one_frame_then_ends() {
        let mut body = PushBody::full("abc");
        assert_eq!(body.size_hint().exact(), Some(3));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn empty_bytes_make_an_ended_body() {
        let mut body = PushBody::full(Bytes::new());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
