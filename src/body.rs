//! The response body of both layers.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sync_wrapper::SyncWrapper;

use crate::compression::Encoder;

/// The body of every response the layers produce.
///
/// Each data frame is one or more complete encoded messages: a long-poll answer is a single
/// frame whose length is known up front; a stream yields each message as soon as it exists
/// (events that were ready together may share a frame) and returns `Pending` when nothing is
/// ready, which is when hyper writes what it has to the socket. Its `size_hint` is unknown,
/// and `is_end_stream` turns true with the final frame.
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
    /// A stream of frames. `SyncWrapper` makes the body `Sync` without requiring it of the
    /// event source: the frames are only ever reached through `&mut`.
    Stream(SyncWrapper<Pin<Box<dyn Frames>>>),
}

/// A source of frames for a streaming body.
pub(crate) trait Frames: Send + 'static {
    /// The next frame, and whether it is the last one; `None` when the stream has ended.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(Bytes, bool)>>;
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

impl PushBody {
    /// The bytes of a body of one frame that has not been sent, to share them with another
    /// answer; `None` for a stream.
    pub(crate) fn shared_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(bytes) => Some(bytes.clone().unwrap_or_default()),
            Kind::Stream(_) => None,
        }
    }

    pub(crate) fn stream(frames: Pin<Box<dyn Frames>>) -> Self {
        Self {
            kind: Kind::Stream(SyncWrapper::new(frames)),
        }
    }

    /// This body written by the encoder `encoder` makes: a stream frame by frame, each frame
    /// flushed so that the client decodes it whole as soon as it arrives; a body of one frame
    /// whole, when it has at least `min_size` bytes. `Err` gives the body back unchanged when
    /// it stays as it is (too small, or empty), without making an encoder.
    pub(crate) fn encode(
        self,
        encoder: impl FnOnce() -> Encoder,
        min_size: usize,
    ) -> Result<Self, Self> {
        match self.kind {
            Kind::Full(Some(bytes)) if bytes.len() >= min_size => {
                Ok(Self::full(encoder().encode(&bytes, true)))
            }
            Kind::Full(_) => Err(self),
            Kind::Stream(frames) => Ok(Self::stream(Box::pin(Encoded {
                frames: frames.into_inner(),
                encoder: encoder(),
                ended: false,
            }))),
        }
    }
}

/// A stream's frames, each written by a compressor and flushed.
struct Encoded {
    frames: Pin<Box<dyn Frames>>,
    encoder: Encoder,
    ended: bool,
}

impl Frames for Encoded {
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(Bytes, bool)>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let (bytes, last) = match ready!(this.frames.as_mut().poll_frame(cx)) {
            Some(frame) => frame,
            None => (Bytes::new(), true),
        };
        if bytes.is_empty() && !last {
            return Poll::Ready(Some((bytes, false)));
        }
        this.ended = last;
        // The final frame also ends the coded stream (a trailer, a checksum), even when the
        // stream had nothing more to say.
        Poll::Ready(Some((this.encoder.encode(&bytes, last), last)))
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
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let kind = &mut self.get_mut().kind;
        loop {
            let (bytes, last) = match kind {
                Kind::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
                Kind::Stream(frames) => match ready!(frames.get_mut().as_mut().poll_frame(cx)) {
                    Some(frame) => frame,
                    None => (Bytes::new(), true),
                },
            };
            if last {
                *kind = Kind::Full(None);
            }
            // hyper drops empty data frames on HTTP/1 anyway; never hand one out.
            if !bytes.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if last {
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
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
            Kind::Stream(_) => f.debug_struct("PushBody").field("stream", &true).finish(),
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
