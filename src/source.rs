//! The event-source contract that both layers are built on.
//!
//! An event source is any [`tower_service::Service`] that takes a [`Subscribe`] and answers with an
//! [`Outcome`]:
//!
//! - For [`Position::After`], it resolves when it has **at least one event after the cursor**,
//!   with [`Outcome::Events`]: the events after the cursor, oldest first, at most
//!   [`Subscribe::limit`] of them, without gaps. Until then it stays pending, possibly forever.
//! - For [`Position::Head`] it resolves at once with [`Outcome::Head`] and the cursor of the
//!   newest event (the caller then subscribes after it). For [`Position::Oldest`] it resolves at
//!   once with the oldest retained events, or with [`Outcome::Head`] if there are none.
//! - It resolves at once with [`Outcome::Resync`] when the cursor can no longer be served: the
//!   events after it were dropped by retention, or it belongs to another [`Epoch`](crate::Epoch).
//!   It resolves with [`Outcome::Ahead`] when the cursor is beyond the newest event, which no
//!   well-behaved client can hold.
//! - A source whose log can end (a stream that its writer closed) resolves with
//!   [`Outcome::Closed`] once the cursor is at the end: nothing will ever come after it. A long
//!   poll answers at once, and a stream sends its final message and ends.
//! - A source whose logs can be deleted resolves with [`Outcome::Gone`] once the log the
//!   subscription follows no longer exists (deleted, or replaced by a new log of the same name,
//!   whose events the cursor must not read). The layers answer
//!   [`Rejection::Gone`](crate::Rejection::Gone) through the format: a long poll with its
//!   rejection answer, a stream with its final message.
//! - A source that knows it may mark a batch as [reaching the head](Batch::reaching_head): the
//!   events up to the newest one, so that a format can tell the client it is caught up.
//! - It fails (`Err`) only when it cannot answer at all (a backend is unreachable). The layers
//!   turn that into `503 Service Unavailable`.
//!
//! # Cancel safety
//!
//! The futures of a source **must be cancel-safe**: the long-poll layer races them against its
//! hold timer and drops the loser, and a client that disconnects drops the whole request. Since
//! every piece of state lives in the cursor, dropping a subscription must lose nothing and must
//! leave nothing behind (no registered waiter, no reader kept alive for it).
//!
//! # Examples
//!
//! A source over a fixed slice of events, to show the shape of the contract. The in-memory
//! [`MemoryLog`](crate::MemoryLog) is the real implementation.
//!
//! ```
//! use std::convert::Infallible;
//! use std::future::{pending, ready, Future};
//! use std::pin::Pin;
//! use std::task::{Context, Poll};
//!
//! use tower_push::source::{Batch, Outcome, Position, Resync, ResyncReason, Subscribe};
//! use tower_push::{Cursor, Epoch, Event};
//! use tower_service::Service;
//!
//! type Answer = Pin<Box<dyn Future<Output = Result<Outcome, Infallible>> + Send>>;
//!
//! #[derive(Clone)]
//! struct Fixed(Vec<Event>);
//!
//! impl Service<Subscribe> for Fixed {
//!     type Response = Outcome;
//!     type Error = Infallible;
//!     type Future = Answer;
//!
//!     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
//!         Poll::Ready(Ok(()))
//!     }
//!
//!     fn call(&mut self, req: Subscribe) -> Answer {
//!         let now = |outcome| -> Answer { Box::pin(ready(Ok(outcome))) };
//!         let epoch = Epoch::new(1);
//!         let head = Cursor::new(epoch, self.0.len() as u64);
//!         let after = match req.position() {
//!             Position::Head => return now(Outcome::Head(head)),
//!             Position::Oldest => Cursor::zero(epoch),
//!             Position::After(cursor) => cursor,
//!         };
//!         if after.epoch() != epoch {
//!             let reason = ResyncReason::EpochMismatch;
//!             return now(Outcome::Resync(Resync::new(reason, Cursor::zero(epoch), head)));
//!         }
//!         if after > head {
//!             return now(Outcome::Ahead { head });
//!         }
//!         let events = self.0.iter().filter(|e| e.id() > after).take(req.limit());
//!         match Batch::new(events.cloned().collect()) {
//!             Some(batch) => now(Outcome::Events(batch)),
//!             None if req.position() == Position::Oldest => now(Outcome::Head(head)),
//!             // A real source waits here for the next publish; this one has no more events.
//!             None => Box::pin(pending()),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::ServiceExt;
//!
//! let parts = std::sync::Arc::new(http::Request::new(()).into_parts().0);
//! let outcome = Fixed(vec![]).oneshot(Subscribe::new(Position::Head, 10, parts)).await;
//! assert_eq!(outcome, Ok(Outcome::Head(Cursor::zero(Epoch::new(1)))));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use tower_service::Service;

