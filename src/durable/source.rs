//! The event source of the live modes: a stream of a store, one event per append.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tower_service::Service;

use super::json_array::json_array;
use super::key::Prefix;
use super::store::{Doorbell, Payload, Read, Store, StoreError};
use super::Offset;
use crate::source::{Batch, Outcome, Position, Subscribe};
use crate::{Cursor, Epoch, Event, EventData};

/// The streams of a [`Store`] as an event source of the crate's layers: the stream the request's
/// path names, in the incarnation its cursor's epoch names, one event per append with the
/// offset after it as its cursor, batches marked when they reach the tail, and
/// [`Outcome::Closed`] at the tail of a closed stream. A stream deleted or recreated meanwhile
/// answers [`Outcome::Gone`].
pub(crate) struct StreamSource<St> {
    store: Arc<St>,
    prefix: Prefix,
    max_bytes: usize,
}

impl<St> Clone for StreamSource<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

impl<St> fmt::Debug for StreamSource<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSource")
            .field("prefix", &self.prefix)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl<St> StreamSource<St> {
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

impl<St: Store> Service<Subscribe> for StreamSource<St> {
    type Response = Outcome;
    type Error = Infallible;
    type Future = ReadFuture<St>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, subscribe: Subscribe) -> ReadFuture<St> {
        ReadFuture {
            look: Look {
                store: self.store.clone(),
                // Read now: a waiting long poll lets go of its request head.
                key: self.prefix.key(subscribe.parts().uri.path()).into(),
                position: subscribe.position(),
                limit: subscribe.limit(),
                max_bytes: self.max_bytes,
            },
            looking: None,
            doorbell: None,
            notified: None,
        }
    }
}

/// One look at the stream in flight: what it found, or `None` while there is nothing yet.
type Looking = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;

pin_project! {
    /// The future of [`StreamSource`]: the appends after its position as soon as there are
    /// any, or at once where the stream is (for [`Position::Head`]), that it is closed there,
    /// or that it is gone.
    ///
    /// It waits on the stream's doorbell the way [`crate::wake::poll_check`] does, with a
    /// look at the store that may itself wait (for a sync, a round trip): the first look is
    /// made unregistered, since most find something at once; one that finds nothing is made
    /// again after the doorbell registration is enabled, so that a change in between still
    /// wakes it. A look in flight is boxed, and only while it is in flight: a parked read
    /// holds its registration and nothing of the store's.
    ///
    /// # Cancel safety
    ///
    /// Waiting holds only a registration with the stream's doorbell (or a look in flight, which
    /// only reads), which dropping the future removes; nothing else is lost, since the position
    /// is all the state there is.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct ReadFuture<St> {
        look: Look<St>,
        looking: Option<Looking>,
        // The stream's doorbell, from the first look that found nothing.
        doorbell: Option<Doorbell>,
        #[pin]
        notified: Option<OwnedNotified>,
    }
}

impl<St: Store> Future for ReadFuture<St> {
    type Output = Result<Outcome, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(looking) = this.looking {
                let found = ready!(looking.as_mut().poll(cx));
                *this.looking = None;
                if let Some(outcome) = found {
                    this.notified.set(None);
                    return Poll::Ready(Ok(outcome));
                }
                if this.notified.is_none() {
                    // Nothing yet: register, then look again before waiting.
                    let doorbell = match this.doorbell {
                        Some(doorbell) => doorbell,
                        None => match this.look.store.changes(&this.look.key) {
                            Ok(doorbell) => this.doorbell.insert(doorbell),
                            Err(_) => return Poll::Ready(Ok(Outcome::Gone)),
                        },
                    };
                    this.notified
                        .set(Some(doorbell.notify().clone().notified_owned()));
                    let registered = this.notified.as_mut().as_pin_mut().expect("set above");
                    registered.enable();
                    *this.looking = Some(this.look.start());
                    continue;
                }
            }
            if let Some(registered) = this.notified.as_mut().as_pin_mut() {
                ready!(registered.poll(cx));
                // Rung: look again, unregistered first.
                this.notified.set(None);
            }
            *this.looking = Some(this.look.start());
        }
    }
}

