//! The event source of the live modes: a stream of a store, one event per append.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tower_service::Service;

use super::json_array::json_array;
use super::key::Prefix;
use super::store::{Payload, Store};
use super::Offset;
use crate::source::{Batch, Outcome, Position, Subscribe};
use crate::{Cursor, Epoch, Event, EventData};

/// The streams of a [`Store`] as an event source of the crate's layers: the stream the request's
/// path names, in the incarnation its cursor's epoch names, one event per append with the
/// offset after it as its cursor, batches marked when they reach the tail, and
/// [`Outcome::Closed`] at the tail of a closed stream. A stream deleted or recreated meanwhile
/// answers [`Outcome::Gone`].
pub(crate) struct StreamSource<St: ?Sized> {
    store: Arc<St>,
    prefix: Prefix,
    max_bytes: usize,
}

impl<St: ?Sized> Clone for StreamSource<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

impl<St: ?Sized> fmt::Debug for StreamSource<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSource")
            .field("prefix", &self.prefix)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl<St: ?Sized> StreamSource<St> {
    /// The streams of `store`, named by request paths under `prefix`, read at most `max_bytes`
    /// (but at least one append) per answer.
    pub(crate) fn new(store: Arc<St>, prefix: Prefix, max_bytes: usize) -> Self {
        Self {
            store,
            prefix,
            max_bytes,
        }
    }
}

impl<St: Store + ?Sized> Service<Subscribe> for StreamSource<St> {
    type Response = Outcome;
    type Error = Infallible;
    type Future = ReadFuture<St>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, subscribe: Subscribe) -> ReadFuture<St> {
        ReadFuture {
            store: self.store.clone(),
            // Read now: a waiting long poll lets go of its request head.
            key: self.prefix.key(subscribe.parts().uri.path()).into(),
            position: subscribe.position(),
            limit: subscribe.limit(),
            max_bytes: self.max_bytes,
            doorbell: None,
            notified: None,
        }
    }
}

pin_project! {
    /// The future of [`StreamSource`]: the appends after its position as soon as there are
    /// any, or at once where the stream is (for [`Position::Head`]), that it is closed there,
    /// or that it is gone.
    ///
    /// It waits on the stream's doorbell with [`crate::wake::poll_check`]: registered before
    /// it reads again, so an append in between still wakes it.
    ///
    /// # Cancel safety
    ///
    /// Waiting holds only a registration with the stream's doorbell, which dropping the future
    /// removes; nothing else is lost, since the position is all the state there is.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct ReadFuture<St: ?Sized> {
        store: Arc<St>,
        // The stream's key in the store.
        key: Box<str>,
        position: Position,
        limit: usize,
        max_bytes: usize,
        // The stream's doorbell, from the first poll that reads after a cursor.
        doorbell: Option<Arc<Notify>>,
        #[pin]
        notified: Option<OwnedNotified>,
    }
}

impl<St: Store + ?Sized> Future for ReadFuture<St> {
    type Output = Result<Outcome, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let read = Reader {
            store: &**this.store,
            key: this.key,
            limit: *this.limit,
            max_bytes: *this.max_bytes,
        };
        let (epoch, after) = match *this.position {
            Position::After(cursor) => (cursor.epoch(), Offset::new(cursor.seq())),
            Position::Head => return Poll::Ready(Ok(read.head())),
            Position::Oldest => return Poll::Ready(Ok(read.oldest())),
        };
        let doorbell = match this.doorbell {
            Some(doorbell) => doorbell,
            None => match read.store.changes(read.key) {
                Ok(doorbell) => this.doorbell.insert(doorbell),
                Err(_) => return Poll::Ready(Ok(Outcome::Gone)),
            },
        };
        crate::wake::poll_check(this.notified, doorbell, cx, || read.after(epoch, after)).map(Ok)
    }
}

impl<St: ?Sized> fmt::Debug for ReadFuture<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFuture")
            .field("key", &self.key)
            .field("position", &self.position)
            .field("limit", &self.limit)
            .field("waiting", &self.notified.is_some())
            .finish_non_exhaustive()
    }
}

/// One look at a stream, for a [`ReadFuture`].
struct Reader<'a, St: ?Sized> {
    store: &'a St,
    key: &'a str,
    limit: usize,
    max_bytes: usize,
}