use crate::{Cursor, Event};

/// An event source: a tower service that answers a [`Subscribe`] with an [`Outcome`], and whose
/// error can be boxed. The layers serve any such service (the in-memory log, the Redis source,
/// a service of your own); every one is an `EventSource`: name it in bounds, there is nothing
/// to implement.
///
/// # Examples
///
/// ```
/// use tower_push::source::EventSource;
/// use tower_push::MemoryLog;
///
/// fn follows<S: EventSource>(_source: &S) {}
/// follows(&MemoryLog::new().topic("news"));
/// ```
pub trait EventSource: Service<Subscribe, Response = Outcome, Error = Self::Failure> {
    /// Its error: the layers log it and answer `503`.
    type Failure: Into<crate::BoxError>;
}

impl<S> EventSource for S
where
    S: Service<Subscribe, Response = Outcome>,
    S::Error: Into<crate::BoxError>,
{
    type Failure = S::Error;
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// After this cursor: the client has seen everything up to it.
    After(Cursor),
    /// At the newest event: only events published from now on. The source answers at once with
    /// [`Outcome::Head`].
    Head,
    /// At the oldest retained event: everything the source still has.
    Oldest,
}

/// A subscription request: what the layers ask an event source for.
///
/// It carries the request's head ([`http::request::Parts`]) so a source can route by path, read
/// headers, or read extensions that earlier layers set (an authenticated user, a topic): read it
/// in `call`, and keep a clone of what you need later. A request that has to wait may get an
/// equal copy of its head with storage of its own, so that a parked request does not keep the
/// connection's read buffer alive; a long poll that waits for the answer to a call it has made
/// lets go of its own reference to the head (the source's clone, if it keeps one, stays valid).
#[derive(Clone, Debug)]
pub struct Subscribe {
    position: Position,
    limit: usize,
    parts: Arc<http::request::Parts>,
    topic: Option<Arc<str>>,
}

impl Subscribe {
    /// A subscription from `position` for at most `limit` events per answer (at least one).
    pub fn new(position: Position, limit: usize, parts: Arc<http::request::Parts>) -> Self {
        Self {
            position,
            limit: limit.max(1),
            parts,
            topic: None,
        }
    }

    /// The same subscription for the topic `topic`: what a layer asks for each topic of a
    /// multiplexed request.
    #[must_use]
    pub fn for_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The topic this subscription follows, for a multiplexed request (see
    /// [Several topics](crate#several-topics)); `None` for a request that follows one topic,
    /// which a source routes as it likes (by path, by an extension an earlier layer set).
    ///
    /// A source that serves topics by name answers for this one; a source that serves one
    /// topic must answer [`Outcome::UnknownTopic`] for any other name, never its own events:
    /// the built-in [`Topic`](crate::memory::Topic) and `RedisTopic` do.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// Where the subscription starts.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The most events one answer may carry; at least 1.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The head of the HTTP request this subscription serves.
    pub fn parts(&self) -> &http::request::Parts {
        &self.parts
    }

    /// Gives the request head storage of its own.
    ///
    /// hyper parses the URI and header values as slices of the connection's read buffer, so a
    /// head kept for a whole hold or stream would keep that buffer (8 KiB or more) alive and
    /// make hyper allocate another. A copy costs a few small allocations, once per parked
    /// request; a head that is already unshared is left alone.
    pub(crate) fn detach_parts(&mut self) {
        let Some(parts) = Arc::get_mut(&mut self.parts) else {
            // Someone else (a source that keeps the head) holds it too: copying would not free
            // the buffer.
            return;
        };
        let uri = match http::Uri::from_maybe_shared(bytes::Bytes::from(parts.uri.to_string())) {
            Ok(uri) => uri,
            Err(_) => return,
        };
        let mut headers = http::HeaderMap::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let Ok(name) = http::HeaderName::from_bytes(name.as_str().as_bytes()) else {
                return;
            };
            let Ok(mut copy) = http::HeaderValue::from_bytes(value.as_bytes()) else {
                return;
            };
            copy.set_sensitive(value.is_sensitive());
            headers.append(name, copy);
        }
        parts.uri = uri;
        parts.headers = headers;
    }

