//! The event source of the live modes: a stream of a store, one event per append.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::json_array::json_array;
use super::key::Prefix;
use super::store::{Payload, Store};
use super::Offset;
use crate::source::{Batch, Outcome, Position, Subscribe};
use crate::{Cursor, Epoch, Event, EventData};

/// The streams of a [`Store`] as an event source of the crate's layers: the stream the request's
/// path names, in the incarnation its cursor's epoch names, one event per append with the offset after it as
/// its cursor, batches marked when they reach the tail, and [`Outcome::Closed`] at the tail of
/// a closed stream. A stream deleted or recreated meanwhile answers [`Outcome::Gone`].
///
/// # Cancel safety
///
/// Waiting holds only a `Notified` future of the stream's doorbell; dropping it loses nothing.
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
        f.debug_struct("StreamSource").finish_non_exhaustive()
    }
}

impl<St: ?Sized> StreamSource<St> {
    pub(crate) fn new(store: Arc<St>, prefix: Prefix, max_bytes: usize) -> Self {
        Self {
            store,
            prefix,
            max_bytes,
        }
    }
}

pub(crate) type SourceFuture = Pin<Box<dyn Future<Output = Result<Outcome, Infallible>> + Send>>;

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

impl<St: Store + ?Sized> Service<Subscribe> for StreamSource<St> {
    type Response = Outcome;
    type Error = Infallible;
    type Future = SourceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, subscribe: Subscribe) -> SourceFuture {
        let key = self.prefix.key(subscribe.parts().uri.path()).to_owned();
        let (store, max_bytes) = (self.store.clone(), self.max_bytes);
        let (position, limit) = (subscribe.position(), subscribe.limit());
        Box::pin(async move {
            let (epoch, after) = match position {
                Position::After(cursor) => (cursor.epoch(), Offset::new(cursor.seq())),
                Position::Oldest => match store.info(&key) {
                    Ok(info) => (Epoch::new(info.epoch), Offset::ZERO),
                    Err(_) => return Ok(Outcome::Gone),
                },
                Position::Head => {
                    return Ok(match store.info(&key) {
                        Ok(info) => {
                            Outcome::Head(Cursor::new(Epoch::new(info.epoch), info.tail.get()))
                        }
                        Err(_) => Outcome::Gone,
                    })
                }
            };
            loop {
                let Ok(doorbell) = store.changes(&key) else {
                    return Ok(Outcome::Gone);
                };
                // Registered before the read: an append in between rings it.
                let notified = doorbell.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let read = match store.read(&key, Some(after), limit, max_bytes) {
                    Ok(read) if Epoch::new(read.info.epoch) == epoch => read,
                    _ => return Ok(Outcome::Gone),
                };
                let (up_to_date, closed) = (read.up_to_date(), read.info.closed);
                let events: Vec<Event> = read
                    .chunks
                    .into_iter()
                    .map(|chunk| event(epoch, chunk.offset, chunk.payload))
                    .collect();
                if let Some(batch) = Batch::new(events) {
                    let batch = if up_to_date {
                        batch.reaching_head(closed)
                    } else {
                        batch
                    };
                    return Ok(Outcome::Events(batch));
                }
                if closed {
                    return Ok(Outcome::Closed {
                        head: Cursor::new(epoch, after.get()),
                    });
                }
                notified.await;
            }
        })
    }
}