impl<St: Store + ?Sized> Reader<'_, St> {
    /// Where the stream's tail is now.
    fn head(&self) -> Outcome {
        match self.store.info(self.key) {
            Ok(info) => Outcome::Head(Cursor::new(Epoch::new(info.epoch), info.tail.get())),
            Err(_) => Outcome::Gone,
        }
    }

    /// The stream's first appends, or where it stands if it has none.
    fn oldest(&self) -> Outcome {
        let Ok(info) = self.store.info(self.key) else {
            return Outcome::Gone;
        };
        let epoch = Epoch::new(info.epoch);
        self.after(epoch, Offset::ZERO)
            .unwrap_or(Outcome::Head(Cursor::zero(epoch)))
    }

    /// What the stream's incarnation `epoch` has after `after`: its next appends, that it is
    /// closed there, or that it is gone; `None` while there is nothing yet.
    fn after(&self, epoch: Epoch, after: Offset) -> Option<Outcome> {
        let read = match self
            .store
            .read(self.key, Some(after), self.limit, self.max_bytes)
        {
            Ok(read) if Epoch::new(read.info.epoch) == epoch => read,
            _ => return Some(Outcome::Gone),
        };
        let (up_to_date, closed) = (read.up_to_date(), read.info.closed);
        let events: Vec<Event> = read
            .chunks
            .into_iter()
            .map(|chunk| event(epoch, chunk.offset, chunk.payload))
            .collect();
        if let Some(batch) = Batch::new(events) {
            let batch = match up_to_date {
                true => batch.reaching_head(closed),
                false => batch,
            };
            return Some(Outcome::Events(batch));
        }
        closed.then(|| Outcome::Closed {
            head: Cursor::new(epoch, after.get()),
        })
    }
}

/// The event of one append: its payload (a JSON append as the array of its values), with the
/// offset after it as its cursor.
fn event(epoch: Epoch, offset: Offset, payload: Payload) -> Event {
    let data = match payload {
        Payload::Bytes(bytes) => EventData::from_bytes(bytes),
        Payload::Json(values) => {
            let array = json_array(values.iter().map(|value| &value[..]));
            // The values were checked when they were appended.
            EventData::from_json(array.clone()).unwrap_or_else(|_| EventData::from_bytes(array))
        }
    };
    Event::new(Cursor::new(epoch, offset.get()), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{Append, Create, MemoryStore};

    fn subscribe(position: Position) -> Subscribe {
        let parts = http::Request::get("/v1/s").body(()).unwrap().into_parts().0;
        Subscribe::new(position, 10, Arc::new(parts))
    }

    #[test]
    fn the_future_is_send() {
        fn send<T: Send + 'static>() {}
        send::<ReadFuture<MemoryStore>>();
    }

    #[tokio::test]
    async fn reads_wait_for_appends_and_learn_of_closes_and_deletes() {
        let store = Arc::new(MemoryStore::new());
        store
            .create("/s", Create::new(Some("text/plain".into())))
            .unwrap();
        let mut source = StreamSource::new(store.clone(), Prefix::new("/v1"), 1 << 20);
        let Outcome::Head(tail) = source.call(subscribe(Position::Head)).await.unwrap() else {
            panic!("a head");
        };
        assert_eq!(tail.seq(), 0);
        let oldest = source.call(subscribe(Position::Oldest)).await.unwrap();
        assert_eq!(oldest, Outcome::Head(tail), "nothing to read yet");

        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut waiting = Box::pin(source.call(subscribe(Position::After(tail))));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(format!("{waiting:?}").contains("waiting: true"));
        // Dropped while it waits: nothing is left behind, and the next one still wakes.
        drop(waiting);
        let mut waiting = Box::pin(source.call(subscribe(Position::After(tail))));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        store.append("/s", Append::new("text/plain", "a")).unwrap();
        let Poll::Ready(Ok(Outcome::Events(batch))) = waiting.as_mut().poll(&mut cx) else {
            panic!("the append");
        };
        assert_eq!(batch.events()[0].data().as_bytes(), b"a");
        assert!(batch.reaches_head() && !batch.closes());

        let close = Append {
            close: true,
            ..Append::default()
        };
        store.append("/s", close).unwrap();
        let at_end = source.call(subscribe(Position::After(batch.last())));
        assert_eq!(
            at_end.await.unwrap(),
            Outcome::Closed { head: batch.last() }
        );

        // Deleted, then created again: a cursor of the first stream reads nothing of the second.
        store.delete("/s").unwrap();
        let gone = source.call(subscribe(Position::After(batch.last())));
        assert_eq!(gone.await.unwrap(), Outcome::Gone);
        store
            .create("/s", Create::new(Some("text/plain".into())))
            .unwrap();
        store.append("/s", Append::new("text/plain", "b")).unwrap();
        let other = source.call(subscribe(Position::After(tail)));
        assert_eq!(other.await.unwrap(), Outcome::Gone);
    }

    #[tokio::test]
    async fn a_waiting_read_learns_that_its_stream_was_deleted() {
        let store = Arc::new(MemoryStore::new());
        store.create("/s", Create::new(None)).unwrap();
        let mut source = StreamSource::new(store.clone(), Prefix::default(), 1 << 20);
        let parts = http::Request::get("/s").body(()).unwrap().into_parts().0;
        let Outcome::Head(tail) = source
            .call(Subscribe::new(Position::Head, 1, Arc::new(parts.clone())))
            .await
            .unwrap()
        else {
            panic!("a head");
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let after = Subscribe::new(Position::After(tail), 1, Arc::new(parts));
        let mut waiting = Box::pin(source.call(after));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        store.delete("/s").unwrap();
        assert_eq!(
            waiting.as_mut().poll(&mut cx),
            Poll::Ready(Ok(Outcome::Gone))
        );
    }
}