impl<St> fmt::Debug for ReadFuture<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFuture")
            .field("key", &self.look.key)
            .field("position", &self.look.position)
            .field("limit", &self.look.limit)
            .field("waiting", &self.notified.is_some())
            .finish_non_exhaustive()
    }
}

/// What a [`ReadFuture`] looks for in the store.
struct Look<St> {
    store: Arc<St>,
    // The stream's key in the store.
    key: Arc<str>,
    position: Position,
    limit: usize,
    max_bytes: usize,
}

impl<St: Store> Look<St> {
    /// One look at the stream.
    fn start(&self) -> Looking {
        let (store, key) = (self.store.clone(), self.key.clone());
        let (limit, max_bytes) = (self.limit, self.max_bytes);
        match self.position {
            Position::After(cursor) => {
                let read = store.read(&key, Some(Offset::new(cursor.seq())), limit, max_bytes);
                Box::pin(async move { after(cursor.epoch(), read.await) })
            }
            // Where the stream's tail is now.
            Position::Head => {
                let info = store.info(&key);
                Box::pin(async move {
                    Some(match info.await {
                        Ok(info) => {
                            Outcome::Head(Cursor::new(Epoch::new(info.epoch), info.tail.get()))
                        }
                        Err(StoreError::Unavailable) => return None,
                        Err(_) => Outcome::Gone,
                    })
                })
            }
            // The stream's first appends, or where it stands if it has none.
            Position::Oldest => Box::pin(async move {
                let info = match store.info(&key).await {
                    Ok(info) => info,
                    Err(StoreError::Unavailable) => return None,
                    Err(_) => return Some(Outcome::Gone),
                };
                let epoch = Epoch::new(info.epoch);
                let read = store.read(&key, Some(Offset::ZERO), limit, max_bytes).await;
                Some(after(epoch, read).unwrap_or(Outcome::Head(Cursor::zero(epoch))))
            }),
        }
    }
}

/// What the stream's incarnation `epoch` has after a read of it: its next appends, that it is
/// closed there, or that it is gone; `None` while there is nothing yet.
fn after(epoch: Epoch, read: Result<Read, StoreError>) -> Option<Outcome> {
    let read = match read {
        Ok(read) if Epoch::new(read.info.epoch) == epoch => read,
        // A store that cannot answer now (Redis away): wait for the next change to look again.
        Err(StoreError::Unavailable) => return None,
        _ => return Some(Outcome::Gone),
    };
    let (from, up_to_date, closed) = (read.from, read.up_to_date(), read.info.closed);
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
        head: Cursor::new(epoch, from.get()),
    })
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
            .await
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
        store
            .append("/s", Append::new("text/plain", "a"))
            .await
            .unwrap();
        let Poll::Ready(Ok(Outcome::Events(batch))) = waiting.as_mut().poll(&mut cx) else {
            panic!("the append");
        };
        assert_eq!(batch.events()[0].data().as_bytes(), b"a");
        assert!(batch.reaches_head() && !batch.closes());

        let close = Append {
            close: true,
            ..Append::default()
        };
        store.append("/s", close).await.unwrap();
        let at_end = source.call(subscribe(Position::After(batch.last())));
        assert_eq!(
            at_end.await.unwrap(),
            Outcome::Closed { head: batch.last() }
        );

        // Deleted, then created again: a cursor of the first stream reads nothing of the second.
        store.delete("/s").await.unwrap();
        let gone = source.call(subscribe(Position::After(batch.last())));
        assert_eq!(gone.await.unwrap(), Outcome::Gone);
        store
            .create("/s", Create::new(Some("text/plain".into())))
            .await
            .unwrap();
        store
            .append("/s", Append::new("text/plain", "b"))
            .await
            .unwrap();
        let other = source.call(subscribe(Position::After(tail)));
        assert_eq!(other.await.unwrap(), Outcome::Gone);
    }

    #[tokio::test]
    async fn a_waiting_read_learns_that_its_stream_was_deleted() {
        let store = Arc::new(MemoryStore::new());
        store.create("/s", Create::new(None)).await.unwrap();
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
        store.delete("/s").await.unwrap();
        assert_eq!(
            waiting.as_mut().poll(&mut cx),
            Poll::Ready(Ok(Outcome::Gone))
        );
    }
}