    /// The request head, to share with other subscriptions of the same request.
    pub(crate) fn shared_parts(&self) -> Arc<http::request::Parts> {
        self.parts.clone()
    }

    /// Replaces the request head, for a request that needs its own no more.
    pub(crate) fn replace_parts(&mut self, parts: Arc<http::request::Parts>) {
        self.parts = parts;
    }

    /// Moves the subscription after `cursor`, in place.
    pub(crate) fn advance(&mut self, cursor: Cursor) {
        self.position = Position::After(cursor);
    }

    /// The same subscription, after `cursor`.
    #[must_use]
    pub fn after(&self, cursor: Cursor) -> Self {
        Self {
            position: Position::After(cursor),
            ..self.clone()
        }
    }
}

/// Where a request that names no cursor starts: a setting of both layers (their builders'
/// `origin`), turned into the [`Position`] of its subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// At the newest event: the client gets only events published from now on.
    #[default]
    Head,
    /// At the oldest retained event: the client gets everything the source still has.
    Oldest,
}

impl From<Origin> for Position {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Head => Position::Head,
            Origin::Oldest => Position::Oldest,
        }
    }
}

/// What an event source answers to a [`Subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Events after the requested position, oldest first.
    Events(Batch),
    /// The subscription named no cursor ([`Position::Head`], or [`Position::Oldest`] on an empty
    /// log): this is the cursor of the newest event, to continue after.
    Head(Cursor),
    /// The cursor can no longer be served; the client must resync.
    Resync(Resync),
    /// The cursor is beyond the newest event of its epoch.
    Ahead {
        /// The cursor of the newest event.
        head: Cursor,
    },
    /// The source serves no topic of the name the subscription gives in
    /// [`Subscribe::topic`] (or, for a source that serves topics by name, the subscription
    /// names none). The layers answer `400 unknown_topic`.
    UnknownTopic,
    /// The log has ended and the cursor is at its end: no event will ever follow `head`.
    Closed {
        /// The cursor of the last event, where the log ended.
        head: Cursor,
    },
    /// The log the subscription follows no longer exists: it was deleted, or replaced by a new
    /// log of the same name, whose events the cursor must not read. The layers answer
    /// [`Rejection::Gone`](crate::Rejection::Gone).
    Gone,
}

/// A non-empty run of consecutive-in-order events of one epoch, oldest first; in the answer to a
/// multiplexed request, the events of several topics, each tagged with its topic and in order
/// within it.
///
/// # Examples
///
/// ```
/// use tower_push::source::Batch;
/// use tower_push::{Cursor, Epoch, Event, EventData};
///
/// let event = |seq| Event::new(Cursor::new(Epoch::new(1), seq), EventData::from_json("1").unwrap());
/// let batch = Batch::new(vec![event(3), event(4)]).unwrap();
/// assert_eq!(batch.last(), Cursor::new(Epoch::new(1), 4));
///
/// assert!(Batch::new(vec![]).is_none());
/// assert!(Batch::new(vec![event(4), event(3)]).is_none());
///
/// let last = Batch::new(vec![event(5)]).unwrap().reaching_head(true);
/// assert!(last.reaches_head() && last.closes());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    // Shared: a source may hand the same batch to every subscription waiting at one position,
    // and the layers then encode it once for all of them (see `Batch::same`).
    events: Arc<Vec<Event>>,
    // Whether the last event is the newest the source had, and whether the log has ended there.
    reaches_head: bool,
    closes: bool,
}

impl Batch {
    /// A batch of `events`, or `None` if they are empty, not in strictly ascending order of id, or
    /// not all of one epoch.
    pub fn new(events: Vec<Event>) -> Option<Self> {
        let first = events.first()?;
        let epoch = first.id().epoch();
        let ordered = events
            .windows(2)
            .all(|pair| pair[0].id() < pair[1].id() && pair[1].id().epoch() == epoch);
        ordered.then(|| Self {
            events: Arc::new(events),
            reaches_head: false,
            closes: false,
        })
    }

    /// The same batch, marked as reaching the newest event the source has when it answered,
    /// and, if `closed`, the end of a log that will never have another event. A format can then
    /// tell its client that it is caught up (or that the log is over) with the same answer.
    ///
    /// Unmarked batches say nothing either way. A layer that sends only part of a batch (to
    /// bound the bytes of one answer) drops the marks.
    #[must_use]
    pub fn reaching_head(mut self, closed: bool) -> Self {
        self.reaches_head = true;
        self.closes = closed;
        self
    }

    /// Whether the source marked the batch as reaching its newest event.
    pub fn reaches_head(&self) -> bool {
        self.reaches_head
    }

    /// Whether the source marked the batch as reaching the end of a closed log.
    pub fn closes(&self) -> bool {
        self.closes
    }

    /// The events, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The id of the newest event: the cursor to continue after.
    ///
    /// In the answer to a multiplexed request, the id of the last event in the batch, in its
    /// own topic: continue after [`composite_cursor`](Self::composite_cursor) instead.
    pub fn last(&self) -> Cursor {
        self.last_event().id()
    }

    /// What the client sends back to continue after this batch: the cursor of its last event,
    /// or in the answer to a multiplexed request the composite cursor after it (see
    /// [`Event::composite_cursor`]).
    pub fn composite_cursor(&self) -> crate::CompositeCursor {
        self.last_event().composite_cursor()
    }

    fn last_event(&self) -> &Event {
        // A batch is never empty.
        &self.events[self.events.len() - 1]
    }

    /// The answer to a multiplexed request: events of several topics, each in order within its
    /// topic and tagged with it. `events` is not empty.
    pub(crate) fn merged(events: Vec<Event>) -> Self {
        debug_assert!(!events.is_empty());
        Self {
            events: Arc::new(events),
            reaches_head: false,
            closes: false,
        }
    }

    /// Whether this batch answers a multiplexed request, and so belongs to that request alone.
    pub(crate) fn is_merged(&self) -> bool {
        self.events[0].topic().is_some()
    }

    /// Whether `other` is a clone of this very batch (not merely equal): what a source handed to
    /// several subscriptions, whose answers can then share one encoding.
    pub(crate) fn same(&self, other: &Batch) -> bool {
        Arc::ptr_eq(&self.events, &other.events)
    }

    /// Keeps the oldest events whose data adds up to at most `max` bytes, and always the first.
    pub(crate) fn truncate_to_bytes(&mut self, max: usize) {
        let mut total = 0;
        let keep = self.events.iter().position(|event| {
            total += event.size();
            total > max
        });
        if let Some(over) = keep {
            let events = Arc::make_mut(&mut self.events);
            if over.max(1) < events.len() {
                events.truncate(over.max(1));
                // The events left out come later: this part reaches neither head nor end.
                self.reaches_head = false;
                self.closes = false;
            }
        }
    }

    /// The events, oldest first.
    pub fn into_events(self) -> Vec<Event> {
        Arc::try_unwrap(self.events).unwrap_or_else(|shared| shared.as_ref().clone())
    }
}

/// Where a source whose retained events of `head`'s epoch lie after `oldest` and up to `head`
/// reads from for `position`: the cursor to read after, or the outcome to answer at once (the
/// head for [`Position::Head`], a resync for another epoch or a cursor before `oldest`,
/// [`Outcome::Ahead`] beyond `head`). Shared by the sources so that they answer alike.
pub(crate) fn read_after(
    position: Position,
    oldest: Cursor,
    head: Cursor,
) -> Result<Cursor, Outcome> {
    let after = match position {
        Position::Head => return Err(Outcome::Head(head)),
        Position::Oldest => oldest,
        Position::After(cursor) if cursor.epoch() != head.epoch() => {
            let resync = Resync::new(ResyncReason::EpochMismatch, oldest, head);
            return Err(Outcome::Resync(resync));
        }
        Position::After(cursor) => cursor,
    };
    if after > head {
        return Err(Outcome::Ahead { head });
    }
    if after < oldest {
        return Err(Outcome::Resync(Resync::new(
            ResyncReason::Expired,
            oldest,
            head,
        )));
    }
    Ok(after)
}

/// Why a cursor must be given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncReason {
    /// Events after the cursor were dropped by retention: resuming would silently skip them.
    Expired,
    /// The cursor belongs to another incarnation of the log (a restart, a recreated stream).
    EpochMismatch,
}

impl ResyncReason {
    /// The machine-readable code used in error bodies: `cursor_expired` or `epoch_mismatch`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Expired => "cursor_expired",
            Self::EpochMismatch => "epoch_mismatch",
        }
    }
}

impl fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "cursor is older than the retained events",
            Self::EpochMismatch => "cursor belongs to another epoch of the log",
        })
    }
}

/// The answer to a cursor that can no longer be served, with what a client needs to start over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resync {
    reason: ResyncReason,
    oldest: Cursor,
    head: Cursor,
}

impl Resync {
    /// A resync answer. `oldest` is the cursor that reads every retained event (the position just
    /// before the oldest one); `head` is the cursor of the newest event.
    pub fn new(reason: ResyncReason, oldest: Cursor, head: Cursor) -> Self {
        Self {
            reason,
            oldest,
            head,
        }
    }

    /// Why the cursor must be given up.
    pub fn reason(&self) -> ResyncReason {
        self.reason
    }

    /// Send this cursor to read every event the source still retains.
    pub fn oldest(&self) -> Cursor {
        self.oldest
    }

    /// Send this cursor to read only events published from now on.
    pub fn head(&self) -> Cursor {
        self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn detached_parts_keep_everything_and_free_the_read_buffer() {
        // A read buffer as hyper holds it, with the head parsed as slices of it.
        let buffer = Bytes::from(b"/poll?after=1x-token".to_vec());
        let mut request = http::Request::new(());
        *request.uri_mut() = http::Uri::from_maybe_shared(buffer.slice(0..12)).unwrap();
        let mut secret = http::HeaderValue::from_maybe_shared(buffer.slice(15..20)).unwrap();
        secret.set_sensitive(true);
        request.headers_mut().insert("x-token", secret);
        request
            .headers_mut()
            .append("x-token", http::HeaderValue::from_static("two"));
        request.extensions_mut().insert(7u8);
        let parts = Arc::new(request.into_parts().0);
        let mut subscribe = Subscribe::new(Position::Head, 10, parts);
        assert!(!buffer.is_unique(), "the head points into the buffer");

        subscribe.detach_parts();
        assert!(
            buffer.is_unique(),
            "nothing points into the buffer any more"
        );
        let parts = subscribe.parts();
        assert_eq!(parts.uri, "/poll?after=");
        let values: Vec<_> = parts.headers.get_all("x-token").iter().collect();
        let texts: Vec<_> = values.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(texts, [&b"token"[..], &b"two"[..]]);
        assert!(values[0].is_sensitive());
        assert_eq!(parts.extensions.get::<u8>(), Some(&7));
    }

    #[test]
    fn shared_parts_are_left_alone() {
        let parts = Arc::new(http::Request::get("/x").body(()).unwrap().into_parts().0);
        let mut subscribe = Subscribe::new(Position::Head, 1, parts.clone());
        subscribe.detach_parts();
        assert!(Arc::ptr_eq(&subscribe.parts, &parts));
    }
}
